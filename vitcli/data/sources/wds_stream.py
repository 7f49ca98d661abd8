"""`data=wds data.streaming=true`: shards read front to back as a stream (webdataset.WebDataset),
for shards that cannot be indexed or copied locally (an object store, too many to index).

What it gives up, against the indexed reader: the epoch order is a shuffled shard order plus a
shuffle buffer (`data.shuffle_buffer` samples), not a permutation of all samples, and the
augmentation of a sample depends on the worker that decodes it. A resumed run continues at
the right step count with the right lr, but with a fresh stream for the rest of the epoch:
it is NOT bitwise-resumable. Under DDP each rank reads every world-th shard (so give at least
as many shards as ranks x workers) and the training stream repeats, so every rank runs the same
number of steps. The epoch length comes from the sample counts of a wids descriptor
(`data.train=train.json`), or from reading local shards' headers. A sample the indexed reader
refuses (two images, two members of one extension) is refused when the stream reaches it.
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader

from vitcli.core.errors import UserError
from vitcli.data.arrays import EpochBatching, epoch_seed
from vitcli.data.files import BadFiles, WorkerInit, collate_skipping, resolve_num_workers
from vitcli.data.module import DataModule, eval_batch_size, train_drop_last
from vitcli.data.prefetch import device_batches
from vitcli.data.sources.shard_fetch import is_local, local_path, open_shard
from vitcli.data.sources.shard_index import IMAGE_KEYS, LABEL_KEY, resolve_split
from vitcli.data.sources.tar_members import base_plus_ext, parse_label, shard_samples, two_images, two_members
from vitcli.data.sources.wds import SPLITS, read_class_names, require, split_spec
from vitcli.data.transforms import create_file_transform


class StreamSplit:
    """The shards of a streamed split: urls and the total sample count (no per-sample index);
    `commands`: the urls are the user's own, so their `pipe:` commands may run."""
    def __init__(self, urls: list[str], total: int, image_keys: tuple[str, ...], label_key: str, labelled: bool,
                 commands: bool = False):
        self.urls, self.total, self.commands = urls, total, commands
        self.image_keys, self.label_key, self.labelled = image_keys, label_key, labelled

    labels = None  # not known before the stream is read

    def __len__(self) -> int:
        return self.total


def shard_name(url: Any) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def unique_members(files: Iterator[dict]) -> Iterator[dict]:
    """Tar members as webdataset's group_by_keys will group them (consecutive names with one key,
    within a shard), a sample with two members of one extension refused as the indexed reader
    refuses it (tar_members.py) instead of group_by_keys' bare ValueError."""
    where, seen = None, {}
    for f in files:
        key, ext = base_plus_ext(f["fname"]) if f and "fname" in f else (None, None)
        if key is None or ext is None:
            yield f
            continue
        if (f.get("__url__"), key) != where:
            where, seen = (f.get("__url__"), key), {}
        ext = ext.lower()
        if ext in seen:
            raise two_members(shard_name(f.get("__url__")), key, ext, seen[ext], f["fname"])
        seen[ext] = f["fname"]
        yield f


def refusal_kept(exn: Exception) -> bool:
    """webdataset's handler for its tar reader, which appends ' @ <stream>' and the url to whatever
    is raised while a shard is read: a refusal of ours (a stream cut short, shard_fetch.WholeBody)
    is raised again as its own line; anything else as webdataset raises it."""
    if isinstance(exn, UserError):
        raise UserError(str(exn.args[0]).split(" @ ", 1)[0]) from None
    raise exn


