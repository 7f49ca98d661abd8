"""An ensemble job: resolve member runs, load their id-aligned predictions (predicting the
missing ones, and those another checkpoint or TTA made), weight and combine them, score, and
write the report and predictions.

The arithmetic (softmax, voting, greedy selection) lives in vitcli/tasks/ensemble_methods.py.
"""

from __future__ import annotations

import glob
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from vitcli.core import runs
from vitcli.core.errors import UserError
from vitcli.core.io import write_json
from vitcli.core.predictions import Predictions, load_predictions, topk_accuracy
from vitcli.data import create_data
from vitcli.models.run_model import checkpoint_key
from vitcli.engine.tracking import attach_to_run
from vitcli.tasks import submission as sub
from vitcli.tasks.ensemble_methods import (
    align,
    check_classes,
    check_finite,
    combine,
    greedy_select,
)
from vitcli.tasks.predict import predict_split

log = logging.getLogger("vitcli")


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _runs_under(path: Path) -> list[Path]:
    """A run dir itself, or every run dir below a directory (a multirun sweep), in natural order."""
    return sorted((d for d in runs.find_run_dirs(path) if (d / runs.CONFIG).is_file()), key=_natural)


def resolve_runs(spec: Any) -> list[Path]:
    """runs=[a,b] | runs=glob | runs=multirun_dir -> distinct run dirs (one-line errors otherwise)."""
    entries = list(spec) if isinstance(spec, (list, tuple, ListConfig)) else [spec]
    out: list[Path] = []
    for entry in map(str, entries):
        matches = sorted(glob.glob(entry), key=_natural) if glob.has_magic(entry) else [entry]
        if not matches:
            raise UserError(f"runs: the pattern {entry} matches nothing")
        found = [run for m in matches if Path(m).is_dir() for run in _runs_under(Path(m).expanduser())]
        if not found and not glob.has_magic(entry) and (Path(entry) / runs.PREDICTIONS).is_dir():
            found = [Path(entry)]  # predictions only, e.g. a probe: RUN/probe/linear
        if len(matches) == 1 and not Path(matches[0]).is_dir():
            raise UserError(f"runs: {entry} is not a directory (pass run dirs, a glob or a multirun dir)")
        if not found:  # a glob may match other things too; it only has to match some runs
            raise UserError(f"runs: {entry} holds no vitcli run (no config.yaml in it or below it)")
        out += [p for p in found if p not in out]
    if len(out) < 2:
        raise UserError(f"an ensemble needs at least two members; runs={list(map(str, entries))} gave {len(out)}")
    return out


def stale_reason(source: dict[str, Any], key: str, tta: str) -> str | None:
    """Why a saved prediction set is not what was asked (None: it is): other weights or another TTA."""
    if not source.get("checkpoint_key"):
        return "records no checkpoint content key (written by an older vitcli)"
    if source["checkpoint_key"] != key:
        return (f"was made by other weights ({source.get('checkpoint')}: {source['checkpoint_key']}) than "
                f"the checkpoint asked for ({key})")
    if str(source.get("tta", "none")) != str(tta):
        return f"was made with eval.tta={source.get('tta')}, not eval.tta={tta}"
    return None


def member_predictions(run: Path, split: str, cfg: DictConfig):
    """The run's predictions/<split>.npz when the asked checkpoint and TTA made it, else predicted now
    (predict_missing=true) or refused. A member without checkpoints (a probe's predictions) is taken
    as it is: there are no weights to compare them with."""
    path = runs.predictions_path(run, split)
    has_config = (run / runs.CONFIG).is_file()
    again = f"`vitcli predict run={run} split={split} checkpoint={cfg.checkpoint} eval.tta={cfg.eval.tta}`"
    if path.is_file():
        preds = load_predictions(path)
        stale = stale_reason(preds.source, checkpoint_key(run, str(cfg.checkpoint)), str(cfg.eval.tta)) \
            if (run / runs.CHECKPOINTS).is_dir() else None
        if stale is None:
            return preds
        if not cfg.predict_missing:
            raise UserError(f"{path} {stale}; run {again} first (or set predict_missing=true)")
        log.info(f"{path} {stale}: predicting it again")
    elif not cfg.predict_missing or not has_config:
        raise UserError(f"{run} has no predictions/{split}.npz; run {again} first (or set predict_missing=true)")
    else:
        log.info(f"predicting {run} on split {split} (no predictions/{split}.npz yet)")
    preds, _, _ = predict_split(run, split, cfg.checkpoint, cfg.device, cfg.batch_size, cfg.eval.tta,
                                cfg.eval.crop_fraction, submission="never", precision=cfg.precision,
                                data_check=cfg.data_check)
    return preds


