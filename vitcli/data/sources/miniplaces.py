"""MiniPlaces development-kit layout (see shared/miniplaces.md).

Labels come from the list files, never from folder names: 13 categories are
nested one level deeper and their leaf names collide (`church/outdoor`,
`market/outdoor`). Display names are the path after the letter folder.
Every sample is keyed by its split-prefixed path (`val/00000001.jpg`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitcli.core.errors import UserError
from vitcli.data.files import IMG_EXTENSIONS, FileSplit

LAYOUT = "images/{train,val,test}/ with categories.txt, train.txt, val.txt in the root or under data/"


def find_list_dir(root: Path) -> Path:
    if not root.is_dir():
        raise UserError(f"data.root={root} does not exist; expected the MiniPlaces development kit: {LAYOUT}")
    for cand in (root, root / "data"):
        if (cand / "categories.txt").is_file():
            return cand
    raise UserError(f"no categories.txt in {root} or {root / 'data'}; expected the MiniPlaces layout: {LAYOUT}")


def list_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF and trailing blank lines tolerated."""
    if not path.is_file():
        raise UserError(f"list file {path} is missing; expected the MiniPlaces layout: {LAYOUT}")
    text = path.read_text(encoding="utf-8")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_line(path: Path, n: int, line: str) -> tuple[str, int]:
    """`<name or path> <int>`, split on the LAST space (names never hold one, but be safe)."""
    parts = line.rsplit(None, 1)
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise UserError(f"{path}:{n}: malformed line {line!r}; expected '<path> <integer label>'")
    return parts[0], int(parts[1])


def read_categories(path: Path) -> list[str]:
    """Display names indexed by label: `/b/bakery/shop 10` -> names[10] = 'bakery/shop'."""
    entries = [(n, *parse_line(path, n, line)) for n, line in list_lines(path)]
    if not entries:
        raise UserError(f"{path} lists no categories")
    names: dict[int, str] = {}
    for n, cat, idx in entries:
        if idx in names or not 0 <= idx < len(entries):
            raise UserError(f"{path}:{n}: category id {idx} is duplicated or outside 0..{len(entries) - 1}")
        parts = cat.strip("/").split("/", 1)
        names[idx] = parts[1] if len(parts) == 2 and len(parts[0]) == 1 else cat.strip("/")
    return [names[i] for i in range(len(entries))]


def read_split_list(path: Path, images: Path, split: str, num_classes: int) -> FileSplit:
    paths, labels, ids = [], [], []
    for n, line in list_lines(path):
        rel, label = parse_line(path, n, line)
        if not 0 <= label < num_classes:
            raise UserError(f"{path}:{n}: label {label} is outside 0..{num_classes - 1} (categories.txt)")
        if not rel.startswith(f"{split}/"):
            rel = f"{split}/{rel}"  # key by the split-prefixed path even when the list omits it
        paths.append(str(images / rel))
        labels.append(label)
        ids.append(rel)
    if not paths:
        raise UserError(f"{path} lists no images")
    if not Path(paths[0]).is_file():  # a wrong root, not one lost file (those are skipped and counted)
        raise UserError(f"{paths[0]} (first entry of {path}) does not exist; expected the MiniPlaces layout: {LAYOUT}")
    return FileSplit(paths, np.asarray(labels, dtype=np.int64), ids)


def enumerate_unlabeled(images: Path, split: str) -> FileSplit:
    """Every image under images/<split>/, sorted, label -1 (MiniPlaces test has no list file)."""
    folder = images / split
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS) if folder.is_dir() else []
    ids = [p.relative_to(images).as_posix() for p in files]
    return FileSplit([str(p) for p in files], np.full(len(files), -1, dtype=np.int64), ids)


def check_no_empty_class(split: FileSplit, class_names: list[str], where: str) -> None:
    counts = np.bincount(split.labels[split.labels >= 0], minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UserError(f"{len(empty)} class(es) have no images in {where}, e.g. '{empty[0]}'; every class needs some")


def load_miniplaces(data_cfg) -> tuple[dict[str, FileSplit], list[str]]:
    """Splits train, val (labelled from list files) and test (enumerated, unlabelled)."""
    if not data_cfg.root:
        raise UserError("data=miniplaces needs data.root=DIR (the untarred development kit)")
    root = Path(data_cfg.root).expanduser()
    lists = find_list_dir(root)
    images = root / "images"
    if not images.is_dir():
        raise UserError(f"{images} does not exist; expected the MiniPlaces layout: {LAYOUT}")
    class_names = read_categories(lists / "categories.txt")
    splits = {}  # canonical key (train/val/test) -> split read from the configured names
    for key, split in (("train", data_cfg.train_split), ("val", data_cfg.val_split)):
        splits[key] = read_split_list(lists / f"{split}.txt", images, split, len(class_names))
    check_no_empty_class(splits["train"], class_names, str(lists / f"{data_cfg.train_split}.txt"))
    if data_cfg.test_split:
        test = enumerate_unlabeled(images, data_cfg.test_split)
        if len(test):
            splits["test"] = test
    return splits, class_names
