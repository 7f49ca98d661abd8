"""Pictures: training curves, confusion matrices, error galleries and captioned image grids,
written atomically as PNGs (matplotlib, Agg backend).

May import: vitcli.core, vitcli.data, vitcli.models.
"""
