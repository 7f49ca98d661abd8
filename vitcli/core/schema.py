"""Structured config schemas of the config groups and of `vitcli train` (registered in Hydra's
ConfigStore by core/config_store.py; the other commands' schemas are in core/task_schemas.py).

Every primary config (conf/train.yaml, conf/eval.yaml, ...) lists its schema
first in its defaults, so a misspelt key, a wrongly typed value or a choice
outside its closed set (vitcli/core/choices.py) fails at compose time with Hydra's own
message, before any work starts. The defaults written here are the only ones:
group option files (conf/<group>/*.yaml) hold only what makes them differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from vitcli.core.choices import (
    ClassBalance,
    DataFormat,
    DataCheck,
    Difficulty,
    DistillName,
    DistillTarget,
    EraseMode,
    Head,
    LoggerName,
    LrBaseScale,
    MixupMode,
    PeftMethod,
    Precision,
    Progress,
    RunCheckpoint,
    Scheduler,
    Strategy,
    WandbMode,
)


@dataclass
class LoraOptions:
    """model.peft=lora: peft's LoraConfig (r, lora_alpha, lora_dropout, target_modules)."""

    r: int = 8  # rank of the adapters
    alpha: float = 16.0  # scaling: the update is (alpha / r) * B @ A
    dropout: float = 0.0  # dropout on the adapters' input
    targets: Optional[List[str]] = None  # module-name endings to adapt (null: the family's, models/families.py)


@dataclass
class ModelConfig:
    name: str = MISSING  # preset name (the option chosen in the model group)
    timm_name: str = MISSING  # what timm.create_model builds
    pretrained: bool = False  # load timm hub weights (needs network or a local HF cache)
    weights: Optional[str] = None  # local .safetensors/.pth/.bin state dict
    weights_strict: bool = True  # false: load only the tensors of `weights` that fit (warns with the counts)
    img_size: Optional[int] = None  # passed to timm for ViT-like models; null for CNNs
    patch_size: Optional[int] = None  # overrides the patch size (small inputs)
    drop_path_rate: Optional[float] = None  # null: taken from the regularization group
    drop_rate: Optional[float] = None  # null: taken from the regularization group
    head: Head = Head.linear  # classifier on the pooled features: one linear layer | mlp (one hidden layer)
    head_hidden_dim: Optional[int] = None  # mlp head width (default: the feature width)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm constructor kwargs
    peft: PeftMethod = PeftMethod.none  # lora: train low-rank adapters and the classifier only (the peft extra)
    lora: LoraOptions = field(default_factory=LoraOptions)


