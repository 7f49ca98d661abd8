"""Leaderboard levers (issue 4): augmentation presets, freezing, layer decay,
local weights, mixed precision, EMA, non-finite loss, safetensors export."""

from __future__ import annotations

import json

import pytest
import torch

from vitcli.core.options import group_options


@pytest.mark.parametrize("preset", group_options("augmentation"))
def test_augmentation_preset_batches_and_targets(make_trainer, tmp_path, preset):
    trainer = make_trainer(tmp_path, f"augmentation={preset}", "data.num_classes=4")
    loader = trainer.parts.train_loader
    loader.set_epoch(0)
    x, y = next(iter(loader))
    assert x.shape == (32, 3, 16, 16) and torch.isfinite(x).all()
    if trainer.parts.mixup is not None:
        xm, ym = trainer.parts.mixup(x, y)
        assert ym.shape == (32, 4)
        assert torch.allclose(ym.sum(1), torch.ones(32))
        # label smoothing survives mixing: no target is exactly one-hot
        assert ym.max() < 1.0
    loss = trainer.forward_backward(x, y)
    trainer.optimizer_step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("preset", group_options("augmentation"))
def test_augmentation_preset_file_transform(compose, preset):
    from PIL import Image

    from vitcli.data.transforms import create_file_transform

    cfg = compose("train", [f"augmentation={preset}", "data.img_size=24"])
    img = Image.new("RGB", (40, 30), (120, 30, 200))
    out = create_file_transform(cfg.augmentation, cfg.data, train=True)(img)
    assert out.shape == (3, 24, 24)
    assert create_file_transform(cfg.augmentation, cfg.data, train=False)(img).shape == (3, 24, 24)


def test_regularization_presets_follow_steiner_ordering(compose):
    values = {p: compose("train", [f"regularization={p}"]).regularization for p in ("none", "light", "medium", "heavy")}
    assert values["none"].weight_decay == values["none"].drop_path_rate == values["none"].label_smoothing == 0
    wds = [values[p].weight_decay for p in ("none", "light", "medium", "heavy")]
    assert wds == sorted(wds) and values["heavy"].drop_rate > 0 and values["heavy"].drop_path_rate > 0


def test_freeze_backbone_then_unfreeze(make_trainer, tmp_path):
    from vitcli.models.factory import head_parameter_names

    trainer = make_trainer(tmp_path, "trainer.freeze_backbone_epochs=1", "trainer.epochs=2")
    head = head_parameter_names(trainer.parts.model)
    before = {n: p.detach().clone() for n, p in trainer.parts.model.named_parameters()}
    trainer.run_epoch(0)
    after1 = {n: p.detach().clone() for n, p in trainer.parts.model.named_parameters()}
    assert all(torch.equal(before[n], after1[n]) for n in before if n not in head)
    assert any(not torch.equal(before[n], after1[n]) for n in head)
    trainer.run_epoch(1)
    after2 = dict(trainer.parts.model.named_parameters())
    assert all(p.requires_grad for p in after2.values())
    changed = [n for n in before if n not in head and not torch.equal(after1[n], after2[n])]
    assert len(changed) > len(before) // 2


def test_layer_decay_and_head_lr_groups(compose):
    from vitcli.engine.optim import create_optimizer
    from vitcli.models.factory import create_model

    cfg = compose("train", ["optimizer.layer_decay=0.5", "optimizer.head_lr_mult=10"])
    model = create_model(cfg.model, 10)
    opt = create_optimizer(model, cfg.optimizer, weight_decay=0.05)
    scales = sorted({round(g["lr_scale"], 6) for g in opt.param_groups})
    assert len(scales) >= 7  # embeddings, 6 blocks, head
    assert min(scales) == pytest.approx(0.5**7, rel=1e-3)
    head_ids = {id(p) for p in model.head.parameters()}
    head_scales = {g["lr_scale"] for g in opt.param_groups if any(id(p) in head_ids for p in g["params"])}
    assert head_scales == {10.0}
    no_decay = [g for g in opt.param_groups if g["weight_decay"] == 0]
    assert any(p.ndim == 1 for g in no_decay for p in g["params"])


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_weights_with_new_resolution_and_classes(compose, tmp_path, fmt):
    from vitcli.models.factory import create_model

    src_cfg = compose("train", ["data.img_size=16", "model.patch_size=4"])
    source = create_model(src_cfg.model, 10)
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save(source.state_dict(), path)
    cfg = compose("train", ["data.img_size=32", "model.patch_size=4", f"model.weights={path}"])
    model = create_model(cfg.model, 7)
    prefix = model.num_prefix_tokens if not model.no_embed_class else 0  # vit_pico: average pooling, no class token
    assert model.pos_embed.shape[1] == prefix + 64 and source.pos_embed.shape[1] == prefix + 16
    assert torch.equal(model.blocks[3].mlp.fc1.weight, source.blocks[3].mlp.fc1.weight)
    assert model.head.out_features == 7
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_missing_weights_file_is_a_user_error(compose, tmp_path):
    from vitcli.core.errors import UserError
    from vitcli.models.factory import create_model

    cfg = compose("train", [f"model.weights={tmp_path / 'nope.safetensors'}"])
    with pytest.raises(UserError, match="no such file"):
        create_model(cfg.model, 10)


