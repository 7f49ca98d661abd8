"""Python's cyclic garbage collector paused while `vitcli train` imports and builds its run.

Importing torch, timm, torchvision and their imports allocates about a million objects that all
live until the process ends; the collector walks them again and again while they are created
(about a third of the import time on 2 CPU cores). `pause()` holds it off from the command's start;
`resume()` (the run is built) freezes what exists then (`gc.freeze`: the collector never walks
those objects again, neither in a full collection nor in a forked loader worker, where walking
them would copy their pages) and turns it back on for the loop. It does not collect first: a full
collection of the ~800,000 objects took 0.3 s of the default run's start-up on 2 cores, and
what it would have freed (import-time cycles: ~29,000 objects, ~10 MB) stays to the end, beside
torch's few hundred MB. Only the process's first run freezes: a later one in the same process
(tests, a notebook) collects instead, so the garbage of earlier runs is never frozen in. A process
that stops before resume() ends anyway.
"""

from __future__ import annotations

import gc

_paused = False  # True while this module holds the collector off
_froze = False  # the process's first resume() froze its start-up objects


def pause() -> None:
    """Hold the collector off until `resume()` (a no-op when it is already off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what exists (collect, after the process's first time) and turn the collector back on,
    when `pause()` turned it off (else nothing)."""
    global _paused, _froze
    if _paused:
        _paused = False
        if _froze:
            gc.collect()
        else:
            gc.freeze()
            _froze = True
        gc.enable()