def decode_sample(sample: dict, split: StreamSplit, transform: Callable) -> tuple:
    """A streamed sample -> (image tensor or None, label, key, error) as collate_skipping expects."""
    key = sample.get("__key__", "?")
    images = [k for k in split.image_keys if k in sample]
    if len(images) > 1:  # the indexed reader refuses it too: which one is meant is the user's call
        raise two_images(shard_name(sample.get("__url__")), key, f"{key}.{images[0]}", f"{key}.{images[1]}", images[0])
    try:
        data = sample[images[0]] if images else None
        if data is None:
            raise OSError(f"no image member ({'/'.join(split.image_keys)})")
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = img.convert("RGB")
        label = stream_label(sample, split)
    except (OSError, SyntaxError, ValueError) as err:
        return None, -1, key, f"{type(err).__name__}: {err}"[:120]
    return transform(img), label, key, None


def stream_label(sample: dict, split: StreamSplit) -> int:
    """The label of a streamed sample, parsed as the indexed reader parses it."""
    key = split.label_key
    json_field = key[5:] if key.startswith("json.") else None
    want = "json" if json_field else key
    if want not in sample:
        if split.labelled:
            raise UserError(f"sample '{sample.get('__key__')}' has no '{want}' member; set data.label_key=")
        return -1
    return parse_label(bytes(sample[want]), json_field, f"sample '{sample.get('__key__')}'")


def open_shards(urls: Iterator[dict], commands: bool) -> Iterator[dict]:
    """dict(url) -> dict(url, stream) for webdataset's tar expander, opened without a shell."""
    for item in urls:
        stream = open_shard(item["url"], commands)
        try:
            yield {**item, "stream": stream}
        finally:
            stream.close()


class StreamLoader(EpochBatching):
    """Batches (x on `device`, y) from a webdataset pipeline; len() from the sample counts."""
    def __init__(self, split: StreamSplit, transform: Callable, batch_size: int, bad: BadFiles, shuffle: bool,
                 drop_last: bool, num_workers: Any, seed: int, device: str, shuffle_buffer: int = 2000):

        self.split, self.transform, self.batch_size, self.bad = split, transform, batch_size, bad
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.num_workers = resolve_num_workers(num_workers)
        self.device, self.shuffle_buffer = torch.device(device), shuffle_buffer

    @property
    def ids(self) -> list[str]:
        raise UserError("data.streaming=true has no sample ids up front; predict and eval reports need the "
                        "indexed reader (data.streaming=false)")

    def pipeline(self):
        import webdataset as wds
        from webdataset.tariterators import group_by_keys, tar_file_expander

        urls = self.split.urls[self.rank::self.world] if self.world > 1 else list(self.split.urls)
        if not urls:
            raise UserError(f"rank {self.rank} has no shard: give at least {self.world} shards for {self.world} ranks")
        seed = epoch_seed(self.seed, self.epoch, self.start_step, self.rank)
        # webdataset.WebDataset's stages, with our opener (its own hands http urls to `curl` in a shell)
        stages = [wds.SimpleShardList(urls), wds.split_by_worker]
        if self.shuffle:
            stages.append(wds.filters.shuffle(len(urls), seed=seed))
        stages += [partial(open_shards, commands=self.split.commands),
                   wds.filters.pipelinefilter(tar_file_expander)(handler=refusal_kept), unique_members,
                   wds.filters.pipelinefilter(group_by_keys)(handler=wds.reraise_exception)]
        if self.shuffle and self.shuffle_buffer > 0:
            stages.append(wds.filters.shuffle(self.shuffle_buffer, seed=seed))
        ds = wds.DataPipeline(*stages, wds.filters.map(partial(decode_sample, split=self.split, transform=self.transform)))
        return ds.repeat() if self.shuffle else ds  # training repeats, so every rank yields len(self) batches

    def __iter__(self) -> Iterator[Any]:


        steps = len(self) - self.start_step
        self.start_step = 0
        loader = DataLoader(self.pipeline(), batch_size=self.batch_size, num_workers=self.num_workers,
                            collate_fn=collate_skipping, pin_memory=self.device.type == "cuda",
                            worker_init_fn=WorkerInit(),  # stop signals are the main process's (SLURM)
                            generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))

        def host():
            try:
                for n, (x, y, bad) in enumerate(loader):
                    for key, err in bad:
                        self.bad.add(str(key), err)
                    if x is not None:
                        yield x, y
                    if self.shuffle and n + 1 >= steps:  # training repeats; evaluation ends with its shards
                        break
            except UserError as err:  # from a worker, torch wraps the one line in the worker's traceback
                raise UserError(worker_message(err)) from None
            finally:
                self.bad.warn_new()

        yield from device_batches(host(), self.device)


