"""`vitcli probe`: score a backbone's frozen features with k-NN, linear and few-shot probes.

One pass of the frozen model over every split (features cached, tasks/probe_features.py),
then the probe arithmetic (tasks/probe_methods.py). Output, beside the run's own files:
<out>/probe/<method>.json (top1/top5 on val, per-split metrics, the settings chosen) and
<out>/probe/<method>/predictions/<split>.npz in the run-dir predictions format, so
`vitcli ensemble runs=[RUN,RUN/probe/linear]` combines probes with fine-tuned runs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from vitcli.core import runs
from vitcli.core.errors import UserError
from vitcli.core.io import write_json
from vitcli.core.predictions import Predictions, topk_accuracy
from vitcli.core.runtime import Runtime
from vitcli.data import create_data
from vitcli.data.normalization import resolve_normalization
from vitcli.engine.tracking import attach_to_run
from vitcli.models.factory import create_model
from vitcli.tasks import probe_methods as pm
from vitcli.tasks.probe_features import (
    FeatureSet,
    cache_key,
    cached_features,
    feature_fn,
    weights_hash,
)

log = logging.getLogger("vitcli")

SPLITS = ("train", "minival", "val", "test")


def _load_backbone(cfg: Any, out_dir: Path):
    """(model, data, runtime, class names, where the outputs go, a name for messages)."""
    if cfg.run:
        from vitcli.models.run_model import load_run_model

        run_dir = runs.require_run_dir(cfg.run)
        run_cfg, model, state, runtime = load_run_model(run_dir, str(cfg.checkpoint), cfg.trainer.device, cfg.precision)
        data = create_data(run_cfg, device=str(runtime.device), train=False)
        # a probe learns the data's labels, whatever classes the run's head was trained on
        names = [str(n) for n in data.class_names]
        if state.get("class_names") and [str(n) for n in state["class_names"]] != names:
            log.info(f"probe of {run_dir}: its checkpoint records other classes than its data has now; the probe "
                     "learns and names the data's")
        return model, data, runtime, names, run_dir, f"run {run_dir}", run_cfg.data.img_size

    resolve_normalization(cfg)
    runtime = Runtime.create(cfg.trainer.device, cfg.precision or cfg.trainer.precision)
    data = create_data(cfg, device=str(runtime.device), train=False)
    model = create_model(cfg.model, data.num_classes, cfg.regularization).to(runtime.device).eval()
    return model, data, runtime, list(data.class_names), out_dir, f"model={cfg.model.name}", cfg.data.img_size


def run_probe(cfg: Any, out_dir: str | Path) -> dict[str, Any]:
    """Extract (or reuse) the features and run probe.method; returns the JSON it writes."""
    start = time.time()
    p = cfg.probe
    model, data, runtime, class_names, out, where, img_size = _load_backbone(cfg, Path(out_dir))
    splits = {s: data.loader(s) for s in SPLITS if s in data.loaders}
    if "train" not in splits or "val" not in splits:
        raise UserError(f"{where}: a probe needs a labelled train and val split (found {', '.join(splits)})")
    fn = feature_fn(model, str(p.layers), int(p.blocks), where)
    key = cache_key(weights_hash(model), str(p.layers), int(p.blocks), int(img_size))
    meta = {"source": where, "layers": str(p.layers), "blocks": int(p.blocks), "img_size": int(img_size)}
    feats = cached_features(out / runs.PROBE / "features" / key, splits, fn, runtime, data.ids, meta)
    for split in ("train", "val"):
        if not feats[split].labelled:
            raise UserError(f"{where}: split {split} has unlabelled samples; a probe needs its labels")
    select = "minival" if "minival" in feats and feats["minival"].labelled else "val"
    method = str(cfg.method)
    scores, details = METHODS[method](feats, len(class_names), p, select)
    result: dict[str, Any] = {"method": method, "source": where, "features": key, "layers": str(p.layers),
                              "blocks": int(p.blocks), "feature_dim": int(feats["train"].features.shape[1]),
                              "train_samples": len(feats["train"].ids), "selected_on": select, **details}
    for split, split_scores in scores.items():
        fs = feats[split]
        preds = Predictions(logits=split_scores, ids=fs.ids, class_names=class_names,
                            labels=fs.labels if fs.labelled else None,
                            source={"probe": method, "source": where, "features": key, "split": split})
        preds.save(runs.probe_predictions_path(out, method, split))
        if fs.labelled:
            result.setdefault("splits", {})[split] = _metrics(split_scores, fs.labels)
    result.update(top1=result["splits"]["val"]["top1"], top5=result["splits"]["val"]["top5"],
                  seconds=round(time.time() - start, 2))
    write_json(runs.probe_result_path(out, method), result)
    attach_to_run(out, "probe", result, [runs.probe_result_path(out, method)], tag=method)  # a run's trackers
    log.info(f"probe {method} of {where}: val top1 {result['top1']:.2f}  top5 {result['top5']:.2f}  "
             f"({result['feature_dim']}-d {p.layers} features, {result['seconds']:.1f} s) -> "
             f"{runs.probe_result_path(out, method)}")
    return result


def _metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5),
            "samples": int(len(labels))}


def _eval_splits(feats: dict[str, FeatureSet]) -> list[str]:
    return [s for s in ("minival", "val", "test") if s in feats]


def knn(feats: dict[str, FeatureSet], num_classes: int, p: Any, select: str):
    """Weighted k-NN for every k in probe.k; the predictions come from the k with the best top-1 on `select`."""
    train = feats["train"]
    by_k: dict[int, dict[str, np.ndarray]] = {}
    for k in map(int, p.k):
        if k < 1:
            raise UserError(f"probe.k={list(p.k)}: every k must be at least 1")
        by_k[k] = {s: pm.votes_to_logits(pm.knn_scores(train.features, train.labels, feats[s].features,
                                                       num_classes, k, float(p.knn_temperature)))
                   for s in _eval_splits(feats)}
    per_k = {k: {s: _metrics(sc, feats[s].labels) for s, sc in splits.items() if feats[s].labelled}
             for k, splits in by_k.items()}
    best = max(per_k, key=lambda k: per_k[k][select]["top1"])
    return by_k[best], {"k": best, "temperature": float(p.knn_temperature), "per_k": per_k}


def linear(feats: dict[str, FeatureSet], num_classes: int, p: Any, select: str):
    """Logistic regression with C chosen by top-1 on `select`."""
    train, sel = feats["train"], feats[select]
    clf, prep, curve = pm.linear_probe(train.features, train.labels, sel.features, sel.labels,
                                       cs=tuple(float(c) for c in p.linear_cs))
    best = max(curve, key=curve.get)
    scores = {s: pm.class_log_proba(clf, prep(feats[s].features), num_classes) for s in _eval_splits(feats)}
    return scores, {"C": best, "selection_top1_by_C": {str(c): v for c, v in curve.items()}}


def fewshot(feats: dict[str, FeatureSet], num_classes: int, p: Any, select: str):
    """Few-shot regression for every n in probe.shots over probe.seeds draws; the L2 penalty of each n
    is chosen by mean top-1 on `select`. Predictions: the largest n, scores averaged over the draws."""
    train = feats["train"]
    smallest = int(np.bincount(train.labels, minlength=num_classes).min())
    shots = sorted(int(n) for n in p.shots)
    if not shots or shots[0] < 1 or shots[-1] > smallest:
        raise UserError(f"probe.shots={shots}: every n must be between 1 and {smallest}, the training samples of "
                        "the smallest class")
    splits = _eval_splits(feats)
    regs = pm.FEWSHOT_L2
    per_shot: dict[str, Any] = {}
    for n in shots:
        fits = [pm.fewshot_fit(train.features[idx], train.labels[idx], num_classes)
                for idx in (pm.sample_shots(train.labels, n, seed) for seed in range(int(p.seeds)))]
        labelled = [s for s in splits if feats[s].labelled]
        # top-1 in % of every draw, split and penalty: (seeds, R) per split; only class indices are kept
        acc = {s: np.array([100.0 * (fit.predictions(feats[s].features, regs) == feats[s].labels).mean(axis=1)
                            for fit in fits]) for s in labelled}
        r = int(acc[select].mean(axis=0).argmax())
        per_shot[str(n)] = {"l2_reg": regs[r], "form": fits[0].form, **{
            s: {"top1_mean": float(acc[s][:, r].mean()), "top1_std": float(acc[s][:, r].std()),
                "top1_per_seed": [float(a) for a in acc[s][:, r]]} for s in labelled}}
    scores = {s: _mean_scores(fits, feats[s].features, regs[r]) for s in splits}  # the largest n's fits, penalty
    return scores, {"shots": shots, "seeds": int(p.seeds), "per_shot": per_shot,
                    "predictions_from": f"{shots[-1]} per class, scores averaged over the seeds"}


def _mean_scores(fits: list[pm.FewshotFit], features: np.ndarray, l2_reg: float) -> np.ndarray:
    """(M, C) float32 scores averaged over the draws, one (M, C) array in memory besides the total."""
    total = fits[0].scores(features, l2_reg)
    for fit in fits[1:]:
        total += fit.scores(features, l2_reg)
    return total / len(fits)


METHODS = {"knn": knn, "linear": linear, "fewshot": fewshot}
