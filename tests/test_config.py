"""Every option of every config group composes against the schema."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import compose
from vitcli.presets import group_options

GROUPS = ["model", "data", "augmentation", "regularization", "optimizer", "scheduler", "trainer", "logger",
          "distill", "experiment", "hparams_search"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_opens_with_a_runnable_example(group):
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


def test_default_is_vit_on_digits():
    cfg = compose("train")
    assert cfg.data.name == "digits"
    assert cfg.model.timm_name.startswith("vit_")
    assert cfg.optimizer.name == "adamw" and cfg.scheduler.name == "cosine"
    assert cfg.regularization.label_smoothing > 0


def test_misspelt_key_fails_at_compose_time():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose("train", ["trainer.epoch=3"])


def test_wrong_type_fails_at_compose_time():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose("train", ["data.batch_size=many"])


def test_model_img_size_follows_data():
    cfg = compose("train", ["model=vit_s", "data.img_size=48"])
    assert cfg.model.img_size == 48
    cfg = compose("train", ["model=resnet18"])
    assert cfg.model.img_size is None