def load_split(members: list[Path], split: str, cfg: DictConfig):
    """Validated, id-aligned predictions of every member on a split: (list of Predictions, (M, N, C) stack)."""
    preds = []
    for run in members:
        p = member_predictions(run, split, cfg)
        check_finite(p.logits, f"{run}/predictions/{split}.npz")
        preds.append(p)
    ref = preds[0]
    for run, p in zip(members[1:], preds[1:]):
        check_classes(ref.class_names, p.class_names, str(members[0]), str(run))
        order = align(ref.ids, p.ids, str(members[0]), str(run))
        if order is not None:
            p.logits = p.logits[order]
            p.ids = list(ref.ids)
            p.labels = None if p.labels is None else p.labels[order]
        if ref.labels is not None and p.labels is not None and not np.array_equal(ref.labels, p.labels):
            i = int(np.flatnonzero(ref.labels != p.labels)[0])
            raise UserError(f"{members[0]} and {run} label {split} differently (sample {ref.ids[i]!r}: "
                            f"{int(ref.labels[i])} vs {int(p.labels[i])}); their data differs: predict them on "
                            "the same data")
    return preds, np.stack([p.logits for p in preds])


def default_split(first: Path) -> str:
    """test when the first member has test predictions or its data has a test split, else val."""
    if runs.predictions_path(first, "test").is_file():
        return "test"
    if not (first / runs.CONFIG).is_file():  # a predictions-only member (a probe)
        return "val"
    data = create_data(runs.load_run_config(runs.require_run_dir(first)), device="cpu", train=False)
    return "test" if "test" in data.loaders else "val"


def member_temperatures(members: list[Path], given: Any, sources: list[dict[str, Any]]) -> list[float] | None:
    """temperatures=[...] as given, else the temperature each member stored for the weights and TTA its
    predictions came from (eval.calibrate=temperature; 1 for members without one), or None when no
    member has one."""
    if given is not None:
        return [float(t) for t in given]
    stored = [runs.read_temperature(m, s.get("checkpoint_key"), str(s.get("tta", "none")))
              for m, s in zip(members, sources)]
    return None if all(t is None for t in stored) else [1.0 if t is None else t for t in stored]


