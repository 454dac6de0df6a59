"""Optimiser and learning-rate schedule from the `train` section of a config.

Keys: `optimizer` (adamw | adam | sgd), `lr`, `weight_decay`, `momentum` (sgd), `schedule`
(constant | cosine | step | plateau), `warmup_epochs` (linear warm-up from 0, per step), `milestones` and
`gamma` (step: multiply by gamma after each listed epoch), `plateau_factor`, `plateau_patience` and
`plateau_watch` (plateau: multiply by the factor when the watched value has not improved for more than
`patience` evaluations in a row, as torch's ReduceLROnPlateau).
`plateau_watch: val_loss` (set by the grounding benchmark configs) is 2D-TAN's (moment_localization/
train.py): ReduceLROnPlateau(factor 0.8, patience 20, mode "min", threshold 1e-4 relative) stepped
with the NEGATED validation loss, so the LR drops when the validation loss has not risen above 0.9999 x
its highest value for `patience` + 1 evaluations (a sign quirk of the official code, kept).
`plateau_watch: metric` (the default) is tal's: eval.metric, higher is better, any rise counts.
Both read the validation split only; a run without one refuses the plateau schedule.
The schedule is stepped once per batch, so its state in a checkpoint resumes exactly.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from tal.errors import TalInputError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "step", "plateau")


def build_optimizer(model: nn.Module, train: dict) -> torch.optim.Optimizer:
    """The optimiser named by train.optimizer over the trainable parameters."""
    name = str(train.get("optimizer", "adamw")).lower()
    lr = float(train.get("lr", 1e-3))
    weight_decay = float(train.get("weight_decay", 0.0 if name == "adam" else 1e-4))
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(train.get("momentum", 0.9)), weight_decay=weight_decay)
    raise TalInputError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


PLATEAU_WATCH = ("val_loss", "metric")
TORCH_PLATEAU_THRESHOLD = 1e-4  # ReduceLROnPlateau's default relative threshold, which 2D-TAN keeps


class Plateau:
    """The `plateau` schedule's memory: the best watched value, how many evaluations in a row missed
    it, and the LR scale so far. `update` after every evaluation with `watched_value(...)`.

    watch "metric": the value is eval.metric, improved when higher. watch "val_loss": torch's
    ReduceLROnPlateau in mode "min" fed -(validation loss), as 2D-TAN does: improved when
    value < best * (1 - 1e-4).
    """

    def __init__(self, factor: float = 0.8, patience: int = 20, watch: str = "metric"):
        if not 0 < factor < 1:
            raise TalInputError(f"train.plateau_factor must lie strictly between 0 and 1, got {factor!r}")
        if patience < 0:
            raise TalInputError(f"train.plateau_patience must be >= 0 evaluations, got {patience!r}")
        if watch not in PLATEAU_WATCH:
            raise TalInputError(f"train.plateau_watch must be one of {', '.join(PLATEAU_WATCH)}, got {watch!r}")
        self.factor, self.patience, self.watch = factor, patience, watch
        self.scale, self.best, self.misses = 1.0, None, 0

    @classmethod
    def from_config(cls, train: dict) -> "Plateau | None":
        """A Plateau when train.schedule is plateau, else None."""
        if str(train.get("schedule", "constant")).lower() != "plateau":
            return None
        return cls(float(train.get("plateau_factor", 0.8)), int(train.get("plateau_patience", 20)),
                   str(train.get("plateau_watch", "metric")))

    @staticmethod
    def watched_value(watch: str, metric: float, val_loss: float | None) -> float:
        return metric if watch == "metric" else -float(val_loss)

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.watch == "metric":
            return value > self.best
        return value < self.best * (1 - TORCH_PLATEAU_THRESHOLD)

    def update(self, value: float) -> bool:
        """Record one evaluation's watched value; True when it lowered the scale."""
        if self.improved(value):
            self.best, self.misses = value, 0
            return False
        self.misses += 1
        if self.misses <= self.patience:
            return False
        self.scale *= self.factor
        self.misses = 0
        return True

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "misses": self.misses}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.misses = float(state["scale"]), state["best"], int(state["misses"])


def lr_factor(step: int, steps_per_epoch: int, train: dict, plateau: Plateau | None = None) -> float:
    """Multiplier of train.lr at optimisation step `step` (0-based); `plateau` holds the plateau schedule's scale."""
    epochs = int(train.get("epochs", 1))
    total = max(1, epochs * steps_per_epoch)
    warmup = int(round(float(train.get("warmup_epochs", 0)) * steps_per_epoch))
    schedule = str(train.get("schedule", "constant")).lower()
    if schedule not in SCHEDULES:  # checked before the warm-up, so build_scheduler catches a typo at once
        raise TalInputError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "plateau":
        return plateau.scale if plateau is not None else 1.0
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    epoch = step // max(1, steps_per_epoch)  # "step"
    passed = sum(epoch >= int(m) for m in train.get("milestones", []))
    return float(train.get("gamma", 0.1)) ** passed


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, train: dict,
                    plateau: Plateau | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following `lr_factor` (validated now, not at the first step)."""
    lr_factor(0, steps_per_epoch, train, plateau)
    return torch.optim.lr_scheduler.LambdaLR(optimizer,
                                             lambda step: lr_factor(step, steps_per_epoch, train, plateau))