@dataclass
class DataConfig:
    name: str = MISSING  # digits | synthetic | imagefolder | miniplaces | imagenet | wds | hf
    root: Optional[str] = None  # the dataset folder (file datasets, wds shards); unused by digits / synthetic
    # files: decode images per sample each epoch | memory: decode every image once into RAM (each must be
    # img_size square) | auto: memory when that holds and the splits fit in memory_mb, else files |
    # packed: the arrays `vitcli prepare` wrote
    format: DataFormat = DataFormat.auto
    memory_mb: float = 2048.0  # data.format=auto: the most MiB of decoded images held in memory (per process)
    img_size: int = 32  # side of the square images the model sees
    num_classes: Optional[int] = None  # derived from the data where possible
    # auto: the weights' own statistics (model.pretrained / model.weights, via timm), else the
    # dataset's default; the run's config.yaml records the resolved numbers (data/normalization.py)
    mean: Any = "auto"  # auto | three floats
    std: Any = "auto"  # auto | three floats
    batch_size: int = 64  # per device: the global batch is batch_size x trainer.devices x trainer.grad_accum
    eval_batch_size: Optional[int] = None  # default: 2 x batch_size
    num_workers: Any = "auto"  # file datasets: auto (usable cores per rank - 1, <= 16) or a count (0: main process)
    val_fraction: float = 0.2  # digits / synthetic: held-out share
    split_seed: int = 0  # fixes the train/val split independently of trainer.seed
    num_samples: int = 2000  # synthetic only
    native_size: int = 32  # synthetic only: generated resolution
    difficulty: Difficulty = Difficulty.hard  # synthetic only: hard (a ViT needs epochs) | easy (100% after one epoch)
    train_split: str = "train"  # file datasets: list-file / folder name of each split
    val_split: str = "val"  # file datasets: list-file / folder name of the validation split
    test_split: Optional[str] = "test"  # unlabelled split, enumerated when present (null: none)
    class_map: Optional[str] = None  # imagefolder/imagenet: file, one class folder per line (label order)
    minival_fraction: float = 0.0  # carve this stratified share of train into a 'minival' split (0: off)
    packed_dir: Optional[str] = None  # data.format=packed / vitcli prepare (default: <root>/packed)
    max_bad_fraction: float = 0.01  # unreadable files are skipped; more than this share of a split aborts
    class_balance: ClassBalance = ClassBalance.none  # weighted_loss (inverse frequency) | sampler (classes drawn evenly)
    cache_dir: Optional[str] = None  # folder and shard indexes (null: $VITCLI_CACHE, else ~/.cache/vitcli)
    # wds: shard patterns ('train-{000000..000127}.tar', a list, or a wids .json), relative to root;
    # null: <root>/<split>.json as `vitcli prepare format=wds` writes it, else <root>/<split>-*.tar
    train: Any = None
    val: Any = None  # wds: the val split's shards (as train)
    test: Any = None  # wds: the test split's shards (as train)
    streaming: bool = False  # wds: read shards as a stream (remote / too many to index; not bitwise-resumable)
    shuffle_buffer: int = 2000  # wds streaming: samples in the shuffle buffer
    dataset: Optional[str] = None  # hf: a save_to_disk folder, parquet/arrow file(s) or a hub id
    trust_remote_code: bool = False  # hf: let a dataset's loading script run (never by default)
    image_key: Optional[str] = None  # wds: image member(s), 'jpg;png' (null: jpg/jpeg/png/webp); hf: image column
    label_key: Optional[str] = None  # wds: label member (null: cls; json.<field> reads a json member); hf: column
    classes: Optional[str] = None  # wds / hf: file with one class name per line (label order)


@dataclass
class AugmentationConfig:
    """Train-time augmentation, built once as timm's transform stages (data/transforms.py): run per
    sample on image files, as batch ops on in-memory / packed arrays (data/batch_transforms.py).
    MixUp/CutMix and Gaussian noise act on the batch in the train loop for both."""

    name: str = "none"  # the option chosen in the augmentation group
    scale: Optional[List[float]] = None  # RandomResizedCrop scale range (null: no RRC)
    ratio: List[float] = field(default_factory=lambda: [0.75, 1.3333333])  # RandomResizedCrop aspect range (w/h)
    random_crop_padding: int = 0  # RandomCrop with zero padding (when scale is null; 0: off)
    hflip: float = 0.0  # horizontal flip probability
    color_jitter: Optional[float] = None  # brightness/contrast/saturation strength (timm: unused beside RandAugment)
    gaussian_noise: float = 0.0  # std of noise added to normalized inputs (0: off)
    auto_augment: Optional[str] = None  # timm policy string, e.g. rand-m9-mstd0.5-inc1
    interpolation: Any = "auto"  # auto: the weights' own (pretrained / model.weights), else bicubic
    re_prob: float = 0.0  # RandomErasing probability
    re_mode: EraseMode = EraseMode.pixel  # RandomErasing fill: per-pixel noise | per-channel random | zeros
    re_count: int = 1  # RandomErasing: most boxes erased per image
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha) (0: off)
    cutmix_alpha: float = 0.0  # CutMix Beta(alpha, alpha) (0: off)
    cutmix_minmax: Optional[List[float]] = None  # CutMix box size range as image fractions (replaces cutmix_alpha)
    mixup_prob: float = 1.0  # probability that a batch (pair, element) is mixed
    mixup_switch_prob: float = 0.5  # with both on: probability of CutMix instead of MixUp
    mixup_mode: MixupMode = MixupMode.batch  # one draw per batch | per pair | per element
    mixup_off_epoch: int = 0  # stop mixing from this epoch on (0: never)
    crop_pct: Any = "auto"  # eval: resize to img_size / crop_pct, centre crop (auto: the weights' own, else 1.0)


