"""Python's cyclic garbage collector paused while `vitcli train` imports and builds its run.

Importing torch, timm, torchvision and their imports allocates about a million objects that all
live until the process ends; the collector walks them again and again while they are created
(about a third of the import time on 2 CPU cores). `pause()` holds it off from the command's start;
`resume()` (the run is built) collects once, so nothing created meanwhile is left uncollected,
and turns it back on for the loop. A process that stops before resume() ends anyway.
"""

from __future__ import annotations

import gc

_paused = False  # True while this module holds the collector off


def pause() -> None:
    """Hold the collector off until `resume()` (a no-op when it is already off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Collect once and turn the collector back on, when `pause()` turned it off (else nothing)."""
    global _paused
    if _paused:
        _paused = False
        gc.collect()
        gc.enable()
