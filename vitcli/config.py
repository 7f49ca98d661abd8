"""Structured config schemas, registered in Hydra's ConfigStore.

Every primary config (conf/train.yaml, conf/eval.yaml, ...) lists its schema
first in its defaults, so a misspelt key or a wrongly typed value fails at
compose time with Hydra's own message, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING  # preset name (the option chosen in the model group)
    timm_name: str = MISSING  # what timm.create_model builds
    pretrained: bool = False  # load timm hub weights (needs network or a local HF cache)
    weights: Optional[str] = None  # local .safetensors/.pth/.bin state dict
    img_size: Optional[int] = None  # passed to timm for ViT-like models; null for CNNs
    patch_size: Optional[int] = None  # overrides the patch size (small inputs)
    drop_path_rate: Optional[float] = None  # null: taken from the regularization group
    drop_rate: Optional[float] = None  # null: taken from the regularization group
    head: str = "linear"  # linear | mlp
    head_hidden_dim: Optional[int] = None  # mlp head width (default: the feature width)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm constructor kwargs


@dataclass
class DataConfig:
    name: str = MISSING  # digits | synthetic | imagefolder | miniplaces | imagenet
    root: Optional[str] = None
    format: str = "files"  # files | packed
    img_size: int = 32
    num_classes: Optional[int] = None  # derived from the data where possible
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    batch_size: int = 64  # per device
    eval_batch_size: Optional[int] = None  # default: 2 x batch_size
    num_workers: int = 0
    val_fraction: float = 0.2  # digits / synthetic: held-out share
    split_seed: int = 0  # fixes the train/val split independently of trainer.seed
    num_samples: int = 2000  # synthetic only
    native_size: int = 32  # synthetic only: generated resolution


@dataclass
class AugmentationConfig:
    """Train-time augmentation. Image files: timm create_transform per sample;
    in-memory / packed arrays: the same ops batched on tensors (data/batch_transforms.py).
    MixUp/CutMix and Gaussian noise act on the batch in the train loop for both."""

    name: str = "none"
    scale: Optional[List[float]] = None  # RandomResizedCrop scale range (null: no RRC)
    ratio: List[float] = field(default_factory=lambda: [0.75, 1.3333333])
    random_crop_padding: int = 0  # RandomCrop with zero padding (when scale is null; 0: off)
    hflip: float = 0.0
    color_jitter: Optional[float] = None  # brightness/contrast/saturation strength
    gaussian_noise: float = 0.0  # std of noise added to normalized inputs (0: off)
    auto_augment: Optional[str] = None  # timm policy string, e.g. rand-m9-mstd0.5-inc1
    interpolation: str = "bicubic"
    re_prob: float = 0.0  # RandomErasing probability
    re_mode: str = "pixel"
    re_count: int = 1
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutmix_minmax: Optional[List[float]] = None
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"  # batch | pair | elem
    mixup_off_epoch: int = 0  # stop mixing from this epoch on (0: never)
    crop_pct: float = 1.0  # eval: resize to img_size / crop_pct, then centre crop


@dataclass
class RegularizationConfig:
    name: str = "none"
    weight_decay: float = 0.0
    drop_path_rate: float = 0.0
    drop_rate: float = 0.0
    label_smoothing: float = 0.0


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # any timm create_optimizer_v2 name
    lr: float = 1e-3
    momentum: float = 0.9
    betas: Optional[List[float]] = None
    eps: Optional[float] = None
    layer_decay: Optional[float] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 1.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    decay_epochs: float = 30.0  # step: decay every this many epochs
    decay_rate: float = 0.1  # step: multiply by this


@dataclass
class TrainerConfig:
    epochs: int = 10
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_interval: int = 20  # steps between plain log lines (non-terminal output)
    progress: str = "auto"  # auto | bar | plain | none
    threads: Optional[int] = None  # torch CPU threads (null: torch default)


@dataclass
class LoggerConfig:
    name: str = "csv"
    csv: bool = True


@dataclass
class TrainConfig:
    name: str = "default"  # experiment name: runs/<name>/<stamp>
    runs_root: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


@dataclass
class EvalConfig:
    run: str = MISSING  # a training run directory
    split: str = "val"
    checkpoint: str = "best"  # best | last
    batch_size: Optional[int] = None
    device: str = "auto"


@dataclass
class ModelsConfig:
    pattern: Optional[str] = None  # glob over preset names


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="models_schema", node=ModelsConfig)
    for group, node in [
        ("model", ModelConfig),
        ("data", DataConfig),
        ("augmentation", AugmentationConfig),
        ("regularization", RegularizationConfig),
        ("optimizer", OptimizerConfig),
        ("scheduler", SchedulerConfig),
        ("trainer", TrainerConfig),
        ("logger", LoggerConfig),
    ]:
        cs.store(group=group, name=f"{group}_schema", node=node)


register_configs()
