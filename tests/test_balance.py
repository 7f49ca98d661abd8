"""Class balance: the balanced epoch order (even classes, resumable, disjoint per rank) and the
inverse-frequency loss weights."""

from __future__ import annotations

import numpy as np
import torch

from vitcli.data.arrays import ArrayLoader, ArraySplit
from vitcli.data.balance import balanced_order, class_counts, inverse_frequency_weights

SKEWED = np.array([0] * 60 + [1] * 30 + [2] * 8 + [3] * 2)


def skewed_loader(balance: bool, seed: int = 3) -> ArrayLoader:
    images = np.arange(len(SKEWED), dtype=np.uint8).repeat(4 * 4 * 3).reshape(-1, 4, 4, 3)
    loader = ArrayLoader(ArraySplit(images, SKEWED.copy(), [str(i) for i in range(len(SKEWED))]), batch_size=10,
                         img_size=4, mean=[0, 0, 0], std=[1, 1, 1], shuffle=True, drop_last=True, seed=seed)
    if balance:
        loader.balance(SKEWED)
    return loader


def epoch_samples(loader: ArrayLoader, epoch: int, start_step: int = 0) -> list[int]:
    loader.set_epoch(epoch, start_step)
    return [int(v) for x, _ in loader for v in (x[:, 0, 0, 0] * 255).round().long()]


def test_balanced_order_draws_classes_evenly_and_covers_rare_samples():
    counts = np.zeros(4)
    for epoch in range(5):
        order = balanced_order(SKEWED, np.random.default_rng(epoch))
        assert len(order) == len(SKEWED)
        per_class = np.bincount(SKEWED[order], minlength=4)
        assert per_class.max() - per_class.min() <= 1  # 25 each
        # a rare class cycles through its own samples before repeating one
        rare = order[SKEWED[order] == 3]
        assert np.bincount(rare, minlength=100)[98:].tolist() in ([13, 12], [12, 13])
        counts += per_class
    assert counts.tolist() == [125] * 4


def test_loader_with_sampler_balances_and_resumes_exactly():
    plain, balanced = skewed_loader(False), skewed_loader(True)
    seen = epoch_samples(balanced, 1)
    assert np.bincount(SKEWED[seen], minlength=4).min() >= 20  # vs 2 of class 3 without the sampler
    assert np.bincount(SKEWED[epoch_samples(plain, 1)], minlength=4)[3] <= 2
    assert epoch_samples(skewed_loader(True), 1, start_step=4) == seen[40:]  # exact mid-epoch resume
    assert epoch_samples(balanced, 2) != seen  # a new draw every epoch


def test_sampler_shards_are_disjoint_slices_of_one_draw():
    whole = skewed_loader(True)
    whole.drop_last = False
    full = epoch_samples(whole, 0)
    ranks = []
    for rank in range(2):
        loader = skewed_loader(True)
        loader.shard(rank, 2)
        ranks.append(epoch_samples(loader, 0))
    # each rank takes every other position of the same draw (batches are sorted within, so compare sets by slot)
    order = balanced_order(SKEWED, np.random.default_rng(_epoch_seed(3, 0)))
    assert sorted(ranks[0]) == sorted(order[0::2].tolist()) and sorted(ranks[1]) == sorted(order[1::2].tolist())
    assert sorted(ranks[0] + ranks[1]) == sorted(full)


def _epoch_seed(seed, epoch):
    from vitcli.data.arrays import epoch_seed

    return epoch_seed(seed, epoch)


def test_inverse_frequency_weights_equalise_class_totals():
    counts = class_counts(SKEWED, 5)
    weights = inverse_frequency_weights(counts)
    assert counts.tolist() == [60, 30, 8, 2, 0] and weights[4] == 0
    totals = weights * counts
    assert np.allclose(totals[:4], totals[0]) and np.isclose((weights * counts).sum(), len(SKEWED))


def test_weighted_loss_counts_rare_class_errors_more():
    from vitcli.loss.losses import LabelLoss

    weights = torch.tensor(inverse_frequency_weights(class_counts(SKEWED, 4)), dtype=torch.float32)
    logits = torch.zeros(2, 4)
    logits[:, 0] = 3.0  # both predicted class 0
    common, rare = torch.tensor([1, 1]), torch.tensor([3, 3])
    plain, weighted = LabelLoss(), LabelLoss(class_weights=weights)
    assert torch.isclose(plain(None, logits, common), plain(None, logits, rare))
    # hard targets: torch's weighted mean, so a uniform batch keeps its plain loss
    assert torch.isclose(weighted(None, logits, rare), plain(None, logits, rare))
    logits[0] = torch.tensor([0.0, 3.0, 0.0, 0.0])  # sample 0 (class 1) right, sample 1 (class 3) wrong
    mixed = torch.tensor([1, 3])
    assert weighted(None, logits, mixed) > plain(None, logits, mixed) * 1.5
    # soft (MixUp) targets: the same weighted mean, so one-hot soft targets give the hard loss
    soft = torch.nn.functional.one_hot(mixed, 4).float()
    assert torch.isclose(weighted(None, logits, soft), weighted(None, logits, mixed))
