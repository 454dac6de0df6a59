"""The training loop shared by every head: `train(cfg, work_dir)` and `evaluate_checkpoint(cfg, ckpt)`.

Per epoch: shuffle the task's items with a generator seeded by (seed, epoch), so a resumed run sees the
same order; step with gradient-norm clipping and a per-step LR schedule; every `eval.interval` epochs
(and after the last) predict the validation split and score it; save `checkpoint_last.pt` (model,
optimiser, schedule, RNG states, history) atomically, and copy it to `checkpoint_best.pt` when the
validation metric (`eval.metric`) improved. At the end the best checkpoint predicts the evaluation split:
`predictions.json(l)` and `metrics.json` (what `tal evaluate` would print for them).

train keys: epochs, batch_size, lr, optimizer, weight_decay, momentum, schedule, warmup_epochs,
milestones, gamma, plateau_factor, plateau_patience, plateau_watch (tal.engine.optim), clip_grad_norm (0, the
default, is off: none of the official detection codes clip, and an always-active clip rescales every SGD step;
a config sets it where its paper does), amp (CUDA mixed precision), log_interval, and for the GPU:
num_workers (0, the default: batches are built in the loop; N: N threads build the next 2N batches while
the model steps, `tal.tasks.base.Prefetcher`; the same losses and weights as 0), pin_memory (default: on
when the device is CUDA; the batches are copied to page-locked memory for non-blocking copies to the
GPU; ignored on the CPU) and compile (default false; true runs the training forward and backward through
`torch.compile`, see `compile_model`).
`--resume` continues from checkpoint_last.pt; the result equals an uninterrupted run with the same seed.
"""
from __future__ import annotations

import logging
import math
import os
import random
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tal.config import check_number, save_config
from tal.datasets.jsonio import write_json_atomic
from tal.engine import distributed
from tal.engine.checkpoint import load_checkpoint, save_checkpoint
from tal.engine.optim import Plateau, build_optimizer, build_scheduler
from tal.errors import TalInputError
from tal.tasks import build_task
from tal.tempfiles import remove_stale_temp_files
from tal.tasks.base import Prefetcher, Task, check_section, global_batches, to_device

TRAIN_KEYS = {"epochs", "batch_size", "lr", "optimizer", "weight_decay", "momentum", "schedule", "warmup_epochs",
              "milestones", "gamma", "plateau_factor", "plateau_patience", "plateau_watch", "clip_grad_norm", "amp",
              "log_interval", "num_workers", "pin_memory", "compile"}
# (kind, minimum, exclusive) of the numeric train keys; their defaults are read where they are used
TRAIN_NUMBERS = {"epochs": (int, 1, False), "batch_size": (int, 1, False), "lr": (float, 0, True),
                 "weight_decay": (float, 0, False), "momentum": (float, 0, False), "warmup_epochs": (float, 0, False),
                 "gamma": (float, 0, True), "plateau_factor": (float, 0, True), "plateau_patience": (int, 0, False),
                 "clip_grad_norm": (float, 0, False), "log_interval": (int, 1, False),
                 "num_workers": (int, 0, False)}
TRAIN_SWITCHES = ("amp", "pin_memory", "compile")  # true or false (pin_memory may be left unset: auto)
RESULT_NEUTRAL = ("num_workers", "pin_memory")  # the same losses and weights whatever their values
LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"
logger = logging.getLogger("tal.train")


