"""`data=hf`: Hugging Face `datasets` (a save_to_disk folder, parquet/arrow files, or a hub id).

    vitcli train data=hf data.dataset=/data/beans_saved            # datasets.save_to_disk output
    vitcli train data=hf data.dataset='/data/inet/train-*.parquet' # parquet / arrow files (one split: train)
    vitcli train data=hf data.dataset=timm/mini-imagenet           # hub id (datasets.load_dataset, cached)

The image and label columns come from the features (the first `Image` column, the first
`ClassLabel` column, whose names become the class names) or `data.image_key` /
`data.label_key`. Splits: train = `data.train_split`, val = `data.val_split` (`val` falls
back to `validation` and `valid`), test = `data.test_split` when present. The image column
is read undecoded (`Image(decode=False)`) and decoded by the loader workers, one sample at
a time, through the same FileLoader as image folders (seeded order, exact resume, DDP).

A dataset's loading script never runs: `data.trust_remote_code` is off by default (as
timm's `--dataset-trust-remote-code`) and `trust_remote_code=False` is passed explicitly (datasets
3.x would otherwise fall back to HF_DATASETS_TRUST_REMOTE_CODE or ask; 4.x and 5.x accept and drop
it, and refuse scripts altogether). Every split's ClassLabel must name the classes alike: labels
are indices into one list of names.
"""

from __future__ import annotations

import inspect
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from vitcli.core.errors import UserError
from vitcli.data.files import ImageFileDataset
from vitcli.data.sources.wds import read_class_names, require

VAL_ALIASES = ("val", "validation", "valid")
DATA_FILE_TYPES = {".parquet": "parquet", ".arrow": "arrow"}


@dataclass
class HfSplit:
    """One split of a datasets.Dataset as FileLoader sees it (see ShardSplit for the interface)."""
    dataset: Any  # datasets.Dataset, image column cast to Image(decode=False)
    image_key: str
    labels: np.ndarray
    ids: list[str]

    @property
    def paths(self) -> list[str]:
        return self.ids

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "HfSplit":
        idx = np.asarray(idx, dtype=np.int64)
        return HfSplit(self.dataset.select(idx), self.image_key, self.labels[idx], [self.ids[i] for i in idx])

    def open(self, transform: Callable) -> "HfImageDataset":
        return HfImageDataset(self, transform)


class HfImageDataset(ImageFileDataset):
    """Decodes row i's image (bytes or a path) in whichever worker asks for it."""
    def raw(self, i: int) -> bytes:
        """The encoded image of row i (the cell's bytes, else the file its path names)."""
        cell = self.split.dataset[int(i)][self.split.image_key]
        if cell is None:
            raise OSError("no image in this row")
        if cell.get("bytes"):
            return cell["bytes"]
        if not cell.get("path"):
            raise OSError("the image cell holds neither bytes nor a path")
        return Path(cell["path"]).read_bytes()

    def read(self, i: int):

        with Image.open(io.BytesIO(self.raw(i))) as img:
            img.load()
            return img.convert("RGB")


def remote_code_kwargs(trust: bool) -> dict:
    """timm's rule (its hfds reader): ask datasets to run a loading script only when the user said
    so, and say clearly when the installed datasets (>= 4) runs none. `False` is always said out
    loud: datasets 3.x takes it as a parameter, 4.x and 5.x pop it from their config kwargs."""
    if not trust:
        return {"trust_remote_code": False}
    import datasets

    if "trust_remote_code" not in inspect.signature(datasets.load_dataset).parameters:
        raise UserError("data.trust_remote_code=true: the installed datasets (>= 4) runs no loading scripts; "
                        "give the dataset's parquet/arrow files, or install datasets<4")
    return {"trust_remote_code": True}


