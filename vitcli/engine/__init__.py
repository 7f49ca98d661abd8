"""Training: a run's parts built from its config, the loop, evaluation, checkpoints and run
state, optimizers and schedules, DDP (process group, torchrun launch), interrupts, metric
logging (metrics.jsonl, W&B) and the Hydra multirun callback.

May import: vitcli.core, vitcli.data, vitcli.models, vitcli.viz, vitcli.loss.
"""