def worker_message(err: UserError) -> str:
    """The message of a UserError raised in a DataLoader worker: torch re-raises it in the main
    process with the worker's traceback before it ('Caught UserError in DataLoader worker ...').

    >>> worker_message(UserError("Caught UserError in DataLoader worker process 0.\\nOriginal Traceback:\\n"
    ...                          "  File x\\nvitcli.core.errors.UserError: shard s.tar: bad"))
    'shard s.tar: bad'
    """
    text = str(err).rstrip()
    if not text.startswith("Caught UserError"):
        return text
    return text.splitlines()[-1].split("UserError: ", 1)[-1]


def split_total(desc: Any, split: str, image_keys: tuple[str, ...], label_key: str) -> int:
    """Samples in a streamed split: the descriptor's counts, else read from local shards' headers."""
    if all(c is not None for c in desc.counts):
        return int(sum(desc.counts))
    if all(is_local(u) for u in desc.urls):
        return sum(len(shard_samples(local_path(u), image_keys, label_key, False).ids) for u in desc.urls)
    raise UserError(f"data.streaming=true needs the sample count of data.{split}: give a wids .json "
                    "(shardlist with nsamples) instead of a pattern of remote shards")


def create_stream_data(cfg: Any, device: str, train: bool) -> DataModule:
    """data=wds with data.streaming=true: one StreamLoader per split (see the module doc)."""
    require("webdataset", "wds")
    d = cfg.data
    for setting, off in (("class_balance", str(d.class_balance) == "none"), ("minival_fraction", not d.minival_fraction)):
        if not off:
            raise UserError(f"data.{setting} needs every label up front; use it with data.streaming=false")
    image_keys = tuple(k.strip().lower() for k in (d.image_key or ";".join(IMAGE_KEYS)).split(";") if k.strip())
    label_key = d.label_key or LABEL_KEY
    splits = {}
    for split in SPLITS:
        spec = split_spec(d, split)
        if spec is None:
            if split != "test":
                raise UserError(f"data=wds needs data.{split}= (shard pattern, list or wids .json)")
            continue
        desc = resolve_split(spec, d.root, split)
        splits[split] = StreamSplit(desc.urls, split_total(desc, split, image_keys, label_key), image_keys,
                                    label_key, split != "test", desc.commands)
    first = splits["train"].urls[0]
    beside = Path(local_path(first)).parent / "classes.txt" if is_local(first) else None
    if d.classes or (beside and beside.is_file()):
        names = read_class_names(d.classes or str(beside))
    elif d.num_classes:
        names = [str(i) for i in range(d.num_classes)]
    else:
        raise UserError("data.streaming=true cannot count the classes before reading: set data.classes=FILE "
                        "or data.num_classes=N")
    info: dict[str, Any] = {"data_format": "stream", "skipped_files": 0}
    loaders = {}
    for name, split in splits.items():
        is_train = name == "train"
        bs = d.batch_size if is_train else eval_batch_size(d)
        loaders[name] = StreamLoader(split, create_file_transform(cfg.augmentation, d, train=is_train and train), bs,
                                     BadFiles(name, len(split), info, d.max_bad_fraction), shuffle=is_train,
                                     drop_last=is_train and train_drop_last(len(split), bs), num_workers=d.num_workers,
                                     seed=cfg.trainer.seed, device=device, shuffle_buffer=d.shuffle_buffer)
        info[f"{name}_samples"] = len(split)
    return DataModule("wds", len(names), names, loaders, info)
