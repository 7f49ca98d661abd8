"""Knowledge distillation: each loss against a hand computation, the teacher's input
pipeline, teacher loading (run dir, model: + weights file, ensemble), and the CLI."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from vitcli.core.errors import UserError
from vitcli.loss.distill import (
    DistillLoss,
    create_distill_criterion,
    hard_distill_loss,
    soft_distill_loss,
)
from vitcli.loss.losses import LabelLoss, create_criterion
from vitcli.loss.teacher import Teacher, TeacherMember

MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


class FixedLogits(nn.Module):
    """A 'teacher' that answers the same logits whatever it sees, and records its input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)
        self.weight = nn.Parameter(torch.zeros(1))  # something that must stay frozen
        self.seen = None

    def forward(self, x):
        self.seen = x
        return self.logits[: x.shape[0]] + 0 * self.weight


def fixed_teacher(*logit_sets, img_size=None):
    return Teacher([TeacherMember(FixedLogits(l), img_size, MEAN, STD) for l in logit_sets], MEAN, STD)


def softmax(row, tau=1.0):
    e = [math.exp(v / tau) for v in row]
    return [v / sum(e) for v in e]


def ce(row, label):
    return -math.log(softmax(row)[label])


S = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]  # student logits
T = [[1.0, 3.0, 0.0], [0.0, 0.0, 2.0]]  # teacher logits
Y = [0, 1]  # labels


def test_soft_term_is_tau_squared_kl_by_hand():
    tau = 2.0
    hand = 0.0
    for s, t in zip(S, T):
        p, q = softmax(t, tau), softmax(s, tau)
        hand += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    hand = hand / len(S) * tau * tau
    probs = torch.softmax(torch.tensor(T) / tau, dim=-1)
    assert soft_distill_loss(torch.tensor(S), probs, tau).item() == pytest.approx(hand, rel=1e-5)


def test_hard_term_is_ce_on_teacher_argmax_by_hand():
    hand = (ce(S[0], 1) + ce(S[1], 2)) / 2  # teacher argmax: 1, 2
    probs = torch.softmax(torch.tensor(T), dim=-1)
    assert hard_distill_loss(torch.tensor(S), probs).item() == pytest.approx(hand, rel=1e-5)


@pytest.mark.parametrize("target,alpha,tau", [("soft", 0.5, 2.0), ("soft", 0.1, 3.0), ("hard", 0.5, 1.0)])
def test_criterion_mixes_label_and_teacher_terms_by_hand(target, alpha, tau):
    crit = DistillLoss(LabelLoss(), fixed_teacher(T), target=target, alpha=alpha, tau=tau)
    x = torch.zeros(2, 3, 4, 4)
    loss = crit(x, torch.tensor(S), torch.tensor(Y)).item()
    label = (ce(S[0], 0) + ce(S[1], 1)) / 2
    if target == "hard":
        teach = (ce(S[0], 1) + ce(S[1], 2)) / 2
    else:
        teach = sum(sum(p * (math.log(p) - math.log(q)) for p, q in zip(softmax(t, tau), softmax(s, tau)))
                    for s, t in zip(S, T)) / 2 * tau * tau
    assert loss == pytest.approx((1 - alpha) * label + alpha * teach, rel=1e-5)


def test_token_outputs_split_labels_and_teacher_by_hand():
    cls, dist = torch.tensor(S), torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]])
    crit = DistillLoss(LabelLoss(), fixed_teacher(T), target="hard", alpha=0.5, token=True)
    loss = crit(torch.zeros(2, 3, 4, 4), (cls, dist), torch.tensor(Y)).item()
    label = (ce(S[0], 0) + ce(S[1], 1)) / 2  # class head vs labels
    teach = (ce([0.0, 0.0, 0.0], 1) + ce([1.0, -1.0, 0.0], 2)) / 2  # distillation head vs teacher argmax
    assert loss == pytest.approx(0.5 * label + 0.5 * teach, rel=1e-5)
    with pytest.raises(UserError, match="distilled model"):
        crit(torch.zeros(2, 3, 4, 4), cls, torch.tensor(Y))


