"""Every option of every config group composes against the schema."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from vitcli.core.options import group_options

GROUPS = ["model", "data", "augmentation", "regularization", "optimizer", "scheduler", "trainer", "logger",
          "distill", "experiment", "hparams_search"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_opens_with_a_runnable_example(compose, group):
    options = group_options(group)
    assert options
    from importlib import resources

    for option in options:
        cfg = compose("train", [f"{group}={option}", "data.root=/data/x"])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        lines = resources.files("vitcli.conf").joinpath(group, f"{option}.yaml").read_text().splitlines()
        # Hydra needs a `# @package` header on the very first line; the example comes next
        first = [line for line in lines if line.startswith("#") and not line.startswith("# @package")][0]
        assert first.startswith("# vitcli "), f"{group}/{option}.yaml must open with a runnable example"


def test_default_is_vit_on_digits(compose):
    cfg = compose("train")
    assert cfg.data.name == "digits"
    assert cfg.model.timm_name.startswith("vit_")
    assert cfg.optimizer.name == "adamw" and cfg.scheduler.name == "cosine"
    assert cfg.regularization.label_smoothing > 0


def test_misspelt_key_fails_at_compose_time(compose):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose("train", ["trainer.epoch=3"])


def test_wrong_type_fails_at_compose_time(compose):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose("train", ["data.batch_size=many"])


def test_model_img_size_follows_data(compose):
    cfg = compose("train", ["model=vit_s", "data.img_size=48"])
    assert cfg.model.img_size == 48
    cfg = compose("train", ["model=resnet18"])
    assert cfg.model.img_size is None


@pytest.mark.parametrize("override, valid", [
    ("trainer.precision=fp8", "fp32, bf16, fp16"),
    ("trainer.progress=loud", "auto, bar, plain, none"),
    ("model.head=deep", "linear, mlp"),
    ("data.format=zip", "auto, files, memory, packed"),
    ("scheduler.name=exp", "cosine"),
    ("distill.target=medium", "soft, hard"),
])
def test_a_choice_outside_its_set_fails_at_compose_time_listing_the_valid_ones(compose, override, valid):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        compose("train", [override])
    assert valid in str(err.value.__cause__ or err.value)


@pytest.mark.parametrize("command, override", [("eval", "eval.tta=rotate"), ("ensemble", "method=median"),
                                               ("predict", "checkpoint=first"), ("eval", "precision=fp8")])
def test_command_choices_fail_at_compose_time(compose, command, override):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose(command, [override])


def test_precision_reads_as_its_value_whichever_way_it_is_written(compose):
    for written in ("trainer.precision=32", "trainer.precision='32'", "trainer.precision=fp32"):
        assert compose("train", [written]).trainer.precision == "32"
    cfg = compose("train", ["trainer.precision=bf16"])
    assert cfg.trainer.precision == "bf16" and f"{cfg.trainer.precision}" == "bf16"


def test_every_scheduler_name_is_one_timm_builds(compose):
    """The Scheduler choices pass straight to timm's create_scheduler_v2."""
    import torch

    from vitcli.core.choices import Scheduler
    from vitcli.engine.optim import create_scheduler

    for name in Scheduler:
        cfg = compose("train", [f"scheduler.name={name.value}", "scheduler.decay_epochs=2"])
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = create_scheduler(opt, cfg.scheduler, epochs=4, steps_per_epoch=3)
        assert scheduler is not None or name.value == "none"


def test_each_default_has_one_home():
    """Defaults live in the schema (vitcli/core/schema.py); a group option file holds only what makes
    it differ, so no option repeats a schema default and the trainer's default option is empty."""
    from importlib import resources

    import yaml

    from vitcli.core import schema as config

    schemas = {"model": config.ModelConfig, "data": config.DataConfig, "augmentation": config.AugmentationConfig,
               "regularization": config.RegularizationConfig, "optimizer": config.OptimizerConfig,
               "scheduler": config.SchedulerConfig, "trainer": config.TrainerConfig, "logger": config.LoggerConfig,
               "distill": config.DistillConfig}
    repeated = []
    for group, schema in schemas.items():
        defaults = OmegaConf.to_container(OmegaConf.structured(schema))
        for option in group_options(group):
            text = resources.files("vitcli.conf").joinpath(group, f"{option}.yaml").read_text()
            for key, value in (yaml.safe_load(text) or {}).items():
                default = defaults.get(key, "<no default>")
                if key != "name" and default != "???" and value == default:
                    repeated.append(f"{group}/{option}.yaml: {key}: {value}")
    assert repeated == []
    assert not yaml.safe_load(resources.files("vitcli.conf").joinpath("trainer", "default.yaml").read_text())
