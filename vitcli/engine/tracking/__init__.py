"""Tracking: the one interface the loop logs through (MetricsLogger), over the always-on
metrics.jsonl / metrics.csv and the trackers the config turns on with logger=... (any mix:
logger=[wandb,mlflow], logger=tensorboard, or logger.backends.<name>=true):

- files.py: MetricsLogger (rank 0) / NullMetrics (other ranks): the files, then every tracker.
- base.py: the Tracker interface (log_step, log_epoch, finish; a failure warns once and turns the
  tracker off, never the run), which trackers a config turns on, the metric names.
- wandb_tracker.py, mlflow_tracker.py (+ mlflow_store.py, mlflow_sweep.py), tensorboard_tracker.py.
- attach.py: eval / predict / probe / explain / ensemble add to the run they read
  (`attach_to_run`), and a -m sweep's parent records (`start_sweep`, `finish_sweep`).

Each tracker imports its library only when it is on and its first record arrives.
"""

from vitcli.engine.tracking.attach import attach_to_run, finish_sweep, start_sweep
from vitcli.engine.tracking.base import TRACKERS, Tracker, active_backends
from vitcli.engine.tracking.files import MetricsLogger, NullMetrics, create_trackers
from vitcli.engine.tracking.wandb_tracker import WandbSink, wandb_id_file, wandb_mode

__all__ = ["MetricsLogger", "NullMetrics", "Tracker", "TRACKERS", "WandbSink", "active_backends", "attach_to_run",
           "create_trackers", "finish_sweep", "start_sweep", "wandb_id_file", "wandb_mode"]
