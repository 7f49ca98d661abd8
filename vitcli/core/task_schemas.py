"""Schemas of the primary configs of the commands that read trained runs (eval, predict, explain, export, ensemble)
and browse presets or runs (models, runs); registered in the ConfigStore by vitcli/core/schema.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from vitcli.core.choices import (
    Calibrate,
    ProbeLayers,
    Checkpoint,
    EnsembleMethod,
    ExplainMethod,
    ExportFormat,
    GreedyMetric,
    Precision,
    Submission,
    Tta,
)


@dataclass
class EvalOptions:
    tta: Tta = Tta.none  # test-time augmentation (averages probabilities over views)
    crop_fraction: float = 0.875  # multicrop: crop side as a fraction of the image side
    calibrate: Calibrate = Calibrate.none  # temperature: fit T on calibrate_split, store it (calibration.json)
    calibrate_split: str = "val"  # the labelled split the temperature is fitted on


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
    run: str = MISSING  # a training run directory
    split: str = "val"
    checkpoint: Checkpoint = Checkpoint.best
    batch_size: Optional[int] = None
    device: str = "auto"
    precision: Optional[Precision] = None  # null: the precision the run trained with
    eval: EvalOptions = field(default_factory=EvalOptions)
    worst: int = 10  # rows in the worst-classes table
    save: bool = True  # write eval/<split>_<checkpoint>.json + CSVs, plots/confusion_<tag>.png, plots/errors_<tag>.png


@dataclass
class PredictConfig:
    run: str = MISSING  # a training run directory
    split: Optional[str] = None  # null: test when the data has one, else val
    checkpoint: Checkpoint = Checkpoint.best
    batch_size: Optional[int] = None
    device: str = "auto"
    precision: Optional[Precision] = None  # null: the precision the run trained with
    eval: EvalOptions = field(default_factory=EvalOptions)
    submission: Submission = Submission.auto  # auto: for MiniPlaces data
    images: Optional[str] = None  # an image file, folder (recursive) or glob: top-k CSV instead of a split
    topk: int = 5  # images=: classes per image in predictions/<name>.csv
    name: Optional[str] = None  # images=: the CSV's name (null: the folder's / file's name, `images` for a glob)


@dataclass
class ExplainConfig:
    run: str = MISSING  # a training run directory
    split: str = "val"  # split whose samples are explained (ignored with images=)
    n: int = 16  # images in the grid
    method: ExplainMethod = ExplainMethod.auto  # rollout | attention (last-layer CLS) | gradcam; auto picks
    images: Optional[str] = None  # explain these files instead: a file, a folder or a glob
    checkpoint: Checkpoint = Checkpoint.best
    seed: int = 0  # which samples are drawn (mistakes and correct ones)
    device: str = "auto"
    precision: Optional[Precision] = None  # null: the precision the run trained with


@dataclass
class ExportConfig:
    run: str = MISSING  # a training run directory
    checkpoint: Checkpoint = Checkpoint.best
    format: ExportFormat = ExportFormat.timm  # timm: a folder for timm.create_model("local-dir:...") | onnx
    out: Optional[str] = None  # null: RUN/export/<checkpoint>_timm or RUN/export/<checkpoint>.onnx
    device: str = "cpu"  # where the checkpoint is loaded (exports are written from CPU fp32)


@dataclass
class EnsembleConfig:
    runs: Any = MISSING  # list of run dirs, a glob, or a multirun dir
    method: EnsembleMethod = EnsembleMethod.mean_prob
    split: Optional[str] = None  # null: test when the members have it, else val
    weights_from: str = "val"  # split that weights / selects members (val | minival)
    weights: Optional[List[float]] = None  # explicit member weights (override weights_from)
    temperatures: Optional[List[float]] = None  # per-member softmax temperature (mean_prob, greedy)
    greedy_steps: int = 25  # greedy: forward-selection rounds (with replacement)
    greedy_metric: GreedyMetric = GreedyMetric.nll  # nll: log loss, then top-1 | top1: top-1, then log loss
    checkpoint: Checkpoint = Checkpoint.best  # for members predicted on the fly
    predict_missing: bool = True  # predict members lacking predictions/<split>.npz
    batch_size: Optional[int] = None
    device: str = "auto"
    precision: Optional[Precision] = None  # null: the precision the run trained with
    eval: EvalOptions = field(default_factory=EvalOptions)
    submission: Submission = Submission.auto
    runs_root: str = "runs"
    out: Optional[str] = None  # output dir (conf/ensemble.yaml: runs/ensembles/<stamp>)


@dataclass
class ModelsConfig:
    pattern: Optional[str] = None  # glob over preset names


@dataclass
class RunsConfig:
    root: str = "runs"  # searched recursively for run directories (summary.json)
    sort: str = "val_top1"  # any column; a leading - reverses the order
    filter: Optional[str] = None  # glob (or substring) over run path, experiment, model, data, status
    limit: int = 0  # show at most this many rows (0: all)