def test_mixup_soft_targets_reach_the_label_term():
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]])
    crit = DistillLoss(LabelLoss(), fixed_teacher(T), target="hard", alpha=0.25)
    loss = crit(torch.zeros(2, 3, 4, 4), torch.tensor(S), soft).item()
    label = sum(-w * math.log(q) for row, s in zip(soft.tolist(), S) for w, q in zip(row, softmax(s)) if w) / 2
    teach = (ce(S[0], 1) + ce(S[1], 2)) / 2
    assert loss == pytest.approx(0.75 * label + 0.25 * teach, rel=1e-5)


def test_ensemble_averages_probabilities_not_votes():
    a = [[math.log(0.5), math.log(0.45), math.log(0.05)]]
    b = [[math.log(0.05), math.log(0.45), math.log(0.5)]]
    teacher = fixed_teacher(a, b)
    probs = teacher.probs(torch.zeros(1, 3, 4, 4))
    assert probs[0].tolist() == pytest.approx([0.275, 0.45, 0.275], rel=1e-5)
    assert probs.argmax().item() == 1  # neither member's own top class


def test_teacher_sees_its_own_normalization_and_size():
    member = TeacherMember(FixedLogits([[0.0, 1.0, 2.0]] * 2), 4, mean=[0.4, 0.3, 0.2], std=[0.2, 0.25, 0.5])
    teacher = Teacher([member], MEAN, STD)
    x = torch.randn(2, 3, 8, 8)
    teacher.probs(x)
    pixels = x * 0.5 + 0.5
    expected = torch.nn.functional.interpolate(pixels, size=(4, 4), mode="bilinear", align_corners=False,
                                               antialias=True)
    expected = (expected - torch.tensor([0.4, 0.3, 0.2]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    assert torch.allclose(member.model.seen, expected, atol=1e-6)
    same = fixed_teacher(T, img_size=8)
    same.probs(x)
    assert same.members[0].model.seen is x  # same pipeline: no copy, no resize


def test_teacher_is_frozen_timed_and_runs_under_autocast():
    calls = []

    class Recording:
        def __enter__(self):
            calls.append(1)

        def __exit__(self, *exc):
            return False

    crit = DistillLoss(LabelLoss(), fixed_teacher(T), target="soft", runtime=SimpleNamespace(autocast=Recording))
    crit.train()
    assert not crit.teacher.training and not crit.teacher.members[0].model.training
    student = torch.tensor(S, requires_grad=True)
    crit(torch.zeros(2, 3, 4, 4), student, torch.tensor(Y)).backward()
    assert student.grad is not None
    assert all(not p.requires_grad and p.grad is None for p in crit.teacher.parameters())
    assert calls == [1]
    stats = crit.epoch_stats()
    assert stats["teacher_ms_per_step"] > 0 and stats["distill_loss"] > 0
    assert crit.epoch_stats() == {}  # reset for the next epoch


def test_config_errors_are_one_clear_line(compose):
    cfg = compose("train", ["distill=soft"])
    with pytest.raises(UserError, match="needs distill.teacher=RUN_DIR"):
        create_criterion(cfg, num_classes=10, mean=MEAN, std=STD)
    cfg = compose("train", ["distill=soft", "distill.teacher=model:resnet18"])
    with pytest.raises(UserError, match="needs distill.teacher_weights"):
        create_criterion(cfg, num_classes=10, mean=MEAN, std=STD)
    cfg = compose("train", ["distill=soft", "distill.teacher=[a,b]", "distill.teacher_weights=x.pt"])
    with pytest.raises(UserError, match="list as long"):
        create_criterion(cfg, num_classes=10, mean=MEAN, std=STD)
    cfg = compose("train", ["distill=soft", "distill.teacher=x", "distill.alpha=2"])
    with pytest.raises(UserError, match="alpha"):
        create_criterion(cfg, num_classes=10, mean=MEAN, std=STD)
    assert type(create_criterion(compose("train"), num_classes=10)) is LabelLoss


def _save_resnet(compose, path, num_classes):
    from safetensors.torch import save_file

    from vitcli.models.factory import create_model

    cfg = compose("train", ["model=resnet18", "data.img_size=16"])
    model = create_model(cfg.model, num_classes).eval()
    save_file(model.state_dict(), str(path))
    return model


def test_model_teacher_from_a_weights_file(compose, tmp_path):
    saved = _save_resnet(compose, tmp_path / "t.safetensors", 10)
    cfg = compose("train", ["data.img_size=16", "distill=hard", "distill.teacher=model:resnet18",
                            f"distill.teacher_weights={tmp_path / 't.safetensors'}"])
    crit = create_criterion(cfg, num_classes=10, mean=MEAN, std=STD)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(crit.teacher.probs(x), torch.softmax(saved(x), -1), atol=1e-6)


def test_teacher_class_count_mismatch_names_both_counts(compose, tmp_path):
    _save_resnet(compose, tmp_path / "t5.safetensors", 5)
    cfg = compose("train", ["data.img_size=16", "distill=soft", "distill.teacher=model:resnet18",
                            f"distill.teacher_weights={tmp_path / 't5.safetensors'}"])
    with pytest.raises(UserError, match=r"predicts 5 classes but the data has 10"):
        create_criterion(cfg, num_classes=10, mean=MEAN, std=STD)


def test_run_dir_teacher_resizes_to_its_own_size(compose, tiny_run):
    from vitcli.models.run_model import load_run_model

    cfg = compose("train", ["data.img_size=32", "distill=soft", "distill.tau=1", f"distill.teacher={tiny_run}"])
    crit = create_criterion(cfg, num_classes=10, mean=MEAN, std=STD)
    member = crit.teacher.members[0]
    assert member.img_size == 16 and not member.model.training
    _, model, _, _ = load_run_model(tiny_run, "best", "cpu")
    x = torch.randn(2, 3, 32, 32)
    small = torch.nn.functional.interpolate(x * 0.5 + 0.5, size=(16, 16), mode="bilinear", antialias=True)
    with torch.no_grad():
        expected = torch.softmax(model((small - 0.5) / 0.5), -1)
    assert torch.allclose(crit.teacher.probs(x), expected, atol=1e-5)
    with pytest.raises(UserError, match="predicts 10 classes but the data has 7"):
        create_criterion(cfg, num_classes=7, mean=MEAN, std=STD)
    cfg = compose("train", ["distill=soft", f"distill.teacher={tiny_run}/nope"])
    with pytest.raises(UserError, match="distill.teacher=.*no such directory"):
        create_criterion(cfg, num_classes=10, mean=MEAN, std=STD)


def test_token_distillation_switches_deit_to_two_heads(compose, tmp_path):
    from vitcli.models.factory import create_model

    saved = _save_resnet(compose, tmp_path / "t.safetensors", 10)  # noqa: F841
    over = ["model=deit_t_distilled", "model.patch_size=4", "+model.kwargs.depth=2", "data.img_size=16",
            "distill=token", "distill.teacher=model:resnet18", f"distill.teacher_weights={tmp_path / 't.safetensors'}"]
    cfg = compose("train", over)
    student = create_model(cfg.model, 10)
    crit = create_criterion(cfg, num_classes=10, mean=MEAN, std=STD, model=student)
    x = torch.randn(2, 3, 16, 16)
    cls, dist = student.train()(x)
    loss = crit(x, (cls, dist), torch.tensor([0, 1]))
    loss.backward()
    assert student.head_dist.weight.grad is not None and student.head.weight.grad is not None
    with torch.no_grad():
        assert torch.allclose(student.eval()(x), (student.head(student.forward_features(x)[:, 0])
                                                  + student.head_dist(student.forward_features(x)[:, 1])) / 2)
    plain = create_model(compose("train", ["data.img_size=16"]).model, 10)
    with pytest.raises(UserError, match="has none; use model=deit_t_distilled"):
        create_distill_criterion(cfg, LabelLoss(), device="cpu", num_classes=10, model=plain)


def test_cli_distils_from_a_run_and_reports_teacher_cost(read_summary, train_tiny, tiny_run, tmp_path):
    run = tmp_path / "student"
    train_tiny(run, "trainer.epochs=1", "data.img_size=24", "model.patch_size=8", "distill=soft",
              f"distill.teacher={tiny_run}")
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["kind"] == "epoch"]
    assert epochs[0]["teacher_ms_per_step"] > 0 and epochs[0]["distill_loss"] > 0
    assert read_summary(run)["status"] == "completed"


def test_cli_class_mismatch_is_one_line(train_tiny, tiny_run, tmp_path):
    proc = train_tiny(tmp_path / "bad", "data.num_classes=5", "distill=hard", f"distill.teacher={tiny_run}",
                     check=False)
    assert proc.returncode == 2
    assert "predicts 10 classes but the data has 5" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_run_teacher_of_another_class_list_is_refused(compose, tiny_run):
    """The same number of classes is not the same classes: a teacher trained on another list (or
    the same names in another order) would teach its own labels under the student's indices."""
    names = [f"class_{c}" for c in range(10)]  # tiny_run's synthetic classes
    cfg = compose("train", ["data.img_size=16", "distill=soft", f"distill.teacher={tiny_run}"])
    assert create_criterion(cfg, num_classes=10, mean=MEAN, std=STD, class_names=names).teacher is not None
    with pytest.raises(UserError, match=r"class 0 is 'class_0' in the checkpoint but 'class_9' in the student's data "
                                        r"\(10 classes differ\); the same names in another order; its outputs would teach the wrong classes"):
        create_criterion(cfg, num_classes=10, mean=MEAN, std=STD, class_names=names[::-1])


def test_cli_teacher_of_other_classes_is_one_line(cli, tiny_run, tmp_path):
    """digits (classes '0'..'9') distilled from a teacher trained on synthetic data (10 classes too)."""
    proc = cli("train", "model=vit_pico", "model.patch_size=4", "data=digits", "data.img_size=16", "trainer.epochs=1",
               "trainer.progress=none", "distill=soft", f"distill.teacher={tiny_run}",
               f"hydra.run.dir={tmp_path / 'student'}", check=False)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert proc.stderr.strip().splitlines() == [
        f"vitcli: error: distill.teacher={tiny_run}: class 0 is 'class_0' in the checkpoint but '0' in the student's "
        "data (10 classes differ); 'class_0', 'class_1', 'class_2' gone, '0', '1', '2' new; its outputs would teach "
        "the wrong classes: distil from a teacher trained on the "
        "student's class list (names and order)"]


@pytest.mark.slow
def test_cli_cnn_teacher_on_digits_into_a_vit_student(cli, read_summary, tmp_path):
    """The issue's proof: resnet18 trained on digits by the CLI, distilled into a ViT."""
    common = ["data=digits", "data.img_size=16", "trainer.epochs=1", "trainer.progress=plain"]
    cli("train", "model=resnet18", *common, f"hydra.run.dir={tmp_path / 'teacher'}")
    cli("train", "model=vit_pico", "model.patch_size=4", *common, "distill=soft",
           f"distill.teacher={tmp_path / 'teacher'}", f"hydra.run.dir={tmp_path / 'student'}")
    summary = read_summary(tmp_path / "student")
    assert summary["status"] == "completed" and summary["final"]["teacher_ms_per_step"] > 0
    assert "distill" in (tmp_path / "student" / "config.yaml").read_text()
