"""A Hydra app for the optuna sweeper's tests: a 'training' of `epochs` steps whose curve
rises to a score set by x and y, reporting to its trial each step like vitcli's trainer.

    python tests/optuna_toy_app.py -m hydra.sweep.dir=DIR hydra.sweeper.n_trials=4

`wait_for=PATH` makes trial `wait_trial` block until PATH exists (and fail after 120 s), and
`touch=PATH` makes every other trial create PATH: two trials prove they ran side by side.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

from hydra_plugins.vitcli_optuna_sweeper.trial import current_trial


@dataclass
class ToyConfig:
    defaults: List[Any] = field(default_factory=lambda: [{"override hydra/sweeper": "optuna"}, "_self_"])
    x: float = 0.0
    y: int = 0
    epochs: int = 4
    fail: bool = False
    wait_for: Optional[str] = None
    wait_trial: int = 0
    touch: Optional[str] = None
    hydra: Dict[str, Any] = field(default_factory=lambda: {
        "sweeper": {"direction": "maximize", "n_trials": 4, "plots": False,
                    "params": {"x": "interval(-5, 5)", "y": "choice(0, 1, 3)"}}})


ConfigStore.instance().store(name="toy", node=ToyConfig)


@hydra.main(version_base="1.3", config_name="toy")
def main(cfg: Any) -> float:
    if cfg.fail:
        raise RuntimeError("boom")
    trial = current_trial()
    number = trial.number if trial is not None else -1
    if cfg.touch and number != cfg.wait_trial:
        Path(cfg.touch).touch()
    if cfg.wait_for and number == cfg.wait_trial:
        deadline = time.monotonic() + 120
        while not Path(cfg.wait_for).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"trial {number}: no other trial ran while this one waited")
            time.sleep(0.05)
    score = 100 - (cfg.x - 2) ** 2 - abs(cfg.y)
    epochs = 0
    pruned = False
    for epoch in range(1, cfg.epochs + 1):
        value = score * (1 - math.exp(-epoch))
        epochs = epoch
        if trial is not None:
            trial.report(value, epoch)
            if trial.should_prune():
                trial.prune()
                pruned = True
                break
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy.json").write_text(json.dumps({"trial": number, "pid": os.getpid(), "epochs": epochs,
                                              "pruned": pruned, "value": value}))
    return value


if __name__ == "__main__":
    main()