def test_mlp_head(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, "model.head=mlp", "model.head_hidden_dim=32")
    head = trainer.parts.model.head
    assert isinstance(head, torch.nn.Sequential) and head[0].out_features == 32
    assert trainer.parts.model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu(make_trainer, tmp_path, precision):
    trainer = make_trainer(tmp_path, f"trainer.precision={precision}", "trainer.epochs=1", "trainer.clip_grad=1.0")
    summary = trainer.fit()
    assert summary["status"] == "completed" and summary["precision"] == precision
    assert (trainer.parts.scaler is not None) == (precision == "fp16")
    assert torch.isfinite(torch.tensor(summary["final"]["train_loss"]))


def test_ema_is_evaluated_and_checkpointed(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, "trainer.ema=true", "trainer.ema_decay=0.9", "trainer.epochs=2")
    summary = trainer.fit()
    assert "ema_top1" in summary["final"]
    # selection picks the better copy at the best epoch (synthetic data is hard enough that they differ)
    history = trainer.state.history
    assert any(r["val_top1"] != r["ema_top1"] for r in history), "raw and EMA scored the same: the data can't tell"
    top1, source = -1.0, None  # the rule: the better copy each epoch (raw on a tie), kept if strictly better
    for r in history:
        score, copy = (r["ema_top1"], "ema") if r["ema_top1"] > r["val_top1"] else (r["val_top1"], "model")
        if score > top1:
            top1, source = score, copy
    assert (summary["best"]["val_top1"], summary["best"]["source"]) == (top1, source)
    last = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert any(not torch.equal(last["model"][k], last["model_ema"][k]) for k in last["model"])
    best = torch.load(tmp_path / "checkpoints/best.pt", weights_only=True)
    assert best["best_source"] == summary["best"]["source"]
    # best.pt is last.pt of the best epoch (one serialization), and names the copy that won
    from safetensors.torch import load_file

    from vitcli.core.checkpoint import best_entry

    entry = best_entry(best)
    assert entry == ("model_ema" if summary["best"]["source"] == "ema" else "model")
    exported = load_file(str(tmp_path / "model.safetensors"))
    assert exported.keys() == best[entry].keys() and all(torch.equal(exported[k], best[entry][k]) for k in exported)
    same = (tmp_path / "checkpoints/best.pt").samefile(tmp_path / "checkpoints/last.pt")
    assert same == (summary["best"]["epoch"] == summary["epochs_completed"])


# 280 synthetic samples: 224 train = 7 batches of 32, so grad_accum=3 leaves a last group of one batch
UNEVEN = ["data.num_samples=280", "trainer.grad_accum=3", "model.drop_path_rate=0", "augmentation=none"]


def test_grad_accum_schedule_covers_every_optimizer_step(make_trainer, tmp_path):
    """7 batches with grad_accum=3: 3 optimizer steps per epoch, and the schedule is as long as
    those steps (it reaches min_lr at the very last one, not earlier)."""
    trainer = make_trainer(tmp_path, *UNEVEN, "trainer.epochs=2", "trainer.log_interval=1",
                           "scheduler.warmup_epochs=0", "scheduler.min_lr=1e-5")
    assert trainer.batches_per_epoch == 7
    trainer.fit()
    steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in steps if r["kind"] == "step"]
    assert trainer.state.global_step == 6 and len(lrs) == 6
    assert all(a > b for a, b in zip(lrs, lrs[1:])), lrs  # still decaying at every step
    assert lrs[-1] == pytest.approx(1e-5)


