"""data=hf: Hugging Face datasets built here with `datasets` (save_to_disk and parquet), the
columns and class names found from the features, split names, no loading script ever run,
and prepare from an hf source to packed arrays."""

from __future__ import annotations

import pytest
import torch
from data_builders import digits_images, split_indices, write_folder, write_hf

NO_AUG = ["augmentation=none", "data.img_size=16", "data.num_workers=0"]


@pytest.fixture(scope="module")
def digits_hf(tmp_path_factory):
    """20 digits per class: a save_to_disk DatasetDict (train / validation) and the same as a folder."""
    root = tmp_path_factory.mktemp("digits_hf")
    images, labels, names = digits_images(16, per_class=20)
    names = [f"digit_{c}" for c in range(10)]
    splits = split_indices(labels)
    return {"hf": write_hf(root / "hf", images, labels, names, splits),
            "folder": write_folder(root / "folder", images, labels, names, splits), "labels": labels,
            "splits": splits, "names": names}


def test_save_to_disk_dataset_matches_the_folder(compose, digits_hf):
    from vitcli.data import create_data

    hf = create_data(compose("train", ["data=hf", f"data.dataset={digits_hf['hf']}", *NO_AUG]), train=False)
    folder = create_data(compose("train", ["data=imagefolder", f"data.root={digits_hf['folder']}", "data.format=files",
                                           *NO_AUG]),
                         train=False)
    assert hf.class_names == digits_hf["names"]  # from the ClassLabel feature (reaches predictions and exports)
    assert hf.info["val_samples"] == 40  # 'val' found as the dataset's 'validation' split
    xs, ys = zip(*hf.loader("val"))
    x, y = torch.cat(xs), torch.cat(ys)
    assert y.tolist() == digits_hf["labels"][digits_hf["splits"]["val"]].tolist()  # row order kept
    by_id = {}
    for xb, yb in folder.loader("val"):
        for xi, yi in zip(xb, yb):
            by_id.setdefault(int(yi), []).append(xi)
    # every hf image is one of the folder's images of the same class, decoded identically
    for xi, yi in zip(x, y):
        assert any(torch.equal(xi, other) for other in by_id[int(yi)])


def test_parquet_folder_with_split_files(compose, digits_hf, tmp_path):
    import datasets

    from vitcli.data.sources.hf import load_hf

    saved = datasets.load_from_disk(str(digits_hf["hf"]))
    for name, part in saved.items():
        part.to_parquet(str(tmp_path / "pq" / f"{name}-00000-of-00001.parquet"))
    splits, names = load_hf(compose("train", ["data=hf", f"data.dataset={tmp_path / 'pq'}",
                                              f"data.cache_dir={tmp_path / 'cache'}"]).data)
    assert names == digits_hf["names"] and len(splits["train"]) == 160 and len(splits["val"]) == 40
    assert splits["train"].open(lambda im: im).read(3).size == (16, 16)


def test_columns_and_splits_can_be_named(compose, tmp_path):
    import datasets

    from vitcli.core.errors import UserError
    from vitcli.data.sources.hf import load_hf

    images, labels, _ = digits_images(16, per_class=3)
    rows = {"picture": [{"bytes": _png(im), "path": None} for im in images], "digit": labels.tolist()}
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features({"picture": datasets.Image(),
                                                                       "digit": datasets.Value("int64")}))
    datasets.DatasetDict({"fit": ds, "holdout": ds}).save_to_disk(str(tmp_path / "named"))
    base = ["data=hf", f"data.dataset={tmp_path / 'named'}", "data.train_split=fit", "data.val_split=holdout"]
    splits, names = load_hf(compose("train", [*base, "data.label_key=digit"]).data)
    assert names == [str(c) for c in range(10)] and splits["val"].ids[0] == "val/00000000"  # no paths: row ids
    with pytest.raises(UserError, match="no label column"):
        load_hf(compose("train", base).data)  # "digit" is not a name vitcli guesses
    with pytest.raises(UserError, match="has no split 'val' for val .it has fit, holdout.; set data.val_split="):
        load_hf(compose("train", [*base[:3], "data.label_key=digit"]).data)


