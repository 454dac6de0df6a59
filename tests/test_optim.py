"""Optimiser and learning-rate schedules (tal.engine.optim), by hand; the trainer's use of them is in test_engine."""
from __future__ import annotations

import pytest
import torch

from tal.engine.optim import Plateau, build_optimizer, build_scheduler, lr_factor
from tal.errors import TalInputError


def test_lr_factor_warmup_then_cosine_by_hand():
    train_cfg = {"epochs": 3, "warmup_epochs": 1, "schedule": "cosine"}  # 4 steps an epoch: warm-up 4, cosine 8
    got = [lr_factor(step, 4, train_cfg) for step in range(13)]
    # warm-up (k + 1) / 4, then 0.5 * (1 + cos(pi * k / 8)) for k = 0..8 (cos(pi/8) = 0.92388, cos(pi/4) = 0.70711)
    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 0.9619397662556434, 0.8535533905932737, 0.6913417161825449, 0.5,
                0.3086582838174551, 0.14644660940672627, 0.03806023374435663, 0.0]
    assert got == pytest.approx(expected, abs=1e-12)
    assert lr_factor(20, 4, train_cfg) == 0.0  # after the last step it stays at 0
    # a fractional warm-up rounds to whole steps: 0.5 epoch of 4 steps = 2 steps
    assert [lr_factor(s, 4, {"epochs": 1, "warmup_epochs": 0.5}) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_lr_factor_step_schedule_by_hand():
    train_cfg = {"epochs": 6, "schedule": "step", "milestones": [2, 4], "gamma": 0.1}  # 5 steps an epoch
    got = [lr_factor(step, 5, train_cfg) for step in (0, 9, 10, 19, 20, 29)]
    assert got == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rel=1e-12)
    assert lr_factor(3, 5, {"schedule": "step", "milestones": [1], "warmup_epochs": 1}) == 0.8  # warm-up first


def test_scheduler_sets_the_optimizer_lr_every_step():
    model = torch.nn.Linear(2, 1)
    train_cfg = {"optimizer": "sgd", "lr": 0.2, "epochs": 2, "warmup_epochs": 1, "schedule": "cosine"}
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, 2, train_cfg)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.1, 0.2, 0.2, 0.1])  # warm-up 2 steps, then cosine over 2: 1, 0.5


def test_plateau_lowers_the_scale_after_patience_misses_by_hand():
    plateau = Plateau(factor=0.5, patience=1)
    lowered = [plateau.update(v) for v in (1.0, 0.5, 0.5, 2.0, 1.0, 2.0, 0.1)]
    # best 1.0; miss 1 (within patience); miss 2 -> x0.5; best 2.0; miss; equal is a miss too -> x0.5; miss
    assert lowered == [False, False, True, False, False, True, False]
    assert plateau.scale == 0.25 and plateau.best == 2.0 and plateau.misses == 1
    assert lr_factor(1, 4, {"schedule": "plateau", "warmup_epochs": 1}, plateau) == 0.5  # warm-up step 2 of 4
    assert lr_factor(9, 4, {"schedule": "plateau", "warmup_epochs": 1}, plateau) == 0.25
    with pytest.raises(TalInputError, match="train.plateau_factor must lie strictly between 0 and 1, got 1.5"):
        Plateau(factor=1.5)


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam),
                                       ("SGD", torch.optim.SGD)])
def test_build_optimizer_names(name, cls):
    optimizer = build_optimizer(torch.nn.Linear(2, 1), {"optimizer": name, "lr": 0.05})
    assert type(optimizer) is cls and optimizer.param_groups[0]["lr"] == 0.05


def test_unknown_optimizer_is_refused():
    with pytest.raises(TalInputError, match=r"train.optimizer must be one of adamw, adam, sgd, got 'adagrad'"):
        build_optimizer(torch.nn.Linear(2, 1), {"optimizer": "adagrad"})


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_unknown_schedule_is_refused_when_the_scheduler_is_built(warmup_epochs):
    """Also with a warm-up: a typo must not train the warm-up epochs first and fail after them."""
    optimizer = build_optimizer(torch.nn.Linear(2, 1), {})
    with pytest.raises(TalInputError,
                       match=r"train.schedule must be one of constant, cosine, step, plateau, got 'cosnie'"):
        build_scheduler(optimizer, 4, {"schedule": "cosnie", "warmup_epochs": warmup_epochs, "epochs": 2})