def open_source(data_cfg: Any):
    """A DatasetDict (or Dataset) for data.dataset (or data.root)."""
    import datasets

    name = data_cfg.dataset or data_cfg.root
    if not name:
        raise UserError("data=hf needs data.dataset= (a save_to_disk folder, parquet/arrow files, or a hub id)")
    name = str(name)
    datasets.disable_progress_bars()  # its bars would bury vitcli's one-line messages
    datasets.logging.set_verbosity_error()
    path = Path(name).expanduser()
    kwargs = remote_code_kwargs(bool(data_cfg.trust_remote_code))
    # datasets' own arrow cache: under data.cache_dir when set, else datasets' default (~/.cache/huggingface)
    kwargs["cache_dir"] = str(Path(data_cfg.cache_dir).expanduser() / "hf") if data_cfg.cache_dir else None
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return datasets.load_from_disk(str(path))
        suffix = path.suffix.lower() if not path.is_dir() else ""
        if suffix in DATA_FILE_TYPES:
            files = sorted(str(p) for p in path.parent.glob(path.name)) if any(c in name for c in "*?[") else [str(path)]
            if not files or not all(os.path.isfile(f) for f in files):
                raise UserError(f"data.dataset={name} matches no file")
            return datasets.load_dataset(DATA_FILE_TYPES[suffix], data_files={"train": files}, **kwargs)
        if path.exists() or name.startswith((".", "/", "~")):
            if not path.exists():
                raise UserError(f"data.dataset={name} does not exist")
            return datasets.load_dataset(str(path), **kwargs)
        return datasets.load_dataset(name, **kwargs)
    except RuntimeError as err:  # datasets >= 4 refuses a folder or hub repo with a loading script
        if "script" not in str(err):
            raise
        raise UserError(f"data.dataset={name}: {str(err).splitlines()[0]}; vitcli runs no loading script: use the "
                        "dataset's parquet/arrow files (or datasets<4 with data.trust_remote_code=true)") from None
    except IndexError:  # datasets' load_from_disk of a split saved with no rows
        raise UserError(f"data.dataset={name} could not be loaded: a split holds no rows (an empty split)") from None
    except ConnectionError as err:  # a hub id without network (or HF_HUB_OFFLINE=1 and nothing cached)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"data.dataset={name} could not be loaded: {first}; a hub id needs the network once "
                        "(then datasets' cache), or give a save_to_disk folder or parquet/arrow files") from None
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"data.dataset={name} could not be loaded: {first}") from None


def pick_split(source: Any, wanted: str | None, role: str, required: bool) -> tuple[str | None, Any]:
    import datasets

    if isinstance(source, datasets.Dataset):
        source = datasets.DatasetDict({"train": source})
    names = list(source.keys())
    tries = [wanted] + ([a for a in VAL_ALIASES if a != wanted] if wanted in VAL_ALIASES else [])
    for name in tries:
        if name and name in source:
            return name, source[name]
    if required:
        raise UserError(f"the dataset has no split '{wanted}' for {role} (it has {', '.join(names)}); "
                        f"set data.{role}_split=")
    return None, None


def find_columns(features: Any, data_cfg: Any, where: str) -> tuple[str, str | None]:
    """(image column, label column or None) from data.image_key/label_key or the feature types."""
    import datasets

    columns = list(features)
    for setting in ("image_key", "label_key"):
        value = getattr(data_cfg, setting)
        if value and value not in features:
            raise UserError(f"data.{setting}={value} is not a column of {where} (columns: {', '.join(columns)})")
    image = data_cfg.image_key or next((c for c in columns if isinstance(features[c], datasets.Image)), None)
    image = image or next((c for c in ("image", "img", "jpg", "png") if c in features), None)
    if image is None:
        raise UserError(f"{where} has no Image column (columns: {', '.join(columns)}); set data.image_key=")
    label = data_cfg.label_key or next((c for c in columns if isinstance(features[c], datasets.ClassLabel)), None)
    label = label or next((c for c in ("label", "labels", "cls", "target") if c in features), None)
    return image, label


def split_labels(ds: Any, label: str | None, where: str) -> np.ndarray:
    if label is None:
        return np.full(len(ds), -1, dtype=np.int64)
    try:
        values = np.asarray(ds.with_format("numpy", columns=[label])[label])
    except Exception as err:  # a nested / string column
        raise UserError(f"column '{label}' of {where} is not an integer label ({err})") from None
    if values.dtype.kind not in "iu":
        raise UserError(f"column '{label}' of {where} holds {values.dtype} values, not integer class indices; "
                        "set data.label_key= to the label column")
    return values.astype(np.int64)


