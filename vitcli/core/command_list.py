"""The `vitcli` commands: the module of each thin Hydra app and its one-line summary.

Imports nothing, so `vitcli --help` prints the list without loading torch, Hydra or OmegaConf; the
reference (core/reference.py) and the docs read the summaries from here too. Each command's primary
config is conf/<command>.yaml.
"""

from __future__ import annotations

# command -> (module under vitcli.commands, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (distils when distill=... is set; -m for sweeps)"),
    "eval": ("evaluate", "metrics of a trained run on a split: vitcli eval run=latest"),
    "predict": ("predict", "logits for a split -> predictions/<split>.npz; images=PATH: top-k CSV of your own images"),
    "explain": ("explain", "attention rollout / Grad-CAM grid of a run's images: vitcli explain run=DIR"),
    "preview": ("preview", "one training batch as the model sees it -> runs/previews/<stamp>/plots/preview.png"),
    "ensemble": ("ensemble", "vote / weighted vote / mean prob / greedy over runs' predictions"),
    "prepare": ("prepare", "decode a file dataset once into packed uint8 arrays (then data.format=packed), "
                           "or write any dataset as WebDataset shards (format=wds out=DIR)"),
    "models": ("models", "model presets, the timm names behind them and their sizes"),
    "runs": ("runs", "table of runs under runs/ with their best metrics: vitcli runs [sort=val_top1]"),
    "plan": ("plan", "measure a few real steps before launching: img/s, memory, data- or compute-bound, ETA "
                     "-> runs/plans/<stamp>/plan.json"),
    "probe": ("probe", "frozen features scored by k-NN / linear / few-shot probes: vitcli probe run=DIR"),
    "export": ("export", "a run's model as a timm folder (config.json + safetensors) or ONNX: vitcli export run=DIR"),
    "info": ("info", "versions, device, installed extras, cache dirs and runs root (paste it into a bug report)"),
}

# `run=` (and ensemble's runs=, train's resume=) take any of these forms (core/runs.py resolve_run)
RUN_FORMS = ("a run directory", "latest (the newest run under runs_root)",
             "an experiment name or folder of runs (its newest run)", "a unique prefix of a run's path or name")
