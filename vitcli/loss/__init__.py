"""Training criteria, all called as criterion(inputs, outputs, targets) (DeiT's signature):
the label loss, knowledge distillation and the frozen teacher it learns from.

May import: vitcli.core, vitcli.data, vitcli.models.
"""
