"""Training: a run's parts built from its config, the loop, evaluation, checkpoints and run
state, optimizers and schedules, stoppers (early stopping, optuna pruning), progress and
metric logging (metrics.jsonl, W&B), inference over a split.

May import: vitcli.core, vitcli.data, vitcli.models, vitcli.viz, vitcli.loss, vitcli.launch.
"""
