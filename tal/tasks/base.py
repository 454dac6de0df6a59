"""What every task offers the training loop, and the batching helpers they share."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator

import torch
from torch import nn

from tal.errors import TalInputError
from tal.registry import MODELS, TASKS

GROUNDING_MODELS = {"2dtan", "man"}


class Task(ABC):
    """Interface of a task; see `tal.tasks`. Subclasses set `predictions_name` and `default_metric`."""

    predictions_name = "predictions.json"
    default_metric = ""

    def __init__(self, cfg: dict, meta: dict | None = None):
        self.cfg = cfg
        self.meta: dict = dict(meta or {})

    @abstractmethod
    def build_model(self) -> nn.Module:
        ...

    @abstractmethod
    def num_train_items(self) -> int:
        ...

    @abstractmethod
    def train_batch(self, model: nn.Module, indices: list[int]) -> dict:
        """The batch of the training items `indices` (CPU tensors)."""
        ...

    @abstractmethod
    def predict(self, model: nn.Module, split: str, device: torch.device) -> Any:
        ...

    @abstractmethod
    def evaluate(self, predictions: Any, split: str) -> dict:
        ...

    @abstractmethod
    def write_predictions(self, predictions: Any, path) -> None:
        ...

    @property
    def eval_split(self) -> str:
        """The split whose metrics go into metrics.json."""
        return "test"

    @property
    def val_split(self) -> str:
        """The split that picks the best checkpoint."""
        return "val"

    @property
    def selected_on_test(self) -> bool:
        """True when no validation split exists and the best checkpoint is picked on the test split."""
        return False

    def validation_loss(self, model: nn.Module, split: str, device: torch.device) -> float:
        """The mean training loss on a held-out split (train.plateau_watch=val_loss)."""
        raise TalInputError(f"train.plateau_watch=val_loss is not available for {type(self).__name__}; "
                            f"use train.plateau_watch=metric")


def task_name(cfg: dict) -> str:
    """cfg["task"], or the task the model's name implies."""
    if cfg.get("task"):
        return str(cfg["task"])
    model = str(cfg.get("model", {}).get("name", ""))
    if not model:
        raise TalInputError("the config names no model (model.name) and no task")
    return "grounding" if model in GROUNDING_MODELS else "detection"


def build_task(cfg: dict, meta: dict | None = None) -> Task:
    """The task of a config; with `meta` (from a checkpoint) it can predict without the training data."""
    import tal.models  # noqa: F401  (registers the heads)

    name = task_name(cfg)
    if name not in TASKS:
        raise TalInputError(f"unknown task {name!r}; known: {', '.join(TASKS.names())}")
    model_name = cfg.get("model", {}).get("name")
    if model_name not in MODELS:
        MODELS.get(model_name)  # raises the unknown-model error listing the known ones
    return TASKS.get(name)(cfg, meta)


def global_batches(order: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[list[int]]:
    """Item indices of this rank's share of each global batch of `order` (a permutation).

    train.batch_size is the global batch: with N processes each takes a contiguous 1/N of it, so N
    processes see the same items per optimisation step as one process does.
    """
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        share = chunk.tensor_split(world_size)[rank]
        if len(share):
            yield share.tolist()


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts, lists, tuples) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def check_section(cfg: dict, section: str, known: set[str], task: str) -> dict:
    """cfg[section], refusing keys the task does not know (a typo should not be silently ignored)."""
    values = cfg.get(section) or {}
    unknown = set(values) - known
    if unknown:
        raise TalInputError(f"unknown {section} key(s) for the {task} task: {sorted(unknown)}; known: {sorted(known)}")
    return values


def require_files(data: dict, keys: tuple[str, ...], config_hint: str) -> None:
    """Each dataset.<key> that is set must name an existing file; the error says how to point it elsewhere."""
    from pathlib import Path

    for key in keys:
        value = data.get(key)
        if value and not Path(value).is_file():
            raise TalInputError(f"dataset.{key}: {value}: no such file; create it as the config's comments say, "
                                f"or point the config at your data: --set {config_hint}")