@dataclass
class RegularizationConfig:
    """Weight decay, stochastic depth, dropout and label smoothing (after Steiner et al., "How to train
    your ViT?"); model.drop_path_rate / model.drop_rate, when a preset sets them, win over these."""

    name: str = "none"  # the option chosen in the regularization group
    weight_decay: float = 0.0  # weight decay (1-d params, norms and biases, are not decayed)
    drop_path_rate: float = 0.0  # stochastic depth rate of the last block (unless model.drop_path_rate is set)
    drop_rate: float = 0.0  # dropout before the classifier (unless model.drop_rate is set)
    label_smoothing: float = 0.0  # share of the target spread over all classes


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # any timm create_optimizer_v2 name
    lr: float = 1e-3  # peak learning rate (after warmup)
    momentum: float = 0.9  # sgd (and other momentum optimizers)
    betas: Optional[List[float]] = None  # adam-family betas (null: the optimizer's default)
    eps: Optional[float] = None  # adam-family epsilon (null: the optimizer's default)
    layer_decay: Optional[float] = None  # layer-wise lr decay (e.g. 0.65 for fine-tuning ViT-B)
    head_lr_mult: float = 1.0  # classifier lr = lr x this (e.g. 10 when fine-tuning)
    lr_base: Optional[float] = None  # set: lr = lr_base x scale(global batch / lr_base_size), replacing lr (timm, DeiT)
    lr_base_size: int = 256  # the global batch lr_base was tuned for
    lr_base_scale: LrBaseScale = LrBaseScale.linear  # sqrt is usual for adaptive optimizers at large batch
    kwargs: Dict[str, Any] = field(default_factory=dict)  # more create_optimizer_v2 args


@dataclass
class SchedulerConfig:
    name: Scheduler = Scheduler.cosine  # any timm create_scheduler_v2 name
    warmup_epochs: float = 1.0  # linear warmup from warmup_lr to optimizer.lr (fractions allowed)
    warmup_lr: float = 1e-6  # learning rate at the first step
    min_lr: float = 1e-6  # floor of the decay (cosine ends here)
    decay_epochs: Optional[float] = None  # step: decay every N epochs (null: timm's 90); wsd/rsqrt: decay length
    decay_rate: float = 0.1  # step / multistep / plateau: multiply by this; poly: the power
    decay_milestones: List[float] = field(default_factory=lambda: [30.0, 60.0])  # multistep: epochs to decay at
    patience_epochs: int = 10  # plateau: epochs without improvement of the selection metric before a decay
    kwargs: Dict[str, Any] = field(default_factory=dict)  # more create_scheduler_v2 args (cycle_mul, k_decay, noise, ...)


@dataclass
class FsdpConfig:
    """trainer.strategy=fsdp: FSDP2 (fully_shard) on each block or stage, then the root (launch/fsdp.py)."""
    reshard_after_forward: bool = True  # free gathered weights after a unit's forward (less memory, one more all-gather)
    cpu_offload: bool = False  # keep shards and the optimizer step on the CPU (GPUs only; much slower)


@dataclass
class TrainerConfig:
    epochs: int = 40  # training epochs (a resumed run counts those already done)
    seed: int = 42  # model init, data order and augmentation draws (the split has data.split_seed)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_interval: int = 20  # optimizer steps between log points (loss read back from the device, log lines)
    progress: Progress = Progress.auto  # auto: a bar on a terminal, plain lines elsewhere
    threads: Optional[int] = None  # torch CPU threads (null: torch default)
    precision: Precision = Precision.fp32  # 32 | bf16 | fp16 (autocast; fp16 adds a GradScaler)
    compile: bool = False  # torch.compile the model
    channels_last: bool = False  # NHWC memory format (faster convolutions on recent GPUs)
    grad_accum: int = 1  # micro-batches per optimizer step
    clip_grad: Optional[float] = None  # max gradient norm
    ema: bool = False  # keep an EMA of the weights (timm ModelEmaV3), evaluated beside the raw weights
    ema_decay: float = 0.9998  # EMA weight of the previous average per step
    ema_warmup: bool = True  # ramp the decay up over the first steps
    freeze_backbone_epochs: int = 0  # train only the classifier for the first N epochs
    ckpt_interval_steps: int = 0  # also save last.pt every N optimizer steps (0: at epoch ends only)
    export_safetensors: bool = True  # best weights as model.safetensors at the end
    devices: int = 1  # >1: that many DDP processes on this node via torchrun; data.batch_size is per device
    strategy: Strategy = Strategy.ddp  # ddp: full weights on every rank | fsdp: weights, grads and optimizer state sharded
    fsdp: FsdpConfig = field(default_factory=FsdpConfig)  # trainer.strategy=fsdp options
    async_checkpoints: bool = True  # write last.pt/best.pt on a background thread (at most one save in flight)
    sync_batchnorm: bool = False  # DDP on GPUs: BatchNorm statistics over all ranks (CNNs)
    grad_checkpointing: bool = False  # timm set_grad_checkpointing(): recompute activations in backward (less memory)
    early_stop_patience: int = 0  # stop after N evaluations without a better selection top-1 (0: off)
    # epochs between evaluations (and best.pt updates); the last epoch is always evaluated; early
    # stopping counts evaluations; optuna pruning sees them at their epoch. null: epochs // 8, between 1 and 5 (a 40-epoch run: 5)
    eval_interval: Optional[int] = None