def check_train_values(train_cfg: dict) -> None:
    """Every numeric train key is a number of the right kind and range (train.epochs=abc, [1, 2], 2.5 or
    train.lr=-1 are one-line errors, not tracebacks or silent truncation)."""
    for key, (kind, minimum, exclusive) in TRAIN_NUMBERS.items():
        check_number(train_cfg, key, "train", None, kind, minimum, exclusive)
    for key in TRAIN_SWITCHES:
        value = train_cfg.get(key)
        if value is not None and not isinstance(value, bool):
            raise TalInputError(f"train.{key} must be true or false, got {value!r}")
    milestones = train_cfg.get("milestones", [])
    if not isinstance(milestones, list):
        raise TalInputError(f"train.milestones must be a list of epochs, got {milestones!r}")
    for i, _ in enumerate(milestones):
        check_number(dict(enumerate(milestones)), i, "train.milestones", None, int, 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The RNG states as tensors and plain data (a checkpoint loads with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def metric_value(metrics: dict, name: str) -> float:
    """metrics[name], where name may reach into a nested dict with '/' (e.g. "mAP/0.50")."""
    node: Any = metrics
    for part in name.split("/"):
        if not isinstance(node, dict) or part not in node:
            flat = [k if not isinstance(v, dict) else f"{k}/{next(iter(v), '')}" for k, v in metrics.items()]
            raise TalInputError(f"eval.metric {name!r} is not among the metrics ({', '.join(flat)})")
        node = node[part]
    return float(node)


def _setup_logging(work_dir: Path, is_main: bool) -> list[logging.Handler]:
    """train.log and stderr handlers for one run; the caller removes both (the next run's stderr may differ)."""
    if not is_main:
        return []
    handler = logging.FileHandler(work_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    for h in (handler, stream):
        logger.addHandler(h)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return [handler, stream]


def _same_training(saved: dict, cfg: dict, path: Path) -> None:
    """A resumed run must use the config it started with (epochs may grow; the batch-building keys, which
    change no number, may differ)."""
    def strip(c: dict) -> dict:
        c = {k: (dict(v) if isinstance(v, dict) else v) for k, v in c.items()}
        for key in ("epochs", *RESULT_NEUTRAL):
            c.get("train", {}).pop(key, None)
        return c

    if strip(saved) != strip(cfg):
        changed = sorted(k for k in set(saved) | set(cfg) if strip(saved).get(k) != strip(cfg).get(k))
        raise TalInputError(f"{path}: the checkpoint was trained with a different config (sections {changed} "
                            f"differ); resume with the same config and --set values, or use a new --work-dir")


class Trainer:
    """One training run in `work_dir` (see the module docstring)."""

    def __init__(self, cfg: dict, work_dir: str | Path, device: str = "cpu", resume: bool = False,
                 progress: bool = True, overwrite: bool = False):
        self.cfg = cfg
        self.overwrite = overwrite
        self.train_cfg = check_section(cfg, "train", TRAIN_KEYS, "training loop")
        self.work_dir = Path(work_dir)
        self.ctx, self.device = distributed.setup(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TalInputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        self.resume = resume
        self.progress = progress and self.ctx.is_main
        check_train_values(self.train_cfg)
        self.epochs = int(self.train_cfg.get("epochs", 10))
        self.batch_size = int(self.train_cfg.get("batch_size", 32))
        self.clip = float(self.train_cfg.get("clip_grad_norm", 0.0))
        self.amp = bool(self.train_cfg.get("amp", False)) and self.device.type == "cuda"
        self.num_workers = int(self.train_cfg.get("num_workers", 0))
        pin = self.train_cfg.get("pin_memory")
        self.pin_memory = (self.device.type == "cuda" if pin is None else bool(pin)) and self.device.type == "cuda"
        self.compile = bool(self.train_cfg.get("compile", False))
        self.seed = int(cfg.get("seed", 0))

    def run(self) -> dict:
        """Train, evaluate, write the work dir; returns the metrics on the evaluation split."""
        if self.work_dir.exists() and not self.work_dir.is_dir():
            raise TalInputError(f"--work-dir {self.work_dir}: a file, not a folder; choose another --work-dir")
        existing = [name for name in (LAST, BEST, "metrics.json") if (self.work_dir / name).is_file()]
        if existing and not self.resume and not self.overwrite:
            raise TalInputError(f"--work-dir {self.work_dir} holds a run already ({', '.join(existing)}): --resume "
                                f"continues it, --overwrite trains again from scratch and replaces it, or choose "
                                f"another --work-dir")
        if self.ctx.is_main:
            remove_stale_temp_files(self.work_dir)
        if existing and self.overwrite and not self.resume and self.ctx.is_main:
            for name in existing:  # a stale best of the old run must not stand in for this run's
                (self.work_dir / name).unlink()
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            probe = self.work_dir / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise TalInputError(f"--work-dir {self.work_dir}: cannot write there ({exc.strerror}); choose another "
                                f"--work-dir") from None
        handlers = _setup_logging(self.work_dir, self.ctx.is_main)
        clean = False
        try:
            result = self._run()
            clean = True
            return result
        finally:
            for handler in handlers:
                logger.removeHandler(handler)
                handler.close()
            distributed.teardown(self.ctx, clean)

    def _run(self) -> dict:
        seed_everything(self.seed)
        task = build_task(self.cfg)
        model = task.build_model().to(self.device)
        steps_per_epoch = math.ceil(task.num_train_items() / self.batch_size)
        optimizer = build_optimizer(model, self.train_cfg)
        plateau = Plateau.from_config(self.train_cfg)
        if plateau is not None and task.selected_on_test:
            raise TalInputError("train.schedule=plateau steps on the validation split, and this run has none (the "
                                "best epoch would be picked on test); set dataset.val, or train.schedule=constant")
        scheduler = build_scheduler(optimizer, steps_per_epoch, self.train_cfg, plateau)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        metric = str(self.cfg.get("eval", {}).get("metric", task.default_metric))
        interval = max(1, int(self.cfg.get("eval", {}).get("interval", 1)))
        start_epoch, best, history = 0, None, []
        last_path = self.work_dir / LAST
        if self.resume:
            if not last_path.is_file():
                raise TalInputError(f"--resume: {last_path} does not exist; train without --resume first")
            state = load_checkpoint(last_path, map_location=self.device)
            _same_training(state["config"], self.cfg, last_path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if plateau is not None and state.get("plateau"):
                plateau.load_state_dict(state["plateau"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch, best, history = state["epoch"], state.get("best"), state.get("history", [])
            saved_epochs = int(state["config"].get("train", {}).get("epochs", self.epochs))
            if saved_epochs != self.epochs and self.ctx.is_main and self.train_cfg.get("schedule") in ("cosine", "step"):
                logger.info(f"note: train.epochs changed from {saved_epochs} to {self.epochs}; the "
                            f"{self.train_cfg.get('schedule')} schedule follows the new length from here on, so the "
                            f"result differs from a run started with {self.epochs} epochs")
            set_rng_state(state["rng"])
            if self.ctx.is_main:
                logger.info(f"resumed from {last_path} after epoch {start_epoch}")
        if self.ctx.is_main:
            save_config(self.cfg, self.work_dir / "config.yaml")
            if task.selected_on_test:
                logger.info(f"note: there is no validation split, so the best epoch ({metric}) is picked on the "
                            f"{task.eval_split} split and the reported metrics are on that same split "
                            f"(metrics.json: \"selected_on\": \"{task.eval_split}\")")
            logger.info(f"{getattr(task, 'describe', lambda: '')()}; {sum(p.numel() for p in model.parameters()):,} "
                        f"parameters; {self.epochs} epochs of {steps_per_epoch} steps on {self.device}"
                        + (f" x {self.ctx.world_size} processes" if self.ctx.active else ""))
        workers = self.num_workers if task.concurrent_batches or self.num_workers <= 1 else 1
        if workers != self.num_workers and self.ctx.is_main:
            logger.info(f"note: train.num_workers={self.num_workers}: this task's batches depend on the order "
                        f"they are built in ({type(task).__name__}.concurrent_batches), so one thread builds them")
        task.prefetch = Prefetcher(workers, self.pin_memory)
        net = distributed.wrap(model, self.ctx, self.device)
        if self.compile:
            net = compile_model(net, self.device)

        for epoch in range(start_epoch, self.epochs):
            losses = self._train_epoch(task, net, model, optimizer, scheduler, scaler, epoch, steps_per_epoch)
            record = {"epoch": epoch + 1, "loss": losses, "lr": optimizer.param_groups[0]["lr"]}
            evaluate_now = (epoch + 1) % interval == 0 or epoch + 1 == self.epochs
            improved = False
            if evaluate_now and self.ctx.is_main:
                metrics = task.evaluate(task.predict(model, task.val_split, self.device), task.val_split)
                value = metric_value(metrics, metric)
                record.update(val=metrics, metric=value)
                if plateau is not None and plateau.watch == "val_loss":
                    record["val_loss"] = task.validation_loss(model, task.val_split, self.device)
                improved = best is None or value > best["value"]
                if improved:
                    best = {"epoch": epoch + 1, "value": value, "metric": metric}
            if evaluate_now and plateau is not None:  # every rank lowers its LR alike
                watched = Plateau.watched_value(plateau.watch, record.get("metric"), record.get("val_loss")) \
                    if self.ctx.is_main else None
                name = metric if plateau.watch == "metric" else "-(val loss)"
                if plateau.update(distributed.broadcast(watched, self.ctx)) and self.ctx.is_main:
                    logger.info(f"{name} has not improved for {plateau.patience + 1} evaluations: LR x "
                                f"{plateau.factor:g} from the next step (scale now {plateau.scale:.3g})")
            history.append(record)
            if self.ctx.is_main:
                state = {"config": self.cfg, "meta": task.meta, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict(), "epoch": epoch + 1, "rng": rng_state(), "best": best,
                         "history": history, "plateau": plateau.state_dict() if plateau is not None else None}
                if improved:  # best first: a kill between the two saves only repeats this epoch on --resume
                    save_checkpoint(state, self.work_dir / BEST)
                save_checkpoint(state, last_path)
                shown = (f" {task.val_split} {metric} {record['metric']:.4f}" + (" (best)" if improved else "")
                         + (f" val loss {record['val_loss']:.4f}" if "val_loss" in record else "")
                         if "metric" in record else "")
                logger.info(f"epoch {epoch + 1}/{self.epochs} loss {losses['loss']:.4f} "
                            f"lr {record['lr']:.2e}{shown}")
            distributed.barrier(self.ctx)

        metrics = {}
        if self.ctx.is_main:
            best_path = self.work_dir / BEST
            if best_path.is_file():
                model.load_state_dict(load_checkpoint(best_path, map_location=self.device)["model"])
            predictions = task.predict(model, task.eval_split, self.device)
            task.write_predictions(predictions, self.work_dir / task.predictions_name)
            metrics = task.evaluate(predictions, task.eval_split)
            if task.selected_on_test:
                metrics["selected_on"] = task.eval_split
            write_json_atomic(metrics, self.work_dir / "metrics.json")
            logger.info(f"{task.eval_split} metrics (best epoch {best['epoch'] if best else '-'}): "
                        + ", ".join(f"{k} {v:.4f}" for k, v in _flat(metrics).items())
                        + (f" (best epoch picked on {task.eval_split})" if task.selected_on_test else ""))
        distributed.barrier(self.ctx)
        return distributed.broadcast(metrics, self.ctx)

    def _train_epoch(self, task: Task, net, model, optimizer, scheduler, scaler, epoch: int,
                     steps_per_epoch: int) -> dict:
        net.train()
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(task.num_train_items(), generator=generator)
        batches = global_batches(order, self.batch_size, self.ctx.rank, self.ctx.world_size)
        totals: dict[str, float] = {}
        count = 0
        with closing(task.prefetch.map(lambda indices: task.train_batch(model, indices), batches)) as built:
            shown = built
            if self.progress:
                from tqdm import tqdm

                shown = tqdm(built, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                             file=sys.stderr, mininterval=1.0, disable=None)
            for step, batch in enumerate(shown):
                count += self._train_step(net, model, optimizer, scheduler, scaler, to_device(batch, self.device),
                                          totals, epoch, step)
        means = {k: v / max(1, count) for k, v in totals.items()}
        return distributed.mean_over_ranks(means, self.ctx, self.device)

    def _train_step(self, net, model, optimizer, scheduler, scaler, batch: dict, totals: dict[str, float],
                    epoch: int, step: int) -> int:
        """One optimisation step; adds the step's losses to `totals`; returns 1."""
        with torch.autocast("cuda", enabled=self.amp) if self.amp else _nullcontext():
            out = net(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise TalInputError(f"training diverged: the loss is {loss.item()} at epoch {epoch + 1}, step "
                                f"{step + 1}; lower train.lr or check the features for extreme values")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for key, value in out.items():
            if key.startswith("loss"):
                totals[key] = totals.get(key, 0.0) + float(value.detach())
        return 1


def compile_model(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`torch.compile(net)` (train.compile): the training forward and its backward run as compiled graphs;
    checkpoints and inference keep using the uncompiled module, whose weights the graphs share.

    torch.compile compiles lazily, at the first call, and fails there with a long traceback when the
    machine cannot compile (no C++ compiler for the CPU backend, no Triton for CUDA). A tiny function is
    compiled first on `device`, so such a machine gets a one-line TalInputError naming the option and
    the fix before any training (not a silent fallback: a run that asked for compiled steps and timed
    them would be timing something else).
    """
    def probe(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2 + 1

    try:
        torch.compile(probe)(torch.ones(8, device=device))
    except Exception as exc:  # noqa: BLE001  (inductor raises many kinds; all mean "cannot compile here")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = (lines[-1] if lines else type(exc).__name__)[:200]
        raise TalInputError(f"train.compile=true: torch.compile cannot compile on this machine ({reason}); "
                            f"install a C++ compiler (e.g. apt-get install g++; on CUDA also triton), or set "
                            f"train.compile=false") from None
    return torch.compile(net)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _flat(metrics: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}@"))
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = float(value)
    return out


def train(cfg: dict, work_dir: str | Path, device: str = "cpu", resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> dict:
    """Train the config's head; see the module docstring. Returns the evaluation-split metrics.

    A work dir that holds a run already is refused unless `resume` (continue it) or `overwrite` (start
    again and replace it): nothing is lost by a repeated command.
    """
    return Trainer(cfg, work_dir, device, resume, progress, overwrite).run()


def load_trained(checkpoint: str | Path, device: str = "cpu", cfg: dict | None = None,
                 with_data: bool = False) -> tuple[Task, torch.nn.Module, dict]:
    """(task, model in eval mode, checkpoint state) from a checkpoint; with_data loads the config's data too."""
    state = load_checkpoint(checkpoint, map_location=device)
    cfg = state["config"] if cfg is None else cfg
    task = build_task(cfg, None if with_data else state["meta"])
    if with_data:
        _same_features(state["meta"], task.meta, checkpoint)
        task.meta = {**task.meta, **{k: v for k, v in state["meta"].items() if k not in task.meta or k == "vocab"}}
    model = task.build_model()
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:  # another head, or a changed size: name what differs instead of the tensors
        trained, now = state["config"].get("model") or {}, cfg.get("model") or {}
        changed = sorted(k for k in set(trained) | set(now) if trained.get(k) != now.get(k))
        raise TalInputError(f"{checkpoint}: its weights do not fit the config's model (model keys that differ: "
                            f"{', '.join(f'{k} {trained.get(k)!r} vs {now.get(k)!r}' for k in changed) or 'none'}); "
                            f"use the config it was trained with (config.yaml beside it)") from None
    return task, model.to(device).eval(), state


def _same_features(trained: dict, now: dict, checkpoint) -> None:
    """Refuse to evaluate a checkpoint on features of another dimension."""
    if trained.get("input_dim") is not None and now.get("input_dim") not in (None, trained["input_dim"]):
        raise TalInputError(f"{checkpoint}: trained on {trained['input_dim']}-d features, the config's cache holds "
                            f"{now['input_dim']}-d ones")


def evaluate_checkpoint(cfg: dict, checkpoint: str | Path, out: str | Path | None = None,
                        device: str = "cpu") -> dict:
    """Predict the config's evaluation split with a checkpoint, optionally write the predictions, score them."""
    task, model, _ = load_trained(checkpoint, device, cfg, with_data=True)
    predictions = task.predict(model, task.eval_split, torch.device(device))
    if out is not None:
        task.write_predictions(predictions, out)
    return task.evaluate(predictions, task.eval_split)
