"""Schemas of the primary configs of every command but `vitcli train` (core/schema.py): those that read
trained runs (eval, predict, explain, export, ensemble, probe), take the train config (preview, probe),
pack data (prepare) or browse presets and runs (models, runs). Registered by core/config_store.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from vitcli.core.choices import (
    Calibrate,
    Checkpoint,
    DataCheck,
    EnsembleMethod,
    ExplainMethod,
    ExportFormat,
    GreedyMetric,
    Precision,
    PrepareFormat,
    ProbeLayers,
    ProbeMethod,
    Submission,
    Tta,
)
from vitcli.core.schema import DataConfig, TrainConfig


@dataclass
class EvalOptions:
    tta: Tta = Tta.none  # test-time augmentation (averages probabilities over views)
    crop_fraction: float = 0.875  # multicrop: crop side as a fraction of the image side
    calibrate: Calibrate = Calibrate.none  # temperature: fit T on calibrate_split, store it (calibration.json)
    # the labelled split the temperature is fitted on (null: minival when the run carved one, else val)
    calibrate_split: Optional[str] = None


@dataclass
class ProbeOptions:
    layers: ProbeLayers = ProbeLayers.pooled  # pooled: pre-logits | tokens: class/avg tokens of the last `blocks`
    blocks: int = 1  # layers=tokens: how many of the last blocks (stages) are concatenated (DINOv2: 4)
    k: List[int] = field(default_factory=lambda: [10, 20])  # knn: neighbours (the best on val gives the predictions)
    knn_temperature: float = 0.07  # knn: votes weigh exp(cosine / T) (DINO's)
    linear_cs: List[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])  # linear: C grid
    shots: List[int] = field(default_factory=lambda: [1, 5, 10, 25])  # fewshot: samples per class
    seeds: int = 5  # fewshot: draws per n (mean and spread)


@dataclass
class EvalConfig:
    run: str = MISSING  # a training run: its directory, latest, an experiment name (its newest run) or a unique prefix
    runs_root: str = "runs"  # where run=latest / run=<name> / a prefix look for runs
    split: str = "val"  # train | val | test | minival (a labelled split)
    checkpoint: Checkpoint = Checkpoint.best  # best (top-1 on val) | last | ema (trainer.ema=true runs)
    data_check: DataCheck = DataCheck.strict  # data differing from what the checkpoint records stops (warn: go on)
    batch_size: Optional[int] = None  # null: the run's data.eval_batch_size (else 2 x data.batch_size)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Optional[Precision] = None  # null: the precision the run trained with
    eval: EvalOptions = field(default_factory=EvalOptions)
    worst: int = 10  # rows in the worst-classes table
    save: bool = True  # write eval/<split>_<checkpoint>.json + CSVs, plots/confusion_<tag>.png, plots/errors_<tag>.png


@dataclass
class PredictConfig:
    run: str = MISSING  # a training run: its directory, latest, an experiment name (its newest run) or a unique prefix
    runs_root: str = "runs"  # where run=latest / run=<name> / a prefix look for runs
    split: Optional[str] = None  # null: test when the data has one, else val
    checkpoint: Checkpoint = Checkpoint.best  # best (top-1 on val) | last | ema (trainer.ema=true runs)
    data_check: DataCheck = DataCheck.strict  # data differing from what the checkpoint records stops (warn: go on)
    batch_size: Optional[int] = None  # null: the run's data.eval_batch_size (else 2 x data.batch_size)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Optional[Precision] = None  # null: the precision the run trained with
    eval: EvalOptions = field(default_factory=EvalOptions)
    submission: Submission = Submission.auto  # auto: for MiniPlaces data
    images: Optional[str] = None  # an image file, folder (recursive) or glob: top-k CSV instead of a split
    topk: int = 5  # images=: classes per image in predictions/<name>.csv
    name: Optional[str] = None  # images=: the CSV's name (null: the folder's / file's name, `images` for a glob)


@dataclass
class ExplainConfig:
    run: str = MISSING  # a training run: its directory, latest, an experiment name (its newest run) or a unique prefix
    runs_root: str = "runs"  # where run=latest / run=<name> / a prefix look for runs
    split: str = "val"  # split whose samples are explained (ignored with images=)
    n: int = 16  # images in the grid
    method: ExplainMethod = ExplainMethod.auto  # rollout | attention (last-layer CLS) | gradcam; auto picks
    images: Optional[str] = None  # explain these files instead: a file, a folder or a glob
    checkpoint: Checkpoint = Checkpoint.best  # best | last | ema
    seed: int = 0  # which samples are drawn (mistakes and correct ones)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Optional[Precision] = None  # null: the precision the run trained with


@dataclass
class ExportConfig:
    run: str = MISSING  # a training run: its directory, latest, an experiment name (its newest run) or a unique prefix
    runs_root: str = "runs"  # where run=latest / run=<name> / a prefix look for runs
    checkpoint: Checkpoint = Checkpoint.best  # best | last | ema
    data_check: DataCheck = DataCheck.strict  # data differing from what the checkpoint records stops (warn: go on)
    format: ExportFormat = ExportFormat.timm  # timm: a folder for timm.create_model("local-dir:...") | onnx
    out: Optional[str] = None  # null: RUN/export/<checkpoint>_timm or RUN/export/<checkpoint>.onnx
    device: str = "cpu"  # where the checkpoint is loaded (exports are written from CPU fp32)


@dataclass
class EnsembleConfig:
    runs: Any = MISSING  # list of runs (each as run= takes it: a dir, latest, a name, a prefix), a glob, or a multirun dir
    method: EnsembleMethod = EnsembleMethod.mean_prob  # vote | weighted_vote (by accuracy) | mean_prob | mean_logit | greedy (Caruana)
    split: Optional[str] = None  # null: test when the members have it, else val
    weights_from: str = "val"  # split that weights / selects members (val | minival)
    weights: Optional[List[float]] = None  # explicit member weights (override weights_from)
    temperatures: Optional[List[float]] = None  # per-member softmax temperature (mean_prob, greedy)
    greedy_steps: int = 25  # greedy: forward-selection rounds (with replacement)
    greedy_metric: GreedyMetric = GreedyMetric.nll  # nll: log loss, then top-1 | top1: top-1, then log loss
    checkpoint: Checkpoint = Checkpoint.best  # members' predictions must come from it (else predicted again)
    data_check: DataCheck = DataCheck.strict  # data differing from what the checkpoint records stops (warn: go on)
    predict_missing: bool = True  # predict members lacking predictions/<split>.npz
    batch_size: Optional[int] = None  # members predicted on the fly (null: each run's own)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Optional[Precision] = None  # null: the precision the run trained with
    eval: EvalOptions = field(default_factory=EvalOptions)
    submission: Submission = Submission.auto  # auto: for MiniPlaces data | always | never
    runs_root: str = "runs"  # out's default root; where latest / <name> / a prefix in runs= look
    out: Optional[str] = None  # output dir (conf/ensemble.yaml: runs/ensembles/<stamp>)


@dataclass
class InfoConfig:
    runs_root: str = "runs"  # where `vitcli train` writes runs (reported with how many it holds)


@dataclass
class ModelsConfig:
    pattern: Optional[str] = None  # glob over preset names


@dataclass
class RunsConfig:
    root: str = "runs"  # searched recursively for run directories (summary.json)
    sort: str = "val_top1"  # any column; a leading - reverses the order
    filter: Optional[str] = None  # glob (or substring) over run path, experiment, model, data, status
    limit: int = 0  # show at most this many rows (0: all)


@dataclass
class PreviewConfig(TrainConfig):
    """`vitcli preview`: the train config (same groups and overrides) plus the batch size shown."""
    n: int = 32  # images in the preview batch (even when MixUp/CutMix is on)


@dataclass
class PlanOptions:
    warmup: int = 2  # optimizer steps run before timing (allocations, autotuning, torch.compile)
    steps: int = 5  # optimizer steps timed (then one more step measures memory)
    eval_batches: int = 3  # evaluation batches timed, after one warm-up batch
    find_batch: bool = False  # also search the largest per-device batch that fits (doubling, then bisection)
    # what "fits" means: CPU: peak RSS under it (null: the RAM available); CUDA: no out-of-memory error,
    # and the peak allocated under it when set
    memory_budget_gb: Optional[float] = None
    max_batch: Optional[int] = None  # find_batch: the largest batch tried (null: the train split's size per device)
    out: str = MISSING  # where plan.json goes (conf/plan.yaml: runs/plans/<stamp>)


@dataclass
class PlanConfig(TrainConfig):
    """`vitcli plan`: the train config (same groups and overrides), measured for a few steps."""
    plan: PlanOptions = field(default_factory=PlanOptions)


@dataclass
class ProbeConfig(TrainConfig):
    """`vitcli probe`: a run (run=DIR) or the composed model preset, scored by frozen-feature probes."""

    run: Optional[str] = None  # a training run directory (null: probe the model preset as composed)
    method: ProbeMethod = ProbeMethod.knn  # knn: weighted k-NN | linear: logistic regression | fewshot: n samples per class
    checkpoint: Checkpoint = Checkpoint.best  # run=: which weights
    precision: Optional[Precision] = None  # null: the run's (or trainer.precision)
    probe: ProbeOptions = field(default_factory=ProbeOptions)


@dataclass
class PackOptions:
    size: Optional[int] = None  # side of the packed images (null: the native size, 128 for MiniPlaces)
    splits: Optional[List[str]] = None  # which splits (null: all: train, val, test)
    workers: int = 2  # decoding processes
    overwrite: bool = False  # repack every split, even finished ones
    shard_size: int = 1000  # format=wds: samples per shard


@dataclass
class PrepareConfig:
    format: PrepareFormat = PrepareFormat.packed  # packed (uint8 arrays) | wds (WebDataset shards + wids index)
    out: Optional[str] = None  # where to write (default: data.packed_dir or <root>/packed; format=wds needs it)
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PackOptions = field(default_factory=PackOptions)


# every primary config's schema under the name its defaults list gives (conf/<command>.yaml lists
# <command>_schema first); core/config_store.py registers them, core/reference.py documents them
SCHEMAS: dict[str, type] = {
    "train_schema": TrainConfig, "eval_schema": EvalConfig, "predict_schema": PredictConfig,
    "explain_schema": ExplainConfig, "preview_schema": PreviewConfig, "probe_schema": ProbeConfig,
    "ensemble_schema": EnsembleConfig, "export_schema": ExportConfig, "models_schema": ModelsConfig,
    "runs_schema": RunsConfig, "prepare_schema": PrepareConfig, "info_schema": InfoConfig,
    "plan_schema": PlanConfig,
}
