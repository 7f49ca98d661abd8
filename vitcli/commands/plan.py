"""`vitcli plan [train overrides] [plan.find_batch=true]`: what a run will cost, measured before launching it.

Writes runs/plans/<stamp>/plan.json (vitcli/tasks/plan.py). `trainer.devices=N` measures N ranks as
`vitcli train trainer.devices=N` would run them: this process relaunches `vitcli plan` through
torch.distributed.run (same overrides, same plan dir) and rank 0 writes; a direct
`torchrun ... -m vitcli plan` runs the ranks itself.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import vitcli.core.config_store  # noqa: F401  (registers the schemas)
from vitcli.core.errors import report_user_errors

log = logging.getLogger("vitcli")
IMPORTED = time.perf_counter()
# when each plan started (its imports and building the run count as the run's setup): this module's
# import for the process's first plan, the call of main() for later ones (in-process callers)
STARTS: list[float] = []


def relaunch_plan(cfg: DictConfig, out_dir: Path, task: list[str], hydra_overrides: list[str]) -> dict[str, Any]:
    """`python -m torch.distributed.run --nproc-per-node N -m vitcli plan ...` in this process; rank 0's plan."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from vitcli.core.io import read_json
    from vitcli.launch import torchrun
    from vitcli.tasks.plan import PLAN_FILE

    devices = int(cfg.trainer.devices)
    torchrun.uses_cuda(cfg.trainer.device, devices)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    os.environ[torchrun.RELAUNCHED] = "1"  # ranks leave their errors to this process (one line)
    for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    args = ["--standalone", f"--nproc-per-node={devices}", "--local-ranks-filter=0", "--module", "vitcli", "plan",
            *torchrun.child_overrides(task, hydra_overrides, out_dir)]
    log.info(f"plan: launching {devices} processes with torchrun; plan dir {out_dir}")
    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as err:
        raise torchrun.ranks_failed(err.failures, devices) from None
    finally:
        os.environ.pop(torchrun.RELAUNCHED, None)
    return read_json(out_dir / PLAN_FILE)


@report_user_errors
def run_plan(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    from vitcli.launch import comm, torchrun
    from vitcli.tasks.plan import plan_run

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    task = list(hydra_cfg.overrides.task)
    started = STARTS[-1] if STARTS else time.perf_counter()
    try:
        if torchrun.needs_relaunch(cfg):
            return relaunch_plan(cfg, out_dir, task, list(hydra_cfg.overrides.hydra))
        with torchrun.rank_session(cfg.trainer.device):
            return torchrun.record_errors(lambda: plan_run(cfg, comm.shared_run_dir(out_dir), started, task))()
    except torchrun.RanksFailed as err:
        print(f"vitcli: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


@hydra.main(version_base="1.3", config_path="pkg://vitcli.conf", config_name="plan")
def hydra_main(cfg: DictConfig) -> None:
    run_plan(cfg)


def main() -> None:
    STARTS.append(time.perf_counter() if STARTS else IMPORTED)
    hydra_main()