def test_a_partial_accumulation_group_is_the_mean_of_its_own_batches(make_trainer, tmp_path):
    """Plain SGD over one epoch equals, step by step, the mean gradient of each group of micro-batches:
    batches 1-3, 4-6, then batch 7 alone (divided by 1, not by grad_accum)."""
    opts = [*UNEVEN, "trainer.epochs=1", "optimizer=sgd", "optimizer.name=momentum", "optimizer.momentum=0", "regularization=none",
            "scheduler=constant", "scheduler.warmup_epochs=0", "optimizer.lr=0.5"]
    trainer = make_trainer(tmp_path / "a", *opts)
    reference = make_trainer(tmp_path / "b", *opts)
    p = reference.parts
    p.train_loader.set_epoch(0)
    batches = list(p.train_loader)
    p.model.train()
    for group in (batches[0:3], batches[3:6], batches[6:7]):
        p.optimizer.zero_grad()
        for x, y in group:
            (p.criterion(x, p.model(x), y) / len(group)).backward()
        with torch.no_grad():
            for param in p.model.parameters():
                param -= 0.5 * param.grad
    trainer.fit()
    for (name, got), want in zip(trainer.parts.model.named_parameters(), p.model.parameters()):
        assert torch.allclose(got, want, atol=1e-6), name


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(make_trainer, tmp_path):
    from vitcli.engine.loss_window import NonFiniteLoss

    trainer = make_trainer(tmp_path, "trainer.epochs=3")
    trainer.run_dir.mkdir(exist_ok=True)
    trainer.run_epoch(0)
    trainer.state.checkpoints.join()  # the save is written on a background thread; the run joins it before reading
    good = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    base = trainer.parts.criterion
    trainer.parts.criterion = lambda x, out, y: base(x, out, y) * float("nan")
    with pytest.raises(NonFiniteLoss, match="loss became nan"):
        trainer.fit()
    kept = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert kept["epoch"] == 1 and all(torch.equal(good["model"][k], kept["model"][k]) for k in good["model"])
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_safetensors_export_loads_in_plain_timm(make_trainer, tmp_path):
    import timm

    trainer = make_trainer(tmp_path, "trainer.epochs=1")
    trainer.fit()
    path = tmp_path / "model.safetensors"
    assert path.is_file()
    plain = timm.create_model(
        "vit_tiny_patch16_224", num_classes=10, img_size=16, patch_size=4, depth=6, embed_dim=128, num_heads=4,
        global_pool="avg", class_token=False, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
    ).eval()
    trainer.parts.model.load_state_dict(torch.load(tmp_path / "checkpoints/best.pt", weights_only=True)["model"])
    trainer.parts.model.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain(x), trainer.parts.model(x))


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_experiment_presets_compose(compose, experiment):
    cfg = compose("train", [f"experiment={experiment}", "data.root=/data/x"])
    assert cfg.name == experiment
    from importlib import resources

    text = resources.files("vitcli.conf").joinpath("experiment", f"{experiment}.yaml").read_text()
    comments = [l for l in text.splitlines() if l.startswith("#") and not l.startswith("# @package")]
    assert comments[0].startswith("# vitcli train ") and f"experiment={experiment}" in comments[0]


@pytest.mark.parametrize("recipe,paper_lr", [("deit_s_imagenet", 5e-4 * 1024 / 512), ("deit_t_imagenet", 5e-4 * 1024 / 512),
                                             ("swin_t_imagenet", 1e-3 * 1024 / 1024)])
def test_imagenet_recipes_scale_the_lr_with_the_global_batch(compose, recipe, paper_lr):
    """DeiT: 5e-4 x global batch / 512; Swin: 1e-3 at 1024. At 8 devices x 128 (and on fewer, with
    gradient accumulation to the same global batch) the run gets the paper's rate."""
    from vitcli.engine.optim import global_batch_size, scaled_lr

    cfg = compose("train", [f"experiment={recipe}"])
    assert cfg.data.batch_size == 128
    assert scaled_lr(cfg.optimizer, global_batch_size(128, 8, 1)) == pytest.approx(paper_lr)
    assert scaled_lr(cfg.optimizer, global_batch_size(128, 2, 4)) == pytest.approx(paper_lr)
    assert scaled_lr(cfg.optimizer, global_batch_size(128, 1, 1)) == pytest.approx(paper_lr / 8)
