"""vitcli's Optuna sweeper for Hydra: optuna >= 4, pruning, shared studies, study plots.

Select it like hydra-optuna-sweeper (`defaults: [override /hydra/sweeper: optuna]`); the
search-space grammar (`interval`, `range`, `choice`, `tag(log, ...)`) and the sampler
group (`hydra/sweeper/sampler=tpe|random|grid|cmaes|nsgaii`) are the same. Added:
`hydra/sweeper/pruner=median|hyperband|none` (or `hydra.sweeper.pruner=median`), a journal
file storage, `n_trials` counted over the whole study (a rerun resumes it, several workers
share it), and study plots in `<sweep dir>/plots/`.

A job learns its trial with `trial.current_trial()`, reports to it every epoch and stops
when the pruner says so. Hydra imports every public module here when it scans for plugins,
so optuna is imported lazily (modules starting with `_` are not scanned).
"""