@dataclass
class LoggerBackends:
    """The trackers that run beside csv/jsonl. Each logger option turns its own on, so Hydra's list
    selection logger=[wandb,mlflow] turns on both; logger.backends.<name>=true adds one (resume too)."""
    wandb: bool = False  # Weights & Biases (logger=wandb)
    mlflow: bool = False  # MLflow (logger=mlflow)
    tensorboard: bool = False  # TensorBoard event files in the run dir (logger=tensorboard)


@dataclass
class MlflowConfig:
    # null: sqlite:///<runs_root>/mlruns/mlflow.db; or http(s)://server:5000, sqlite:///..., postgresql://..., file:...
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None  # null: the vitcli experiment name (`name`)
    run_name: Optional[str] = None  # null: <run dir name> (sweep jobs: <sweep stamp>/<job>)
    # where a new experiment keeps artifacts when tracking_uri is a database (a server picks its own);
    # null: <runs_root>/mlruns/artifacts
    artifact_location: Optional[str] = None
    log_model: bool = True  # model.safetensors as an artifact (checkpoints are never uploaded)


@dataclass
class TensorBoardConfig:
    images: bool = True  # the run's plots (curves, confusion, errors, explain) as images


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.csv  # the option picked (the last of a list); `backends` says what runs
    backends: LoggerBackends = field(default_factory=LoggerBackends)  # the trackers on beside csv/jsonl
    csv: bool = True  # metrics.csv beside metrics.jsonl
    # W&B (logger=wandb)
    project: str = "vitcli"  # wandb only, like the fields below
    entity: Optional[str] = None  # W&B team or user (null: your default entity)
    group: Optional[str] = None  # null: <experiment>/<sweep stamp> for -m jobs, none otherwise
    tags: List[str] = field(default_factory=list)  # W&B run tags, e.g. [baseline,vit]
    run_name: Optional[str] = None  # null: <experiment>/<run dir name>
    notes: Optional[str] = None  # W&B run notes
    mode: WandbMode = WandbMode.auto  # auto: online with an API key, else offline
    init_timeout: float = 30.0  # seconds before an unreachable server falls back to offline
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)  # logger=mlflow
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)  # logger=tensorboard


@dataclass
class DistillConfig:
    """Knowledge distillation from a frozen teacher (DeiT; vitcli/loss/distill.py)."""
    name: DistillName = DistillName.none  # none | soft / hard (targets from the teacher) | token (DeiT distillation token)
    teacher: Any = None  # a run dir, model:<preset or timm name>, or a list of either (ensemble)
    teacher_weights: Any = None  # state dict FILE for a model: teacher (a list when teacher is a list)
    teacher_checkpoint: RunCheckpoint = RunCheckpoint.best  # run-dir teachers
    teacher_img_size: Optional[int] = None  # null: the teacher run's data.img_size, else the student's
    target: DistillTarget = DistillTarget.soft  # soft: KL to the teacher's probabilities | hard: CE on its argmax
    alpha: float = 0.5  # weight of the distillation term (1 - alpha on the labels)
    tau: float = 1.0  # softmax temperature of soft targets; the KL is scaled by tau^2


@dataclass
class TrainConfig:
    name: str = "default"  # experiment name: runs/<name>/<stamp>
    runs_root: str = "runs"  # where runs are written (and run=latest / run=<name> look)
    resume: Optional[str] = None  # a run dir to continue (its config, overrides on top)
    # resume: data that differs from what last.pt records (class names, samples, order) stops the run;
    # warn: log it and continue on the new data (this command only: resume= takes it from the command line)
    data_check: DataCheck = DataCheck.strict
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
