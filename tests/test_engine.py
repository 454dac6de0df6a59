"""Training engine: the work-dir contract, exact resume, config and data checks, checkpoints, LR schedules,
determinism, `tal eval`, and DDP against one process. Tiny heads on tiny synthetic sets (seconds in all)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tal.cli.main import main
from tal.config import load_config
from tal.datasets.synthetic import make_detection_set, make_grounding_set
from tal.engine import trainer as trainer_module
from tal.engine.checkpoint import load_checkpoint, save_checkpoint
from tal.engine.trainer import train
from tal.errors import TalInputError
from tal.features.cache import open_feature_cache, write_feature_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
CONFIG_2DTAN = REPO / "configs" / "synthetic" / "2dtan.yaml"
CONFIG_A2NET = REPO / "configs" / "synthetic" / "a2net.yaml"
# 24 train queries (12 videos x 2), batches of 8: 3 steps an epoch, also 3 global steps for 2 DDP processes.
GROUNDING_TINY = ["model.num_clips=8", "model.hidden_dim=8", "model.map_layers=1", "model.text.embed_dim=8",
                  "model.text.hidden_dim=8", "train.epochs=2", "train.batch_size=8", "eval.interval=1"]
DETECTION_TINY = ["dataset.num_steps=32", "model.base_dim=8", "model.pyramid_dims=[8, 8]", "model.head_dim=8",
                  "train.epochs=2", "train.batch_size=4", "eval.interval=1"]
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) loss ")


@contextlib.contextmanager
def one_thread():
    """`one_torch_thread` for module-scoped fixtures (function fixtures cannot serve them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- data, configs, runs
@pytest.fixture(scope="module")
def grounding_set(tmp_path_factory):
    """24 videos of 16-32 16-d features: 12 train (24 queries), 6 val and 6 test videos (12 queries each)."""
    return make_grounding_set(tmp_path_factory.mktemp("grounding"), num_videos=24, queries_per_video=2,
                              feature_dim=16, num_steps=(16, 32), val=True, seed=3)


@pytest.fixture(scope="module")
def detection_set(tmp_path_factory):
    """16 videos of 16-48 16-d features, 2 classes; the last 4 videos are "validation"."""
    return make_detection_set(tmp_path_factory.mktemp("detection"), num_videos=16, num_classes=2, feature_dim=16,
                              num_steps=(16, 48), seed=3)


def grounding_overrides(gset) -> list[str]:
    return [f"dataset.features={gset.features}", f"dataset.train={gset.train}", f"+dataset.val={gset.val}",
            f"dataset.test={gset.test}", *GROUNDING_TINY]


def detection_overrides(dset) -> list[str]:
    return [f"dataset.features={dset.features}", f"dataset.annotations={dset.annotations}", *DETECTION_TINY]


def grounding_cfg(gset, *extra: str) -> dict:
    return load_config(CONFIG_2DTAN, grounding_overrides(gset) + list(extra))


def detection_cfg(dset, *extra: str) -> dict:
    return load_config(CONFIG_A2NET, detection_overrides(dset) + list(extra))


def make_cfg(kind: str, data: dict, *extra: str) -> dict:
    return grounding_cfg(data["grounding"], *extra) if kind == "grounding" else detection_cfg(data["detection"], *extra)


@pytest.fixture(scope="module")
def data(grounding_set, detection_set) -> dict:
    return {"grounding": grounding_set, "detection": detection_set}


def run(cfg: dict, work_dir: Path, resume: bool = False) -> dict:
    return train(copy.deepcopy(cfg), work_dir, progress=False, resume=resume)


def weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), \
                f"{key} differs by {(a[key].double() - b[key].double()).abs().max().item():.3g}"
        else:
            assert a[key] == b[key], key  # e.g. the text encoder's vocabulary (extra state)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> dict:
    """One 2-epoch run per task, shared by the tests that only read a finished work dir."""
    out = {}
    with one_thread():
        for kind in ("grounding", "detection"):
            cfg = make_cfg(kind, data)
            work_dir = tmp_path_factory.mktemp(f"run_{kind}")
            out[kind] = {"cfg": cfg, "dir": work_dir, "metrics": run(cfg, work_dir)}
    return out


