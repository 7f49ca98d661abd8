"""Dataset sources, one module each (digits, synthetic, imagefolder + imagenet, miniplaces), and
the image-file datasets (miniplaces, imagefolder, imagenet) as a DataModule, from files or a pack.

`data.format=files` decodes JPEGs per sample in a torch DataLoader (timm
transforms); `data.format=memory` (and `auto`, when the images qualify: in_memory.py)
decodes them once into arrays; `data.format=packed` memory-maps the arrays `vitcli
prepare` wrote. Arrays feed the batched ArrayLoader (augmentation on the device).
"""

from __future__ import annotations

from typing import Any

from vitcli.core.errors import UserError
from vitcli.data.arrays import stratified_split, subset
from vitcli.data.in_memory import hold_in_memory
from vitcli.data.loaders import array_loader, file_loader
from vitcli.data.module import DataModule, check_num_classes
from vitcli.data.pack import load_packed
from vitcli.data.sources.imagefolder import load_imagefolder, load_imagenet
from vitcli.data.sources.miniplaces import load_miniplaces

# decoded one sample at a time by FileLoader: image files, WebDataset shards, Hugging Face datasets
FILE_SOURCES = ("miniplaces", "imagefolder", "imagenet", "wds", "hf")


def load_file_source(data_cfg: Any):
    """(splits keyed train/val[/test], class display names) from the files on disk."""
    if data_cfg.name == "miniplaces":
        return load_miniplaces(data_cfg)
    if data_cfg.name == "wds":  # wds / hf: imported here, as they need the optional `data` extra
        from vitcli.data.sources.wds import load_wds

        return load_wds(data_cfg)
    if data_cfg.name == "hf":
        from vitcli.data.sources.hf import load_hf

        return load_hf(data_cfg)

    return load_imagenet(data_cfg) if data_cfg.name == "imagenet" else load_imagefolder(data_cfg)


def carve_minival(splits: dict, fraction: float, seed: int) -> dict:
    """Move a stratified `fraction` of train into a `minival` split (ids keep their train/ prefix)."""
    if not fraction:
        return splits

    if not 0.0 < fraction < 1.0:
        raise UserError(f"data.minival_fraction={fraction} must be between 0 and 1 (0 turns it off)")
    try:
        train_idx, mini_idx = stratified_split(splits["train"].labels, fraction, seed)
    except ValueError as err:
        raise UserError(f"data.minival_fraction={fraction} cannot carve a stratified minival "
                        f"from train: {err}") from err
    return {**splits, "train": subset(splits["train"], train_idx), "minival": subset(splits["train"], mini_idx)}


def create_file_data(cfg: Any, device: str, train: bool) -> DataModule:
    """A file dataset's DataModule: decoded per sample (data.format=files), once into memory
    (memory; auto when the images qualify) or from a pack (packed)."""
    data_cfg = cfg.data
    if data_cfg.format == "packed":
        splits, names, manifest = load_packed(data_cfg)
        skipped = {f"skipped_files_{k}": v.get("skipped", 0) for k, v in manifest["splits"].items()}
        info: dict[str, Any] = {"data_format": "packed", "packed_size": manifest["size"], **skipped,
                                "skipped_files": sum(skipped.values())}
    elif data_cfg.name == "wds" and data_cfg.streaming:
        from vitcli.data.sources.wds_stream import create_stream_data

        return create_stream_data(cfg, device, train)
    else:  # files, memory, auto (the schema's DataFormat allows nothing else)
        splits, names = load_file_source(data_cfg)
        info = {"data_format": "files", "skipped_files": 0}
        held = hold_in_memory(cfg, splits) if data_cfg.format in ("memory", "auto") else None
        if held is not None:
            splits, info = held
    check_num_classes(data_cfg, len(names), str(data_cfg.root or data_cfg.dataset or data_cfg.name))
    splits = carve_minival(splits, data_cfg.minival_fraction, data_cfg.split_seed)
    if info["data_format"] in ("packed", "memory"):
        loaders = {k: array_loader(cfg, k, split, device, train) for k, split in splits.items()}
    else:
        loaders = {k: file_loader(cfg, k, split, device, train, info) for k, split in splits.items()}
    info.update({f"{k}_samples": len(v) for k, v in splits.items()})
    return DataModule(data_cfg.name, len(names), names, loaders, info)
