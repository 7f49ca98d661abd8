"""Pictures: training curves, confusion matrices, error galleries and captioned image grids,
written atomically as PNGs (matplotlib, Agg backend).

May import: vitcli.core, vitcli.data, vitcli.models.
"""

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI backend (set before any pyplot import below)
