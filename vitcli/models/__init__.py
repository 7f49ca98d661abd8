"""Models: timm `create_model` with vitcli's arguments (heads, freezing, size checks), local
weight files that must fit, a trained run's model loaded back, and the preset catalog.

May import: vitcli.core.
"""