def epoch_lines(work_dir: Path) -> list[tuple[int, int]]:
    text = (work_dir / "train.log").read_text(encoding="utf-8")
    return [(int(m.group(1)), int(m.group(2))) for m in EPOCH_LINE.finditer(text)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- 1. the work dir (DESIGN.md `tal train`)
def test_tal_train_grounding_writes_the_work_dir_contract(data, trained, tmp_path, capsys):
    gset = data["grounding"]
    work_dir = tmp_path / "run"
    overrides = grounding_overrides(gset)
    assert main(["train", str(CONFIG_2DTAN), "--work-dir", str(work_dir), "--no-progress", "--set", *overrides]) == 0
    printed = capsys.readouterr().out
    assert len(printed.strip().splitlines()) == 1  # one JSON object on stdout, the log goes to stderr
    metrics = json.loads(printed)

    cfg = load_config(CONFIG_2DTAN, overrides)
    for name in ("config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "predictions.jsonl", "metrics.json",
                 "train.log"):
        assert (work_dir / name).is_file(), name
    assert sorted(p.name for p in work_dir.iterdir()) == sorted(
        ["config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "predictions.jsonl", "metrics.json", "train.log"])
    assert load_config(work_dir / "config.yaml") == cfg  # resolved and reloadable
    assert json.loads((work_dir / "metrics.json").read_text()) == metrics
    assert metrics == trained["grounding"]["metrics"]  # the CLI is the same run as train() with the same config
    assert list(metrics) == ["R@1,IoU=0.3", "R@1,IoU=0.5", "R@1,IoU=0.7", "R@5,IoU=0.3", "R@5,IoU=0.5",
                             "R@5,IoU=0.7", "mIoU"]
    assert all(0.0 <= v <= 1.0 for v in metrics.values())

    # predictions.jsonl: the test queries in order, moments [s, e, score] inside the video, best first
    rows = read_jsonl(work_dir / "predictions.jsonl")
    truth = read_jsonl(gset.test)
    assert len(rows) == len(truth) == 12
    for row, query in zip(rows, truth):
        assert set(row) == {"video", "query", "segment", "moments"}
        assert (row["video"], row["query"], row["segment"]) == (query["video"], query["query"], query["segment"])
        moments = np.asarray(row["moments"], dtype=np.float64)
        assert moments.ndim == 2 and moments.shape[1] == 3 and 1 <= len(moments) <= cfg["eval"]["top_k"]
        assert (moments[:, 0] >= 0).all() and (moments[:, 1] <= query["duration"] + 1e-9).all()
        assert (moments[:, 0] < moments[:, 1]).all()
        assert (np.diff(moments[:, 2]) <= 0).all()

    # metrics.json is what `tal evaluate grounding` prints for predictions.jsonl
    assert main(["evaluate", "grounding", "--pred", str(work_dir / "predictions.jsonl"),
                 "--nms", str(cfg["eval"]["nms"])]) == 0
    assert json.loads(capsys.readouterr().out) == metrics

    assert epoch_lines(work_dir) == [(1, 2), (2, 2)]
    last, best = load_checkpoint(work_dir / "checkpoint_last.pt"), load_checkpoint(work_dir / "checkpoint_best.pt")
    assert last["epoch"] == 2 and [h["epoch"] for h in last["history"]] == [1, 2]
    assert best["epoch"] == last["best"]["epoch"]
    assert last["best"]["value"] == max(h["metric"] for h in last["history"])


def test_detection_work_dir_contract(data, trained, capsys):
    dset, run_ = data["detection"], trained["detection"]
    work_dir, cfg = run_["dir"], run_["cfg"]
    for name in ("config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "predictions.json", "metrics.json",
                 "train.log"):
        assert (work_dir / name).is_file(), name
    assert load_config(work_dir / "config.yaml") == cfg
    metrics = json.loads((work_dir / "metrics.json").read_text())
    assert metrics == run_["metrics"]
    assert list(metrics) == ["mAP", "average_mAP", "tiou_thresholds"]
    assert list(metrics["mAP"]) == ["0.30", "0.40", "0.50", "0.60", "0.70"]

    annotations = json.loads(Path(dset.annotations).read_text())["database"]
    validation = {vid for vid, a in annotations.items() if a["subset"] == "validation"}
    predictions = json.loads((work_dir / "predictions.json").read_text())
    assert set(predictions) == {"version", "results", "external_data"} and predictions["external_data"] == {}
    assert set(predictions["results"]) == validation
    assert sum(len(rows) for rows in predictions["results"].values()) > 0
    for vid, rows in predictions["results"].items():
        for row in rows:
            assert set(row) == {"label", "score", "segment"} and row["label"] in dset.classes
            start, end = row["segment"]
            assert 0.0 <= start < end <= annotations[vid]["duration"] + 1e-9

    tiou = ",".join(str(t) for t in cfg["eval"]["tiou"])
    assert main(["evaluate", "detection", "--gt", str(dset.annotations), "--pred", str(work_dir / "predictions.json"),
                 "--subset", "validation", "--tiou", tiou]) == 0
    assert json.loads(capsys.readouterr().out) == metrics
    assert epoch_lines(work_dir) == [(1, 2), (2, 2)]


@pytest.mark.parametrize("text", ["0.3:0.7:0.1", "0.5:0.95:0.05", "0.1:0.9:0.1"])
def test_detection_eval_tiou_range_is_the_one_tal_evaluate_uses(text):
    """eval.tiou "A:B:STEP" must give bit-identical thresholds to `tal evaluate --tiou A:B:STEP`, else a tIoU
    that lands on a threshold counts in one and not the other and metrics.json differs from the CLI."""
    from tal.cli.evaluate import _thresholds
    from tal.tasks.detection import parse_tiou

    assert parse_tiou(text).tolist() == _thresholds(text).tolist()


def test_each_run_logs_to_the_stderr_of_its_time(data, tmp_path, monkeypatch):
    """A second run in one process (a notebook, tal.api, tests) must not log to the first run's stderr."""
    cfg = grounding_cfg(data["grounding"], "train.epochs=1")
    streams = []
    for name in ("first", "second"):
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        streams.append(sys.stderr)
        run(cfg, tmp_path / name)
    assert [EPOCH_LINE.findall(s.getvalue()) for s in streams] == [[("1", "1")], [("1", "1")]]


# ---------------------------------------------------------------- 2. exact resume
@pytest.mark.parametrize("kind", ["grounding", "detection"])
def test_resume_with_more_epochs_equals_an_uninterrupted_run(kind, data, trained, tmp_path):
    """Run B: 1 epoch, then --resume with train.epochs=2; run A: 2 epochs. A2Net draws its easy negatives
    from the global torch RNG, so this also checks the RNG state in the checkpoint.

    Two conditions make "more epochs" replay run A (see the report of this test's author): the configs'
    cosine schedule warms up for exactly epoch 1, so B's epoch-1 LRs do not depend on train.epochs (without
    the warm-up a 1-epoch cosine decays to 0 within epoch 1 and the weights differ); and eval.interval=1,
    so A also scores epoch 1 (with interval 5, B scores epoch 1 as its last epoch and A does not, and the
    best checkpoint, hence metrics.json, can differ although the final weights are equal)."""
    cfg = make_cfg(kind, data)
    assert cfg["train"]["warmup_epochs"] == 1 and cfg["train"]["schedule"] == "cosine"
    short = copy.deepcopy(cfg)
    short["train"]["epochs"] = 1
    run(short, tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["epoch"] == 1
    metrics = run(cfg, tmp_path, resume=True)

    a = trained[kind]
    assert_same_weights(weights(a["dir"] / "checkpoint_last.pt"), weights(tmp_path / "checkpoint_last.pt"))
    assert metrics == a["metrics"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == a["metrics"]
    assert epoch_lines(tmp_path) == [(1, 1), (2, 2)]  # the log is appended to
    assert "resumed from" in (tmp_path / "train.log").read_text()
    assert load_config(tmp_path / "config.yaml")["train"]["epochs"] == 2


def kill_in_epoch_2(monkeypatch) -> None:
    """Training raises KeyboardInterrupt when epoch 2 starts (epoch 1 is saved), until monkeypatch.undo()."""
    real_epoch = trainer_module.Trainer._train_epoch

    def killed_in_epoch_2(self, task, net, model, optimizer, scheduler, scaler, epoch, steps_per_epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(self, task, net, model, optimizer, scheduler, scaler, epoch, steps_per_epoch)

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", killed_in_epoch_2)


@pytest.mark.parametrize("kind", ["grounding", "detection"])
def test_resume_after_a_kill_is_exact_with_a_schedule_that_depends_on_epochs(kind, data, tmp_path, monkeypatch):
    """A run stopped during epoch 2 (cosine without warm-up: every LR depends on train.epochs), resumed."""
    cfg = make_cfg(kind, data, "train.warmup_epochs=0")
    full = run(cfg, tmp_path / "a")

    kill_in_epoch_2(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "b")
    monkeypatch.undo()
    assert not (tmp_path / "b" / "metrics.json").exists()
    resumed = run(cfg, tmp_path / "b", resume=True)
    assert_same_weights(weights(tmp_path / "a" / "checkpoint_last.pt"), weights(tmp_path / "b" / "checkpoint_last.pt"))
    assert resumed == full


# ---------------------------------------------------------------- 3. what resume refuses
def test_resume_refuses_a_changed_config_naming_the_sections(data, tmp_path):
    cfg = grounding_cfg(data["grounding"], "train.epochs=1")
    run(cfg, tmp_path)
    changed = copy.deepcopy(cfg)
    changed["train"].update(epochs=3, lr=0.5)
    changed["model"]["hidden_dim"] = 16
    with pytest.raises(TalInputError) as info:
        run(changed, tmp_path, resume=True)
    message = str(info.value)
    assert str(tmp_path / "checkpoint_last.pt") in message and "['model', 'train']" in message
    assert "different config" in message and "--work-dir" in message

    only_seed = copy.deepcopy(cfg)
    only_seed["seed"] = 1
    with pytest.raises(TalInputError, match=r"\['seed'\]"):
        run(only_seed, tmp_path, resume=True)
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["epoch"] == 1  # nothing was overwritten


def test_resume_without_a_checkpoint_is_a_clear_error(data, tmp_path, capsys):
    with pytest.raises(TalInputError, match=r"--resume: .*checkpoint_last\.pt does not exist; train without --resume"):
        run(grounding_cfg(data["grounding"]), tmp_path / "empty", resume=True)
    code = main(["train", str(CONFIG_2DTAN), "--work-dir", str(tmp_path / "empty2"), "--resume", "--no-progress",
                 "--set", *grounding_overrides(data["grounding"])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("tal train: error: --resume: ")


# ---------------------------------------------------------------- 4. checkpoints
def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint({"config": {"seed": 0}, "meta": {}, "model": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"config": {"seed": 1}, "meta": {}, "model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pt"]  # no temp file left
    state = load_checkpoint(path)
    assert state["format"] == "tal-checkpoint" and state["config"] == {"seed": 0}
    assert torch.equal(state["model"]["w"], torch.ones(3))


def _bad_checkpoint(kind: str, path: Path) -> None:
    if kind == "truncated":
        save_checkpoint({"config": {}, "meta": {}, "model": {"w": torch.randn(64, 64)}}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "pickle frame of 2**63 bytes":  # random bytes that start with the FRAME opcode
        path.write_bytes(b"\x95" + b"\xff" * 8 + bytes(32))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign torch dict":
        torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    elif kind == "torch tensor":
        torch.save(torch.ones(2), path)
    elif kind == "tal checkpoint without weights":
        save_checkpoint({"config": {}, "meta": {}}, path)


@pytest.mark.parametrize("kind, reason", [
    ("truncated", "not a readable checkpoint"), ("random bytes", "not a readable checkpoint"),
    ("pickle frame of 2**63 bytes", "not a readable checkpoint"), ("empty", "not a readable checkpoint"),
    ("foreign torch dict", "not a tal checkpoint"), ("torch tensor", "not a tal checkpoint"),
    ("tal checkpoint without weights", "no 'model' entry"),
])
def test_load_checkpoint_refuses_bad_files_naming_them(kind, reason, tmp_path):
    path = tmp_path / "bad.pt"
    _bad_checkpoint(kind, path)
    with pytest.raises(TalInputError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and reason in str(info.value)


def test_load_checkpoint_of_a_missing_file(tmp_path):
    with pytest.raises(TalInputError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "foreign torch dict"])
def test_tal_eval_with_a_bad_checkpoint_exits_2_with_one_line(kind, trained, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    _bad_checkpoint(kind, bad)
    code = main(["eval", str(trained["grounding"]["dir"] / "config.yaml"), "--checkpoint", str(bad)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"tal eval: error: {bad}: ")


# ---------------------------------------------------------------- 5. the plateau schedule in training
# (the schedule by hand: test_optim.py)
def test_trainer_plateau_schedule_follows_the_metric_and_resumes_exactly(data, tmp_path, monkeypatch):
    """Scripted validation metrics 0.5, 0.4, 0.3, 0.6 with patience 0 and factor 0.5: the LR halves after
    epochs 2 and 3 (the record's lr is the one epoch trained with); a run stopped after epoch 2 and
    resumed replays it exactly, the plateau's memory coming from the checkpoint."""
    cfg = make_cfg("detection", data, "train.schedule=plateau", "train.warmup_epochs=0", "train.lr=0.01",
                   "train.epochs=4", "+train.plateau_factor=0.5", "+train.plateau_patience=0")

    def scripted():
        values = iter([0.5, 0.4, 0.3, 0.6])
        monkeypatch.setattr(trainer_module, "metric_value", lambda metrics, name: next(values))

    scripted()
    run(cfg, tmp_path / "a")
    state = load_checkpoint(tmp_path / "a" / "checkpoint_last.pt")
    assert [r["lr"] for r in state["history"]] == pytest.approx([0.01, 0.01, 0.005, 0.0025])
    assert state["plateau"] == {"scale": 0.25, "best": 0.6, "misses": 0}
    assert "mAP/0.50 has not improved for 1 evaluations: LR x 0.5" in (tmp_path / "a" / "train.log").read_text()

    scripted()
    short = copy.deepcopy(cfg)
    short["train"]["epochs"] = 2
    run(short, tmp_path / "b")
    run(cfg, tmp_path / "b", resume=True)
    resumed = load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    assert [r["lr"] for r in resumed["history"]] == [r["lr"] for r in state["history"]]
    assert_same_weights(state["model"], resumed["model"])


# ---------------------------------------------------------------- 6. determinism
def test_same_seed_same_run_other_seed_other_weights(data, trained, tmp_path):
    cfg = trained["grounding"]["cfg"]
    assert run(cfg, tmp_path / "again") == trained["grounding"]["metrics"]
    first = weights(trained["grounding"]["dir"] / "checkpoint_last.pt")
    assert_same_weights(first, weights(tmp_path / "again" / "checkpoint_last.pt"))
    other = copy.deepcopy(cfg)
    other["seed"] = 1
    run(other, tmp_path / "seed1")
    second = weights(tmp_path / "seed1" / "checkpoint_last.pt")
    assert all(not torch.equal(first[k], second[k])
               for k in ("frame.conv.weight", "text.lstm.weight_ih_l0", "score.weight"))


# ---------------------------------------------------------------- 7. tal eval
@pytest.mark.parametrize("kind", ["grounding", "detection"])
def test_tal_eval_reproduces_metrics_json_and_writes_the_predictions(kind, trained, tmp_path, capsys):
    work_dir = trained[kind]["dir"]
    name = "predictions.jsonl" if kind == "grounding" else "predictions.json"
    out = tmp_path / name
    code = main(["eval", str(work_dir / "config.yaml"), "--checkpoint", str(work_dir / "checkpoint_best.pt"),
                 "--out", str(out)])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == json.loads((work_dir / "metrics.json").read_text())
    if kind == "grounding":
        assert read_jsonl(out) == read_jsonl(work_dir / name)
    else:
        assert json.loads(out.read_text()) == json.loads((work_dir / name).read_text())


# ---------------------------------------------------------------- 8. bad data through the task
def test_grounding_query_of_a_video_without_features(data, tmp_path, capsys):
    gset = data["grounding"]
    train_file = tmp_path / "train.jsonl"
    ghost = {"video": "ghost_video", "duration": 10.0, "query": "a person opens the door", "segment": [1.0, 2.0]}
    train_file.write_text(Path(gset.train).read_text() + json.dumps(ghost) + "\n")
    cfg = grounding_cfg(gset, f"dataset.train={train_file}")
    with pytest.raises(TalInputError) as info:
        run(cfg, tmp_path / "run")
    message = str(info.value)
    assert str(train_file) in message and "ghost_video" in message and str(gset.features) in message
    code = main(["train", str(CONFIG_2DTAN), "--work-dir", str(tmp_path / "run2"), "--no-progress", "--set",
                 *grounding_overrides(gset), f"dataset.train={train_file}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "ghost_video" in err


def test_nan_feature_is_an_error_naming_the_cache_and_video(data, tmp_path):
    gset = data["grounding"]
    cache = open_feature_cache(gset.features)
    bad_video = read_jsonl(gset.train)[0]["video"]
    items = []
    for vid in cache.videos:
        features, meta = cache.features(vid).copy(), cache.meta(vid)
        if vid == bad_video:
            features[3, 5] = np.nan
        items.append((vid, features, {"fps": meta.fps, "stride": meta.stride, "window": meta.window,
                                      "duration": meta.duration}))
    bad_cache = tmp_path / "nan.h5"
    write_feature_cache(bad_cache, items, {"backbone": "synthetic-grounding"})
    with pytest.raises(TalInputError) as info:
        run(grounding_cfg(gset, f"dataset.features={bad_cache}"), tmp_path / "run")
    message = str(info.value)
    assert str(bad_cache) in message and repr(bad_video) in message and "NaN" in message


@pytest.mark.parametrize("kind", ["grounding", "detection"])
def test_wrong_model_input_dim_is_refused(kind, data, tmp_path):
    cfg = make_cfg(kind, data, "+model.input_dim=32")
    with pytest.raises(TalInputError) as info:
        run(cfg, tmp_path)
    assert "model.input_dim=32" in str(info.value) and str(data[kind].features) in str(info.value)
    assert "16-d" in str(info.value)


@pytest.mark.parametrize("kind", ["grounding", "detection"])
def test_unknown_dataset_key_is_refused(kind, data, tmp_path):
    cfg = make_cfg(kind, data)
    cfg["dataset"]["featurs"] = "x.h5"
    with pytest.raises(TalInputError, match=rf"unknown dataset key\(s\) for the {kind} task: \['featurs'\]"):
        run(cfg, tmp_path)


@pytest.mark.parametrize("kind, key", [("grounding", "train"), ("grounding", "features"),
                                       ("detection", "annotations")])
def test_missing_dataset_entry_is_refused(kind, key, data, tmp_path):
    cfg = make_cfg(kind, data)
    del cfg["dataset"][key]
    with pytest.raises(TalInputError, match=rf"dataset\.{key} is not set"):
        run(cfg, tmp_path)


def test_unknown_train_key_is_refused(data, tmp_path):
    cfg = grounding_cfg(data["grounding"])
    cfg["train"]["epoch"] = 3
    with pytest.raises(TalInputError, match=r"unknown train key\(s\).*\['epoch'\]"):
        run(cfg, tmp_path)


# ---------------------------------------------------------------- 9. DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_process(data, trained, tmp_path):
    """torchrun with 2 CPU processes, global batch 8 (4 each), 24 queries: the same 3 steps an epoch as one
    process; DDP averages the two halves' gradients, which equals the full batch's mean loss gradient."""
    cfg = trained["grounding"]["cfg"]
    assert cfg["train"]["batch_size"] % 2 == 0 and len(read_jsonl(data["grounding"].train)) % 8 == 0
    work_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(_free_port()), "-m", "tal", "train", str(CONFIG_2DTAN), "--work-dir", str(work_dir),
         "--no-progress", "--set", *grounding_overrides(data["grounding"])],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in (work_dir / "train.log").read_text()  # it really ran distributed
    printed = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # only rank 0 prints the metrics
    assert epoch_lines(work_dir) == [(1, 2), (2, 2)]  # only rank 0 logs

    single = weights(trained["grounding"]["dir"] / "checkpoint_last.pt")
    ddp = weights(work_dir / "checkpoint_last.pt")
    assert list(single) == list(ddp)
    for key, value in single.items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(ddp[key].double(), value.double(), rtol=0, atol=1e-5), \
                f"{key}: {(ddp[key].double() - value.double()).abs().max().item():.3g}"
    assert json.loads(printed[0]) == pytest.approx(trained["grounding"]["metrics"], abs=1e-9)


LEAVE_SCRIPT = """
import os, pathlib, torch
from torch import nn
from tal.distributed import join_process_group, leave_process_group
join_process_group("gloo")
net = nn.parallel.DistributedDataParallel(nn.Linear(4, 4))  # imports torch._dynamo, as the trainer's DDP does
net(torch.randn(2, 4)).sum().backward()
del net
leave_process_group(clean=True)
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
pathlib.Path(f"threads.{os.environ['RANK']}.txt").write_text(",".join(names))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_leaving_the_process_group_joins_gloo_threads(tmp_path):
    """Gloo's worker threads must be gone once a rank leaves: one still freeing a collective's tensors while
    the interpreter shuts down aborts the process (it did, in about 1 DDP run in 5). With torch._dynamo
    imported after init_process_group the group outlived destroy_process_group and its threads ran on."""
    script = tmp_path / "leave.py"
    script.write_text(LEAVE_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(_free_port()), str(script)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}, cwd=tmp_path, capture_output=True,
        text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for rank in (0, 1):
        names = (tmp_path / f"threads.{rank}.txt").read_text().split(",")
        assert not [name for name in names if "gloo" in name], names
