"""Small generated JPEG trees in the MiniPlaces, ImageNet and image-folder layouts.

Each class gets its own colour (plus noise), so a tiny model can learn them.
Also writers for the awkward files real datasets contain (corrupt, truncated,
grayscale, CMYK, PNG with alpha).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

# Real MiniPlaces category paths, nested ones (colliding leaves) included.
MINIPLACES_CATEGORIES = [
    "/a/abbey", "/b/bakery/shop", "/c/church/outdoor", "/m/museum/indoor", "/s/stage/indoor",
    "/m/market/outdoor", "/b/bedroom", "/k/kitchen", "/t/temple/east_asia", "/s/swimming_pool/outdoor",
]


def display_name(category: str) -> str:
    """`/b/bakery/shop` -> `bakery/shop` (the path after the letter folder)."""
    return category.strip("/").split("/", 1)[1]


def class_image(label: int, size: int, rng: np.random.Generator, num_classes: int) -> Image.Image:
    hue = np.array([np.sin(label * 2.1), np.sin(label * 2.1 + 2.0), np.sin(label * 2.1 + 4.0)]) * 0.4 + 0.5
    img = np.ones((size, size, 3)) * hue * 255 + rng.normal(0, 12, (size, size, 3))
    stripe = (np.arange(size) * (1 + label % 4) // max(size // 4, 1)) % 2
    img[:, stripe.astype(bool)] *= 0.7
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def save_jpeg(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=92)


def make_miniplaces(
    root, classes: int | Sequence[str] = 4, per_class: int = 4, val: int = 2, test: int = 4, size: int = 16,
    list_dir: str = "", crlf: bool = False, seed: int = 0,
) -> dict:
    """Write a development-kit tree: images/{train,val,test}, categories.txt, train.txt, val.txt.

    `classes`: a count (the first N of MINIPLACES_CATEGORIES, sorted) or category paths like
    `/b/bakery/shop`; ids are their alphabetical order. `val` images per class, `test` in all.
    `list_dir="data"` puts the list files under root/data/. Returns the class display names
    and the ids per split.
    """
    root = Path(root)
    cats = sorted(MINIPLACES_CATEGORIES[:classes] if isinstance(classes, int) else classes)
    rng = np.random.default_rng(seed)
    nl = "\r\n" if crlf else "\n"
    lists = root / list_dir if list_dir else root
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "categories.txt").write_text("".join(f"{c} {i}{nl}" for i, c in enumerate(cats)) + nl, newline="")
    train_lines, val_lines, test_ids = [], [], []
    for label, cat in enumerate(cats):
        for k in range(1, per_class + 1):
            rel = f"train{cat}/{k:08d}.jpg"
            save_jpeg(class_image(label, size, rng, len(cats)), root / "images" / rel)
            train_lines.append(f"{rel} {label}")
    labels = [i % len(cats) for i in range(val * len(cats))]
    for k, label in enumerate(labels, start=1):
        rel = f"val/{k:08d}.jpg"
        save_jpeg(class_image(label, size, rng, len(cats)), root / "images" / rel)
        val_lines.append(f"{rel} {label}")
    for k in range(1, test + 1):
        rel = f"test/{k:08d}.jpg"
        save_jpeg(class_image(int(rng.integers(len(cats))), size, rng, len(cats)), root / "images" / rel)
        test_ids.append(rel)
    (lists / "train.txt").write_text(nl.join(train_lines) + nl, newline="")
    (lists / "val.txt").write_text(nl.join(val_lines) + nl, newline="")
    return {
        "class_names": [display_name(c) for c in cats],
        "train": [line.rsplit(" ", 1)[0] for line in train_lines],
        "val": [line.rsplit(" ", 1)[0] for line in val_lines],
        "val_labels": labels,
        "test": test_ids,
    }


def make_imagefolder(
    root, classes: Sequence[str] = ("cat", "dog", "fox"), per_class: int = 4, splits: Sequence[str] = ("train", "val"),
    size: int = 16, ext: str = ".jpg", seed: int = 0,
) -> Path:
    """`root/<split>/<class>/<class>_<k><ext>` for each split (sorted class names = labels)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, name in enumerate(sorted(classes)):
            for k in range(per_class):
                save_jpeg(class_image(label, size, rng, len(classes)), root / split / name / f"{name}_{k:04d}{ext}")
    return root


def make_imagenet(root, wnids: Sequence[str] = ("n01440764", "n01443537", "n01484850"), per_class: int = 3,
                  size: int = 16) -> Path:
    """ImageNet layout after valprep: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG."""
    return make_imagefolder(root, wnids, per_class, ("train", "val"), size, ext=".JPEG")


# ---- awkward files -------------------------------------------------------------------------
def write_corrupt(path: Path) -> None:
    Path(path).write_bytes(b"this is not an image at all" * 4)


def write_truncated(path: Path) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 3])


def write_grayscale(path: Path, size: int = 16) -> None:
    Image.fromarray(np.full((size, size), 128, np.uint8), "L").save(path, format="JPEG")


def write_cmyk(path: Path, size: int = 16) -> None:
    Image.new("CMYK", (size, size), (0, 128, 255, 10)).save(path, format="JPEG")


def write_png_alpha(path: Path, size: int = 16) -> None:
    """A PNG with an alpha channel saved under a .jpg name (as in ImageNet's one odd file)."""
    Image.new("RGBA", (size, size), (10, 200, 30, 100)).save(path, format="PNG")
