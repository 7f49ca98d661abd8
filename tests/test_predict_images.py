"""vitcli predict images=PATH: the user's own files (any mode, size, format) -> top-k CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from vitcli.core.errors import UserError


@pytest.fixture
def run(tiny_run_copy) -> Path:
    """predict writes into predictions/: a private copy of the shared tiny run."""
    return tiny_run_copy


@pytest.fixture
def photos(tmp_path) -> Path:
    """Good images of every mode/format, plus a truncated JPEG and a text file named .png."""
    from PIL import Image

    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).save(root / "rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (21, 13), np.uint8)).save(root / "nested" / "gray.png")
    Image.new("CMYK", (30, 30), (10, 200, 30, 40)).save(root / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 255, (17, 33, 4), np.uint8), "RGBA").save(root / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(root / "pic.webp")
    Image.fromarray(rng.integers(0, 255, (9, 70, 3), np.uint8)).convert("P").save(root / "palette.bmp")
    data = (root / "rgb.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "notes.png").write_text("not an image\n")
    return root


GOOD = {"rgb.jpg", "gray.png", "cmyk.jpg", "alpha.png", "pic.webp", "palette.bmp"}


def expected_probs(run: Path, image: Path) -> torch.Tensor:
    """The run's model on the run's eval transform of one image, computed independently."""
    from vitcli.data.files import load_rgb
    from vitcli.data.transforms import create_file_transform
    from vitcli.models.run_model import load_run_model

    cfg, model, _, _ = load_run_model(run, "best", "cpu")
    x = create_file_transform(cfg.augmentation, cfg.data, train=False)(load_rgb(str(image)))
    with torch.no_grad():
        return model(x[None]).softmax(-1)[0]


def test_folder_of_mixed_images(run, photos):
    from vitcli.tasks.predict_images import predict_images

    result = predict_images(run, str(photos), topk=3, device="cpu")
    assert result.csv_path == run / "predictions" / "photos.csv"
    assert {Path(p).name for p in result.paths} == GOOD  # recursive, every mode decoded
    assert {Path(p).name for p, _ in result.failed} == {"truncated.jpg", "notes.png"}
    rows = list(csv.DictReader(result.csv_path.open()))
    assert len(rows) == len(GOOD) and list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2",
                                                        "class_3", "prob_3"]
    gray = next(r for r in rows if r["path"].endswith("gray.png"))
    probs = expected_probs(run, photos / "nested" / "gray.png")
    top = probs.topk(3)
    assert [gray[f"class_{i}"] for i in (1, 2, 3)] == [f"class_{int(j)}" for j in top.indices]
    assert [float(gray[f"prob_{i}"]) for i in (1, 2, 3)] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_single_file_and_glob(run, photos):
    from vitcli.tasks.predict_images import predict_images

    one = predict_images(run, str(photos / "cmyk.jpg"), topk=20, device="cpu")
    assert one.csv_path.name == "cmyk.csv" and len(one.names[0]) == 10  # topk capped at the class count
    globbed = predict_images(run, str(photos / "**" / "*.png"), device="cpu", name="pngs")
    assert globbed.csv_path.name == "pngs.csv"
    assert {Path(p).name for p in globbed.paths} == {"gray.png", "alpha.png"}


def test_all_unreadable_is_an_error(run, photos):
    from vitcli.tasks.predict_images import predict_images

    with pytest.raises(UserError, match="none of the 2 files could be read"):
        predict_images(run, str(photos / "[nt]*.*g"), device="cpu")


def test_cli_table_and_bad_input(cli, run, photos, tmp_path):
    proc = cli("predict", f"run={run}", f"images={photos}", "topk=2", cwd=tmp_path)
    assert "rgb.jpg" in proc.stdout and "skipped" in proc.stdout + proc.stderr and "truncated.jpg" in proc.stdout + proc.stderr
    assert (run / "predictions" / "photos.csv").is_file()
    bad = cli("predict", f"run={run}", f"images={tmp_path / 'missing' / '*.jpg'}", check=False, cwd=tmp_path)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "no file matches it" in lines[0], bad.stderr
