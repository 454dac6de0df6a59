"""What every task offers the training loop, and the batching helpers they share."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch
from torch import nn

from tal.errors import TalInputError
from tal.registry import MODELS, TASKS

GROUNDING_MODELS = {"2dtan", "man"}
T = TypeVar("T")
R = TypeVar("R")


class Task(ABC):
    """Interface of a task; see `tal.tasks`. Subclasses set `predictions_name` and `default_metric`."""

    predictions_name = "predictions.json"
    default_metric = ""

    def __init__(self, cfg: dict, meta: dict | None = None):
        self.cfg = cfg
        self.meta: dict = dict(meta or {})
        self.prefetch = Prefetcher()  # the trainer sets train.num_workers / pin_memory for predict too

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

    @property
    def concurrent_batches(self) -> bool:
        """Whether several threads may build batches at once and still give the batches of one thread
        (`Prefetcher`); a task whose batches depend on the order they are built in says False."""
        return True

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


def to_device(value: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """Tensors (also inside dicts, lists, tuples) moved to `device`.

    non_blocking overlaps a host -> CUDA copy with the work queued before it when the tensor is in
    pinned memory (`pin_memory`); from pageable memory the copy is synchronous either way, and on the
    CPU `.to` returns the tensor itself.
    """
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, dict):
        return {k: to_device(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device, non_blocking) for v in value)
    return value


def pin_memory(value: Any) -> Any:
    """CPU tensors (also inside dicts, lists, tuples) copied to page-locked memory; unchanged without CUDA."""
    if not torch.cuda.is_available():
        return value
    if isinstance(value, torch.Tensor):
        return value.pin_memory() if value.device.type == "cpu" and not value.is_pinned() else value
    if isinstance(value, dict):
        return {k: pin_memory(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(pin_memory(v) for v in value)
    return value


class Prefetcher:
    """`map(fn, items)` in order, with up to 2 x `num_workers` results prepared ahead in background threads.

    train.num_workers and train.pin_memory. num_workers=0 calls `fn` inline (no thread). Results come
    back in the order of `items` whatever order the threads finish in, so a seeded epoch order gives
    the same batches, and with them the same losses and weights, for every num_workers.

    Threads, not a torch DataLoader with worker processes: a task's batch builder reads the task's
    caches (a video's features or clips are read from the HDF5 file once, MiniLM sentence vectors are
    computed once) and the live model (its text encoder prepares the words), which worker processes
    would each copy and refill every epoch, and a CUDA model cannot run in a forked worker; a
    DataLoader iterator also draws its base seed from the global torch RNG, which would move the
    dropout and sampling draws of training against num_workers=0. In threads the caches and the model
    are shared, h5py serialises its reads with its own lock, and torch's ops release the GIL, so the
    HDF5 reads and batch assembly overlap the forward/backward of the main thread. What `fn` must
    keep: draw no global random numbers and fill its caches with `dict.setdefault` (two threads may
    compute the same entry; every later reader must see one object). `pin` copies each result to
    pinned memory in the thread (only when CUDA is available), for a non-blocking copy to the GPU.
    """

    def __init__(self, num_workers: int = 0, pin: bool = False):
        self.num_workers = int(num_workers)
        self.pin = bool(pin)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """fn(item) for each item, in order; the threads are joined when the caller stops iterating."""
        def work(item: T) -> R:
            result = fn(item)
            return pin_memory(result) if self.pin else result

        if self.num_workers <= 0:
            for item in items:
                yield work(item)
            return
        threads = torch.get_num_threads()  # OpenMP's count is per thread: give the workers the caller's
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="tal-batches",
                                  initializer=torch.set_num_threads, initargs=(threads,))
        pending: deque[Future] = deque()
        source = iter(items)
        try:
            for item in source:
                pending.append(pool.submit(work, item))
                if len(pending) >= 2 * self.num_workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)  # no thread may still fill a cache when the caller goes on


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
