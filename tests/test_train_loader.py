"""GPU readiness of the training loop: train.num_workers (prefetch threads), train.pin_memory, train.compile.

Tiny heads on tiny synthetic sets, as in test_engine.py (whose config helpers are reused)."""
from __future__ import annotations

import copy
import json
import threading
import time

import pytest
import torch

from test_engine import assert_same_weights, detection_cfg, grounding_cfg, kill_in_epoch_2, run, weights
from tal.datasets.synthetic import make_detection_set, make_grounding_set
from tal.engine.checkpoint import load_checkpoint
from tal.engine.trainer import Trainer
from tal.errors import TalInputError
from tal.tasks.base import Prefetcher, pin_memory
from tal.tasks.detection import DetectionTask
from tal.tasks.grounding import GroundingTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    grounding = make_grounding_set(tmp_path_factory.mktemp("grounding"), num_videos=24, queries_per_video=2,
                                   feature_dim=16, num_steps=(16, 32), val=True, seed=3)
    detection = make_detection_set(tmp_path_factory.mktemp("detection"), num_videos=16, num_classes=2,
                                   feature_dim=16, num_steps=(16, 48), seed=3)
    return {"grounding": grounding, "detection": detection}


def make_cfg(kind: str, data: dict, *extra: str) -> dict:
    return grounding_cfg(data["grounding"], *extra) if kind == "grounding" else detection_cfg(data["detection"], *extra)


def batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tal-batches")]


# ---------------------------------------------------------------- Prefetcher
def test_prefetcher_returns_results_in_order_however_the_threads_finish():
    def slow_square(i: int) -> int:
        time.sleep(0.02 * ((7 * i) % 5))  # later items often finish first
        return i * i

    for workers in (0, 1, 3):
        assert list(Prefetcher(workers).map(slow_square, range(12))) == [i * i for i in range(12)]
    assert batch_threads() == []


def test_prefetcher_runs_ahead_by_at_most_twice_the_workers_and_joins_on_close():
    started = []

    def record(i: int) -> int:
        started.append(i)
        return i

    results = Prefetcher(2).map(record, range(100))
    assert next(results) == 0
    time.sleep(0.1)
    assert len(started) <= 5  # 4 submitted before the first result, one more as it was taken
    results.close()
    assert batch_threads() == []
    assert len(started) <= 5


def test_prefetcher_raises_a_builders_error_at_its_item():
    def build(i: int) -> int:
        if i == 3:
            raise TalInputError("video v3: NaN features")
        return i

    seen = []
    with pytest.raises(TalInputError, match="video v3"):
        for value in Prefetcher(2).map(build, range(10)):
            seen.append(value)
    assert seen == [0, 1, 2]
    assert batch_threads() == []


# ---------------------------------------------------------------- num_workers: the same run
@pytest.mark.parametrize("kind", ["grounding", "detection"])
def test_num_workers_2_trains_exactly_as_num_workers_0(kind, data, tmp_path, monkeypatch):
    """Losses of every epoch, final weights and metrics (validation and test predictions also go through
    the prefetcher) bitwise equal. A2Net draws negatives from the global torch RNG in the main thread."""
    task_class = GroundingTask if kind == "grounding" else DetectionTask
    real_batch, builders = task_class.train_batch, []

    def recorded(self, model, indices):
        builders.append(threading.current_thread().name)
        return real_batch(self, model, indices)

    monkeypatch.setattr(task_class, "train_batch", recorded)
    metrics0 = run(make_cfg(kind, data, "+train.num_workers=0"), tmp_path / "w0")
    assert set(builders) == {"MainThread"}
    builders.clear()
    metrics2 = run(make_cfg(kind, data, "+train.num_workers=2"), tmp_path / "w2")
    assert len(set(builders)) == 2 and all(name.startswith("tal-batches") for name in builders)
    a, b = load_checkpoint(tmp_path / "w0" / "checkpoint_last.pt"), load_checkpoint(tmp_path / "w2" / "checkpoint_last.pt")
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    assert [r.get("val") for r in a["history"]] == [r.get("val") for r in b["history"]]
    assert_same_weights(a["model"], b["model"])
    assert metrics0 == metrics2
    name = "predictions.jsonl" if kind == "grounding" else "predictions.json"
    assert (tmp_path / "w0" / name).read_text() == (tmp_path / "w2" / name).read_text()
    assert batch_threads() == []


@pytest.mark.parametrize("kind", ["grounding", "detection"])
def test_resume_with_workers_equals_an_uninterrupted_run_without(kind, data, tmp_path, monkeypatch):
    """Killed in epoch 2 with num_workers=2, resumed with num_workers=3 (the worker count is not part of
    the training: resume accepts a change), against 2 uninterrupted epochs with num_workers=0."""
    cfg = make_cfg(kind, data, "train.warmup_epochs=0")
    full = run(cfg, tmp_path / "a")

    kill_in_epoch_2(monkeypatch)
    workers = copy.deepcopy(cfg)
    workers["train"]["num_workers"] = 2
    with pytest.raises(KeyboardInterrupt):
        run(workers, tmp_path / "b")
    monkeypatch.undo()
    workers["train"]["num_workers"] = 3
    resumed = run(workers, tmp_path / "b", resume=True)
    assert_same_weights(weights(tmp_path / "a" / "checkpoint_last.pt"), weights(tmp_path / "b" / "checkpoint_last.pt"))
    assert resumed == full