def member_weights(cfg: DictConfig, wstack: np.ndarray, labels: np.ndarray,
                   temps: list[float] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Weights per member, and what chose them (for the report)."""
    m = len(wstack)
    if cfg.weights is not None:
        return np.asarray(cfg.weights, dtype=np.float64), {"weights_by": "given"}
    if cfg.method == "weighted_vote":
        return np.array([topk_accuracy(w, labels, 1) / 100 for w in wstack]), {"weights_by": f"top-1 on {cfg.weights_from}"}
    if cfg.method == "greedy":
        res = greedy_select(wstack, labels, cfg.greedy_steps, temps, cfg.greedy_metric)
        return res.counts.astype(np.float64), {"weights_by": f"greedy ({cfg.greedy_metric}) on {cfg.weights_from}",
                                               "greedy_history": res.history, "greedy_best_round": res.best_round}
    return np.ones(m), {"weights_by": "uniform"}


def scores(logits: np.ndarray, labels: np.ndarray | None) -> dict[str, float | None]:

    if labels is None:
        return {"top1": None, "top5": None}
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5)}


def report_table(names: list[str], weights: np.ndarray, rows: list[dict[str, Any]], ens: dict[str, Any],
                 cfg: DictConfig, split: str):
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    table = Table(title=f"ensemble: {cfg.method} on {split} (weights from {cfg.weights_from})")
    table.add_column("member")
    table.add_column("weight", justify="right")
    for s in dict.fromkeys([cfg.weights_from, split]):
        table.add_column(f"{s} top-1", justify="right")
        table.add_column(f"{s} top-5", justify="right")
    keys = list(dict.fromkeys([cfg.weights_from, split]))
    w = weights / weights.sum()
    for name, wi, row in zip(names, w, rows):
        table.add_row(name, f"{wi:.3f}", *(pct(row[s][k]) for s in keys for k in ("top1", "top5")))
    table.add_section()
    table.add_row("ensemble", "1.000", *(pct(ens[s][k]) for s in keys for k in ("top1", "top5")), style="bold")
    return table


def write_outputs(out: Path, table, record: dict[str, Any], preds, cfg: DictConfig, data_name: str | None) -> list[Path]:


    out.mkdir(parents=True, exist_ok=True)
    console = Console(record=True, width=120)
    console.print(table)
    (out / "report.txt").write_text(console.export_text())
    write_json(out / "ensemble.json", record)
    written = [out / "report.txt", out / "ensemble.json", preds.save(runs.predictions_path(out, record['split']))]
    if sub.should_write(cfg.submission, data_name, preds.ids):
        written += sub.write_submissions(out, record["split"], preds.ids, preds.logits)
    return written


def run_ensemble_job(cfg: DictConfig) -> dict[str, Any]:

    if OmegaConf.is_missing(cfg, "runs"):
        raise UserError("runs=[...] is missing: vitcli ensemble runs=[RUN_DIR,RUN_DIR] (or a glob, or a multirun dir)")
    members = resolve_runs(cfg.runs)
    names = [str(p) for p in members]
    split = cfg.split or default_split(members[0])
    tpreds, tstack = load_split(members, split, cfg)
    if cfg.weights_from == split:
        wpreds, wstack = tpreds, tstack
    else:
        wpreds, wstack = load_split(members, cfg.weights_from, cfg)
    wlabels = wpreds[0].labels
    if wlabels is None:
        raise UserError(f"weights_from={cfg.weights_from} has no labels in {members[0]}; use a labelled split (val, minival)")
    temps = member_temperatures(members, cfg.temperatures, [p.source for p in tpreds])
    weights, how = member_weights(cfg, wstack, wlabels, temps)
    logits = combine(cfg.method, tstack, weights, temps)
    tlabels = tpreds[0].labels
    rows = [{cfg.weights_from: scores(w.logits, wlabels), split: scores(t.logits, tlabels)}
            for w, t in zip(wpreds, tpreds)]
    ens = {cfg.weights_from: scores(combine(cfg.method, wstack, weights, temps), wlabels),
           split: scores(logits, tlabels)}
    source = {"ensemble": cfg.method, "members": names, "weights": (weights / weights.sum()).tolist(),
              "temperatures": temps,
              "split": split, "weights_from": cfg.weights_from}
    preds = Predictions(logits, tpreds[0].ids, tpreds[0].class_names, tlabels, source)
    record = {**source, **how, "members_scores": dict(zip(names, rows)), "ensemble_scores": ens,
              "member_sources": [p.source for p in tpreds], "config": OmegaConf.to_container(cfg, resolve=True)}
    table = report_table(names, weights, rows, ens, cfg, split)
    out = Path(cfg.out or Path(cfg.runs_root) / "ensembles" / "latest")
    written = write_outputs(out, table, record, preds, cfg, tpreds[0].source.get("data"))
    if cfg.method == "greedy":
        log.info(f"greedy kept round {how['greedy_best_round']}: counts {dict(zip(names, map(int, weights)))}")
    for path in written:
        log.info(f"wrote {path}")
    for member in members:  # each member's trackers get the ensemble's scores and report
        attach_to_run(member, "ensemble", ens[split], [p for p in written if p.suffix != ".npz"], tag=split, base=out)
    return record