def split_ids(ds: Any, image: str, prefix: str) -> list[str]:
    """`<split>/<file name>` when every row's image carries a distinct path, else `<split>/<row:08d>`."""
    import pyarrow.compute as pc

    column = ds.with_format("arrow", columns=[image])[image] if len(ds) else None
    paths = None
    if column is not None and column.type.__class__.__name__ == "StructType" or (
            column is not None and hasattr(column.type, "get_field_index") and column.type.get_field_index("path") >= 0):
        paths = pc.struct_field(column, "path").to_pylist()
    if paths and all(paths) and len(set(paths)) == len(paths):
        return [f"{prefix}/{p}" for p in paths]
    return [f"{prefix}/{i:08d}" for i in range(len(ds))]


def load_hf(data_cfg: Any) -> tuple[dict[str, HfSplit], list[str]]:
    """The train / val (/ test) splits of a Hugging Face dataset, and the class names."""
    require("datasets", "hf")
    import datasets

    source = open_source(data_cfg)
    where = str(data_cfg.dataset or data_cfg.root)
    splits: dict[str, HfSplit] = {}
    label_feature = None
    for role, wanted, required in (("train", data_cfg.train_split, True), ("val", data_cfg.val_split, True),
                                   ("test", data_cfg.test_split, False)):
        name, ds = pick_split(source, wanted, role, required)
        if ds is None:
            continue
        image, label = find_columns(ds.features, data_cfg, f"{where} [{name}]")
        if label is None and role != "test":
            raise UserError(f"{where} [{name}] has no label column (columns: {', '.join(ds.features)}); "
                            "set data.label_key=")
        if len(ds) == 0:
            raise UserError(f"split '{name}' of {where} is empty")
        label_feature = same_class_labels(label_feature, ds.features[label] if label else None,
                                          f"{where} [{name}]")
        ds = ds.cast_column(image, datasets.Image(decode=False))
        splits[role] = HfSplit(ds, image, split_labels(ds, label, f"{where} [{name}]"), split_ids(ds, image, role))
    names = hf_class_names(data_cfg, label_feature, splits)
    for role, split in splits.items():
        bad = np.flatnonzero((split.labels >= len(names)) | (split.labels < (-1 if role == "test" else 0)))
        if len(bad):
            raise UserError(f"{where} [{role}] row {int(bad[0])} has label {int(split.labels[bad[0]])}, outside "
                            f"0..{len(names) - 1}; fix the column or data.classes")
    return splits, names


def same_class_labels(first: Any, feature: Any, where: str) -> Any:
    """The first split's ClassLabel, once `feature` (a later split's label column) is checked to name
    the classes alike (a split without a ClassLabel has no names to compare)."""
    names, seen = getattr(feature, "names", None), getattr(first, "names", None)
    if first is None or not names or not seen or list(names) == list(seen):
        return first or feature
    i = next((i for i, (a, b) in enumerate(zip(seen, names)) if a != b), min(len(seen), len(names)))
    a = repr(seen[i]) if i < len(seen) else "absent"
    b = repr(names[i]) if i < len(names) else "absent"
    raise UserError(f"{where}: its ClassLabel names the classes differently from the first split's (class {i} is "
                    f"{a} there, {b} here; {len(seen)} vs {len(names)} classes); labels would mean other classes "
                    "per split: cast the splits to one ClassLabel (datasets' cast_column / align_labels_with_mapping)")


def hf_class_names(data_cfg: Any, feature: Any, splits: dict[str, HfSplit]) -> list[str]:
    """data.classes, else the ClassLabel's names, else 0..K-1."""
    if data_cfg.classes:
        return read_class_names(data_cfg.classes)
    names = getattr(feature, "names", None)
    if names:
        return [str(n) for n in names]
    count = data_cfg.num_classes or int(splits["train"].labels.max()) + 1
    return [str(i) for i in range(count)]