def test_a_frozen_sentence_encoder_builds_batches_in_one_thread(data):
    """MiniLM / CLIP vectors are encoded with the other new sentences of their first batch, so the order of
    building matters: the task says so and the trainer caps the workers at one thread."""
    meta = {"input_dim": 16, "num_steps": 8, "tokenizer": "split"}
    lstm = GroundingTask(grounding_cfg(data["grounding"]), meta)
    frozen = GroundingTask(grounding_cfg(data["grounding"], "model.text.encoder=minilm"), meta)
    assert lstm.concurrent_batches and not frozen.concurrent_batches


# ---------------------------------------------------------------- pin_memory
def test_pin_memory_defaults_to_the_device_and_is_ignored_on_the_cpu(data, tmp_path):
    cfg = make_cfg("detection", data)
    assert Trainer(copy.deepcopy(cfg), tmp_path / "a").pin_memory is False
    forced = make_cfg("detection", data, "+train.pin_memory=true", "+train.num_workers=1", "train.epochs=1")
    assert Trainer(copy.deepcopy(forced), tmp_path / "b").pin_memory is False
    metrics = run(forced, tmp_path / "b")
    assert 0 <= metrics["average_mAP"] <= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_pin_memory_without_cuda_returns_the_batch_itself():
    batch = {"features": torch.zeros(2, 3), "segments": [torch.ones(1, 2)], "name": "v"}
    assert pin_memory(batch) is batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pin_memory_pins_every_tensor_of_a_batch():
    batch = pin_memory({"features": torch.zeros(2, 3), "segments": [torch.ones(1, 2)], "name": "v"})
    assert batch["features"].is_pinned() and batch["segments"][0].is_pinned() and batch["name"] == "v"


# ---------------------------------------------------------------- invalid values
@pytest.mark.parametrize("setting, message", [
    ("+train.num_workers=-1", r"train\.num_workers must be a whole number >= 0, got -1"),
    ("+train.num_workers=1.5", r"train\.num_workers must be a whole number >= 0, got 1\.5"),
    ("+train.num_workers=two", r"train\.num_workers must be a whole number >= 0, got 'two'"),
    ("+train.pin_memory=maybe", r"train\.pin_memory must be true or false, got 'maybe'"),
    ("+train.compile=1", r"train\.compile must be true or false, got 1"),
    ("+train.amp=fast", r"train\.amp must be true or false, got 'fast'"),
])
def test_invalid_gpu_settings_are_one_line_errors(setting, message, data, tmp_path):
    with pytest.raises(TalInputError, match=message) as info:
        run(make_cfg("detection", data, setting), tmp_path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- compile
def test_compile_on_a_machine_that_cannot_is_a_one_line_error(data, tmp_path, monkeypatch):
    def no_compiler(fn, *args, **kwargs):
        def fails(*a, **k):
            raise RuntimeError("backend='inductor' raised:\nInvalidCxxCompiler: No working C++ compiler found")
        return fails

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.raises(TalInputError) as info:
        run(make_cfg("detection", data, "+train.compile=true"), tmp_path)
    text = str(info.value)
    assert "\n" not in text and text.startswith("train.compile=true: torch.compile cannot compile on this machine")
    assert "No working C++ compiler found" in text and "train.compile=false" in text and "g++" in text
    assert not (tmp_path / "checkpoint_last.pt").exists()


def test_compile_is_off_by_default_and_wraps_only_the_training_module(data, tmp_path, monkeypatch):
    """train.compile=true hands the training module to torch.compile (here a stand-in that records it and
    returns it unchanged); the checkpoints hold the plain module's weights, equal to an uncompiled run's."""
    compiled = []

    def record(module, *args, **kwargs):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", record)
    cfg = make_cfg("detection", data, "train.epochs=1")
    run(cfg, tmp_path / "plain")
    assert compiled == []
    run(make_cfg("detection", data, "train.epochs=1", "+train.compile=true"), tmp_path / "compiled")
    assert len(compiled) == 2 and isinstance(compiled[1], torch.nn.Module)  # the probe, then the head
    assert_same_weights(weights(tmp_path / "plain" / "checkpoint_last.pt"),
                        weights(tmp_path / "compiled" / "checkpoint_last.pt"))
    assert not any(k.startswith("_orig_mod") for k in weights(tmp_path / "compiled" / "checkpoint_last.pt"))


@pytest.mark.slow
def test_compile_trains_a_tiny_head_like_eager(data, tmp_path):
    """The real torch.compile (inductor, a C++ compiler): one epoch of tiny A2Net, losses close to eager
    (not equal: inductor draws A2Net's easy negatives with its own random numbers, and fuses the sums)."""
    eager = run(make_cfg("detection", data, "train.epochs=1"), tmp_path / "eager")
    run(make_cfg("detection", data, "train.epochs=1", "+train.compile=true"), tmp_path / "compiled")
    a = load_checkpoint(tmp_path / "eager" / "checkpoint_last.pt")["history"][0]["loss"]["loss"]
    b = load_checkpoint(tmp_path / "compiled" / "checkpoint_last.pt")["history"][0]["loss"]["loss"]
    assert b == pytest.approx(a, rel=1e-2)
    assert json.loads((tmp_path / "compiled" / "metrics.json").read_text()).keys() == eager.keys()