def test_a_loading_script_never_runs(compose, digits_hf, tmp_path):
    import datasets

    from vitcli.core.errors import UserError
    from vitcli.data.sources.hf import load_hf

    folder = tmp_path / "scripted"
    saved = datasets.load_from_disk(str(digits_hf["hf"]))
    for name, part in saved.items():
        part.to_parquet(str(folder / f"{name}-00000-of-00001.parquet"))
    marker = tmp_path / "script_ran"
    (folder / "scripted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(UserError, match="scripted.py.*vitcli runs no loading script"):
        load_hf(compose("train", ["data=hf", f"data.dataset={folder}", f"data.cache_dir={tmp_path}"]).data)
    assert not marker.exists()
    with pytest.raises(UserError, match="data.trust_remote_code=true"):  # datasets >= 4 has no scripts at all
        load_hf(compose("train", ["data=hf", f"data.dataset={folder}", "data.trust_remote_code=true"]).data)
    assert not marker.exists()


def test_prepare_packs_an_hf_source(compose, digits_hf, tmp_path):
    from vitcli.data import create_data
    from vitcli.data.prepare import prepare

    out = tmp_path / "packed"
    cfg = compose("train", ["data=hf", f"data.dataset={digits_hf['hf']}", f"data.packed_dir={out}", *NO_AUG])
    manifest = prepare(cfg.data, None, None, workers=1, overwrite=False)
    assert manifest["size"] == 16 and manifest["splits"]["val"]["count"] == 40
    packed = create_data(compose("train", ["data=hf", f"data.dataset={digits_hf['hf']}", "data.format=packed",
                                           f"data.packed_dir={out}", *NO_AUG]), train=False)
    files = create_data(cfg, train=False)
    assert packed.class_names == digits_hf["names"] and packed.ids("val") == files.ids("val")
    (xp, yp), (xf, yf) = next(iter(packed.loader("val"))), next(iter(files.loader("val")))
    assert torch.equal(yp, yf) and torch.allclose(xp, xf, atol=1e-6)  # no augmentation: the same images


def _png(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_splits_whose_class_labels_differ_are_refused(compose, tmp_path):
    import datasets

    from vitcli.core.errors import UserError
    from vitcli.data.sources.hf import load_hf

    images, labels, _ = digits_images(16, per_class=2)
    rows = {"image": [{"bytes": _png(im), "path": None} for im in images], "label": labels.tolist()}
    names = [f"d{c}" for c in range(10)]
    swapped = [names[1], names[0], *names[2:]]  # the same classes, 0 and 1 the other way round

    def part(class_names):
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=class_names)})
        return datasets.Dataset.from_dict(rows, features=features)

    datasets.DatasetDict({"train": part(names), "validation": part(swapped)}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(UserError, match=r"\[validation\]: its ClassLabel names the classes differently from the "
                                        r"first split's \(class 0 is 'd0' there, 'd1' here"):
        load_hf(compose("train", ["data=hf", f"data.dataset={tmp_path / 'ds'}"]).data)
    datasets.DatasetDict({"train": part(names), "validation": part(names)}).save_to_disk(str(tmp_path / "same"))
    assert load_hf(compose("train", ["data=hf", f"data.dataset={tmp_path / 'same'}"]).data)[1] == names


def test_trust_remote_code_false_is_passed_and_accepted(compose, digits_hf, tmp_path, monkeypatch):
    """datasets 3.x falls back to HF_DATASETS_TRUST_REMOTE_CODE (or a prompt) without it; the installed
    version must take the explicit False and load the files."""
    import datasets

    from vitcli.data.sources.hf import load_hf

    saved = datasets.load_from_disk(str(digits_hf["hf"]))
    for name, part in saved.items():
        part.to_parquet(str(tmp_path / "pq" / f"{name}-00000-of-00001.parquet"))
    calls, real = [], datasets.load_dataset

    def recording(*args, **kwargs):  # the real loader, its keyword arguments noted
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", recording)
    monkeypatch.setenv("HF_DATASETS_TRUST_REMOTE_CODE", "1")
    splits, names = load_hf(compose("train", ["data=hf", f"data.dataset={tmp_path / 'pq'}",
                                              f"data.cache_dir={tmp_path / 'cache'}"]).data)
    assert len(splits["train"]) == 160 and names == digits_hf["names"]
    assert calls and all(c.get("trust_remote_code") is False for c in calls)


def test_a_hub_id_without_network_is_one_line(cli_process, tmp_path):
    proc = cli_process("train", "data=hf", "data.dataset=timm/mini-imagenet", f"data.cache_dir={tmp_path}",
                       f"hydra.run.dir={tmp_path / 'run'}", env={"HF_HUB_OFFLINE": "1"}, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "vitcli: error: data.dataset=timm/mini-imagenet could not be loaded: Couldn't reach 'timm/mini-imagenet' on "
        "the Hub (OfflineModeIsEnabled); a hub id needs the network once (then datasets' cache), or give a "
        "save_to_disk folder or parquet/arrow files"]
