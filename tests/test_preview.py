"""`vitcli preview`: the first training batch as the model receives it, on file and packed data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from jpeg_trees import make_miniplaces
from PIL import Image

from vitcli.core.errors import UserError
from vitcli.tasks.preview import label_caption, training_batch, write_preview

N = 64


@pytest.fixture(scope="module")
def tree(compose, tmp_path_factory):
    """A MiniPlaces tree whose train images are white on the left, black on the right (flips show),
    and grey (an erased patch of coloured noise shows); packed as well."""
    from vitcli.data.prepare import prepare

    root = tmp_path_factory.mktemp("preview") / "miniplaces"
    made = make_miniplaces(root, classes=4, per_class=N // 4, val=1, test=0, size=16)
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :8] = 255
    for rel in made["train"]:
        Image.fromarray(img).save(root / "images" / rel, format="JPEG", quality=95)
    prepare(cfg(compose, root, "files").data, None, None, workers=1, overwrite=False)
    return root


def cfg(compose, root, fmt: str, *extra: str):
    """The preset under test (basic + random erasing) unless `extra` names another augmentation."""
    aug = [] if any(e.startswith("augmentation=") for e in extra) else ["augmentation=basic", "augmentation.re_prob=0.5"]
    return compose("preview", ["data=miniplaces", f"data.root={root}", f"data.format={fmt}", "data.img_size=16",
                               *aug, *extra])


def stats(x: torch.Tensor, c) -> tuple[float, float]:
    """(share flipped: right half brighter, share erased: some pixel with unequal channels),
    measured on the un-normalized images the preview draws."""
    from vitcli.viz.gallery import denormalize

    img = denormalize(x, c.data.mean, c.data.std)  # (B, H, W, 3) in [0, 1]
    flipped = img[:, :, 8:].mean(axis=(1, 2, 3)) > img[:, :, :8].mean(axis=(1, 2, 3))
    erased = (img.std(axis=-1) > 0.15).reshape(len(img), -1).any(axis=1)
    return float(flipped.mean()), float(erased.mean())


def test_file_and_packed_batches_show_the_same_augmentation(compose, tree):
    shares = {}
    for fmt in ("files", "packed"):
        c = cfg(compose, tree, fmt)
        x, y, names, data_format = training_batch(c, N)
        assert data_format == fmt  # the path the batch took, for the picture's title
        assert x.shape == (N, 3, 16, 16) and y.shape == (N,) and len(names) == 4
        shares[fmt] = stats(x, c)
    for fmt, (flipped, erased) in shares.items():
        assert 0.3 < flipped < 0.7 and 0.3 < erased < 0.7, (fmt, shares)  # hflip=0.5, re_prob=0.5
    (f_flip, f_erase), (p_flip, p_erase) = shares["files"], shares["packed"]
    assert abs(f_flip - p_flip) < 0.25 and abs(f_erase - p_erase) < 0.25, shares
    c = cfg(compose, tree, "packed", "augmentation=none")
    x, _, _, _ = training_batch(c, N)
    assert stats(x, c) == (0.0, 0.0)  # the measure sees nothing when nothing is applied


def test_mixup_targets_and_the_picture(compose, tree, tmp_path):
    c = cfg(compose, tree, "packed", "augmentation=mixup_cutmix", "regularization=none")
    x, y, names, _ = training_batch(c, 8)
    assert y.shape == (8, 4) and torch.allclose(y.sum(dim=1), torch.ones(8))
    assert (y.max(dim=1).values < 1).any()  # mixed, not one-hot
    assert "\n" in label_caption(y[0].numpy(), names) or y[0].max() == 1
    out = write_preview(c, tmp_path, 8)
    assert out == tmp_path / "plots" / "preview.png" and out.read_bytes()[:4] == b"\x89PNG"


def test_bad_n(compose, tree):
    with pytest.raises(UserError, match="n=0"):
        training_batch(cfg(compose, tree, "files"), 0)
    with pytest.raises(UserError, match="must be even"):
        training_batch(cfg(compose, tree, "files", "augmentation=mixup_cutmix"), 7)


def test_cli_writes_under_runs_previews_and_n0_is_one_line(cli, tmp_path):

    cli("preview", "n=4", f"runs_root={tmp_path}", "augmentation=deit")
    assert [p.relative_to(tmp_path).parts[0::2] for p in tmp_path.rglob("*.png")] == [("previews", "plots")]
    proc = cli("preview", "n=0", f"runs_root={tmp_path}", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "vitcli: error: n=0: preview at least one image (e.g. n=32)"]


def test_a_bare_preview_shows_what_a_bare_train_trains_on(compose):
    """Both primary configs list conf/train_defaults.yaml: the same group choices and values,
    and preview's batch is the train loader's first batch (the same augmentation draws)."""
    from omegaconf import OmegaConf

    from vitcli.data import create_data

    train, preview = (compose(name, [], return_hydra_config=True) for name in ("train", "preview"))
    groups = {k: v for k, v in train.hydra.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    assert {k: preview.hydra.runtime.choices.get(k) for k in groups} == groups
    for group in groups:
        assert OmegaConf.to_container(preview[group]) == OmegaConf.to_container(train[group]), group
    x, y, _, _ = training_batch(compose("preview", ["n=16"]), 16)
    loader = create_data(compose("train", ["data.batch_size=16"])).loader("train")
    loader.set_epoch(0)
    x_train, y_train = next(iter(loader))
    assert torch.equal(y, y_train) and torch.allclose(x, x_train)
