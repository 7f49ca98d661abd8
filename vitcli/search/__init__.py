"""Sweeps: the Hydra multirun callback (a failed job is recorded and the sweep goes on;
sweep_summary.csv and a ranked table at the end) and the optuna study behind vitcli's sweeper
(direction check, plots). The sweeper itself is a hydra_plugins adapter; pruning stays in
vitcli.engine as one of the loop's stoppers.

May import: vitcli.core, vitcli.data, vitcli.models, vitcli.viz, vitcli.loss, vitcli.launch, vitcli.engine.
"""
