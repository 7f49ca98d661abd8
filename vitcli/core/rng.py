"""The global RNGs (torch, `random`, numpy): captured and restored as plain tensors for
checkpoints (loadable with weights_only=True), and seeded for one block of code without
moving the streams around it."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(py[1], dtype=torch.int64),
        "python_gauss": py[2] if py[2] is not None else float("nan"),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    gauss = state["python_gauss"]
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None if gauss != gauss else gauss))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG, `random` and numpy's global RNG for a block, then restore all three.

    timm's PIL augmentations and RandomErasing draw from these global RNGs; seeding them per
    sample or per batch makes augmentation a function of the seed alone, and restoring them
    keeps the training streams (dropout, MixUp) where they were.
    """
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    # the CPU generator only: torch.manual_seed also queues a CUDA seeding with a formatted
    # stack trace while CUDA is uninitialised (every DataLoader worker), ~0.7 ms per call
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])
