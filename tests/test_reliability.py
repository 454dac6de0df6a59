"""The catalogue of bad inputs and faults: each row runs `tal ...` as a user would and pins the exit status and
a fragment of the one-line message; the checks after it assert that nothing was lost or silently changed."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tal.cli.main import main
from tal.datasets.synthetic import make_grounding_set
from tal.features.cache import write_feature_cache

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "synthetic" / "2dtan.yaml"
TINY = ["model.num_clips=8", "model.hidden_dim=8", "model.map_layers=1", "model.text.embed_dim=8",
        "model.text.hidden_dim=8", "train.epochs=1", "train.batch_size=8", "eval.interval=1"]
META = {"fps": 10.0, "stride": 4, "window": 4, "duration": 8.0}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny grounding set, one finished run on it, and the files the bad cases below point at."""
    root = tmp_path_factory.mktemp("reliability")
    gset = make_grounding_set(root / "data", num_videos=12, queries_per_video=2, feature_dim=16,
                              num_steps=(16, 24), val=False, seed=5)
    overrides = [f"dataset.features={gset.features}", f"dataset.train={gset.train}", f"dataset.test={gset.test}",
                 *TINY]
    run = root / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(CONFIG), "--work-dir", str(run), "--no-progress", "--set", *overrides]) == 0
    finally:
        torch.set_num_threads(threads)
    files = {"root": root, "run": run, "features": gset.features, "train": gset.train, "test": gset.test,
             "overrides": overrides}
    files["evil"] = root / "evil.pt"
    files["marker"] = root / "PWNED"
    torch.save({"format": "tal-checkpoint", "version": 1, "config": {}, "meta": {}, "model": {},
                "x": _Payload(str(files["marker"]))}, files["evil"])
    (root / "latin1.yaml").write_bytes("task: grounding\n# caf\xe9\n".encode("latin-1"))
    (root / "bad.yaml").write_text("train:\n  epochs: 3\n  lr: [0.1\n")
    (root / "latin1.jsonl").write_bytes(b'{"video": "v", "duration": 8, "query": "caf\xe9", "segment": [1, 2]}\n')
    (root / "latin1_list.txt").write_bytes(b"a.mp4\n\xff\xfe.mp4\n")
    (root / "wordless.jsonl").write_text(json.dumps({"video": "v", "duration": 8, "query": "?!", "segment": [1, 2]})
                                         + "\n")
    (root / "afile").write_text("x")
    existing = root / "existing.h5"
    write_feature_cache(existing, [("v", np.zeros((3, 4), np.float32), META)], {"backbone": "x"})
    files["existing"] = existing
    npy = root / "npy"
    npy.mkdir()
    np.save(npy / "a.npy", np.ones((3, 4), np.float32))
    np.save(npy / "empty.npy", np.zeros((0, 4), np.float32))
    files["npy"] = npy
    return files


class _Payload:
    """Unpickling calls os.system: what a hostile checkpoint would hold."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _train(w, *extra):
    return ["train", str(CONFIG), "--no-progress", "--set", *w["overrides"], *extra]


IMPORT = ["import-features", "--format", "npy-dir", "--fps", "30", "--stride", "4", "--window", "16"]

# (case id, argv built from the world, exit status, message fragment)
CASES = [
    ("checkpoint-runs-code", lambda w: ["eval", str(w["run"] / "config.yaml"), "--checkpoint", str(w["evil"])], 2,
     "refused: the file holds a Python object that loading would run (posix.system)"),
    ("query-checkpoint-runs-code", lambda w: ["query", "--checkpoint", str(w["evil"]), "--features",
                                              str(w["features"]), "--video", "x", "a"], 2, "refused"),
    ("train-over-finished-run", lambda w: _train(w, "--work-dir", str(w["run"])), 2,
     "holds a run already (checkpoint_last.pt, checkpoint_best.pt, metrics.json): --resume continues it, "
     "--overwrite trains again from scratch"),
    ("train-work-dir-is-a-file", lambda w: _train(w, "--work-dir", str(w["root"] / "afile")), 2,
     "afile: a file, not a folder"),
    ("resume-and-overwrite", lambda w: _train(w, "--work-dir", str(w["run"]), "--resume", "--overwrite"), 2,
     "not allowed with argument"),
    ("epochs-abc", lambda w: _train(w, "train.epochs=abc", "--work-dir", str(w["root"] / "r1")), 2,
     "train.epochs must be a whole number >= 1, got 'abc'"),
    ("epochs-list", lambda w: _train(w, "train.epochs=[1,2]", "--work-dir", str(w["root"] / "r2")), 2,
     "train.epochs must be a whole number >= 1, got [1, 2]"),
    ("batch-size-2.5", lambda w: _train(w, "train.batch_size=2.5", "--work-dir", str(w["root"] / "r3")), 2,
     "train.batch_size must be a whole number >= 1, got 2.5"),
    ("negative-lr", lambda w: _train(w, "train.lr=-1", "--work-dir", str(w["root"] / "r4")), 2,
     "train.lr must be a number > 0, got -1"),
    ("zero-clips", lambda w: _train(w, "model.num_clips=0", "--work-dir", str(w["root"] / "r5")), 2,
     "model.num_clips must be a whole number >= 1, got 0"),
    ("yaml-not-utf8", lambda w: ["train", str(w["root"] / "latin1.yaml")], 2,
     "latin1.yaml:2: not UTF-8 text; save the config as UTF-8"),
    ("yaml-line-number", lambda w: ["train", str(w["root"] / "bad.yaml")], 2, "bad.yaml:4:1: malformed YAML"),
    ("jsonl-not-utf8", lambda w: ["evaluate", "grounding", "--pred", str(w["root"] / "latin1.jsonl")], 2,
     "latin1.jsonl:1: not UTF-8 text"),
    ("video-list-not-utf8", lambda w: ["extract-features", "--video-list", str(w["root"] / "latin1_list.txt"),
                                       "--out", str(w["root"] / "x.h5"), "--backbone", "handcrafted"], 2,
     "latin1_list.txt:2: not UTF-8 text"),
    ("training-jsonl-wordless", lambda w: _train(w, f"dataset.train={w['root'] / 'wordless.jsonl'}", "--work-dir",
                                                 str(w["root"] / "r6")), 2,
     "wordless.jsonl:1: 'query' '?!' has no word in it"),
    ("eval-other-hidden-dim", lambda w: ["eval", str(w["run"] / "config.yaml"), "--checkpoint",
                                         str(w["run"] / "checkpoint_best.pt"), "--set", "model.hidden_dim=16"], 2,
     "its weights do not fit the config's model (model keys that differ: hidden_dim 8 vs 16)"),
    ("import-over-existing", lambda w: [*IMPORT, str(w["npy"]), "--out", str(w["existing"])], 2,
     "existing.h5 exists already; choose another --out, or pass --overwrite to replace it"),
    ("import-out-is-a-folder", lambda w: [*IMPORT, str(w["npy"]), "--out", str(w["npy"])], 2,
     "npy: a folder; give a file name"),
    ("import-out-in-missing-folder", lambda w: [*IMPORT, str(w["npy"]), "--out", str(w["root"] / "no" / "f.h5")],
     2, "does not exist; create it first"),
    ("extract-window-0", lambda w: ["extract-features", "a.mp4", "--out", str(w["root"] / "w0.h5"), "--backbone",
                                    "handcrafted", "--window", "0"], 2, "must be positive (got 0, 0, None)"),
    ("extract-stride-0", lambda w: ["extract-features", "a.mp4", "--out", str(w["root"] / "s0.h5"), "--backbone",
                                    "handcrafted", "--stride", "0"], 2, "must be positive (got 16, 0, None)"),
    ("extract-fps-nan", lambda w: ["extract-features", "a.mp4", "--out", str(w["root"] / "nan.h5"), "--backbone",
                                   "handcrafted", "--fps", "nan"], 2, "must be positive (got 16, 16, nan)"),
    ("extract-out-is-a-folder", lambda w: ["extract-features", "a.mp4", "--out", str(w["npy"]), "--backbone",
                                           "handcrafted"], 2, "npy: a folder; give a file name"),
    ("threads-0", lambda w: ["eval", str(w["run"] / "config.yaml"), "--checkpoint",
                             str(w["run"] / "checkpoint_best.pt"), "--threads", "0"], 2, "--threads must be >= 1"),
]


@pytest.mark.parametrize("case, argv, status, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line(world, capsys, case, argv, status, fragment):
    before = {p: _digest(p) for p in (world["run"] / "metrics.json", world["run"] / "checkpoint_best.pt",
                                      world["existing"])}
    try:
        code = main(argv(world))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == status, err
    assert fragment in err
    lines = [line for line in err.splitlines() if line.strip() and "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not world["marker"].exists(), "the checkpoint's payload ran"
    assert {p: _digest(p) for p in before} == before, "a refused command changed a file"
    for name in ("w0.h5", "s0.h5", "nan.h5", "x.h5"):
        assert not (world["root"] / name).exists() and not (world["root"] / f"{name}.parts").exists()


def test_overwrite_trains_again_and_resume_continues(world, tmp_path):
    run = tmp_path / "run"
    assert main(_train(world, "--work-dir", str(run))) == 0
    stale = run / ".checkpoint_last.pt.tmp999999999"  # a kill during a save, by a process long gone
    stale.write_bytes(b"partial")
    assert main(_train(world, "--work-dir", str(run), "--overwrite")) == 0
    assert not stale.exists()
    assert main(_train(world, "train.epochs=2", "--work-dir", str(run), "--resume")) == 0
    assert "resumed from" in (run / "train.log").read_text()


def test_a_zero_feature_video_is_left_out_at_import(world, tmp_path, capsys):
    out = tmp_path / "imported.h5"
    assert main([*IMPORT, str(world["npy"]), "--out", str(out)]) == 0
    assert "1 videos have zero features and were left out: empty" in capsys.readouterr().err
    from tal.features.cache import open_feature_cache

    with open_feature_cache(out) as cache:
        assert cache.videos == ["a"]


def test_a_second_extraction_on_one_output_is_refused_naming_the_owner(sample_videos, tmp_path, capsys):
    out = tmp_path / "f.h5"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "f.h5.lock").write_text(f"{holder.pid}\n")
        code = main(["extract-features", str(sample_videos[2]), "--out", str(out), "--backbone", "handcrafted",
                     "--workers", "0"])
        assert code == 2 and f"another run (PID {holder.pid}) is writing it" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # its owner is gone: the lock is taken over and released after the run
    assert main(["extract-features", str(sample_videos[2]), "--out", str(out), "--backbone", "handcrafted",
                 "--workers", "0"]) == 0
    assert out.is_file() and not (tmp_path / "f.h5.lock").exists()


def test_a_truncated_output_cache_names_the_fix_that_works(sample_videos, tmp_path, capsys):
    out = tmp_path / "f.h5"
    args = ["extract-features", str(sample_videos[2]), "--out", str(out), "--backbone", "handcrafted", "--workers", "0"]
    assert main(args) == 0
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"To continue this extraction: mv {out} {out}.broken and re-run the same command" in err
    os.replace(out, f"{out}.broken")
    assert main(args) == 0


def test_annotation_durations_unlike_the_cache_are_warned(world, tmp_path, capsys):
    lines = [json.loads(line) for line in Path(world["train"]).read_text().splitlines()]
    for line in lines:
        line["duration"] *= 3
        line["segment"] = [line["segment"][0], line["segment"][1]]
    bad = tmp_path / "train3x.jsonl"
    bad.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(_train(world, f"dataset.train={bad}", "--work-dir", str(tmp_path / "r"))) == 0
    err = capsys.readouterr().err
    assert f"tal: warning: {bad}: " in err and "have annotated durations unlike the feature cache's" in err


def _flip_data_bytes(path: Path, vid: str) -> None:
    """Damage a video's stored array in place (its bytes in the file), as a bad disk would."""
    import h5py

    with h5py.File(path, "r") as f:
        offset = f[vid].id.get_offset()
    with open(path, "r+b") as f:
        f.seek(offset + 16)
        chunk = f.read(8)
        f.seek(offset + 16)
        f.write(bytes(b ^ 0xFF for b in chunk))


def test_damaged_cache_data_is_found_and_extracted_again(sample_videos, tmp_path, capsys):
    out = tmp_path / "f.h5"
    args = ["extract-features", str(sample_videos[2]), str(sample_videos[3]), "--out", str(out), "--backbone",
            "handcrafted", "--workers", "0"]
    assert main(args) == 0
    assert main(["features", "info", str(out), "--verify"]) == 0
    assert "checksums       verified (0 videos have none recorded)" in capsys.readouterr().out
    vid = sample_videos[2].stem
    _flip_data_bytes(out, vid)
    assert main(["features", "info", str(out)]) == 0  # the values are still finite: only the checksum tells
    assert main(["features", "info", str(out), "--verify"]) == 1
    assert f"1 videos have damaged data (checksum mismatch): re-extract them: {vid}" in capsys.readouterr().out
    assert main(args) == 0
    assert f"1 video(s) have damaged data (checksum mismatch): extracting them again: {vid}" in capsys.readouterr().err
    assert main(["features", "info", str(out), "--verify"]) == 0


def test_another_file_under_a_finished_id_is_refused_or_extracted_again(sample_videos, tmp_path, capsys):
    from tal.features.cache import open_feature_cache

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    first.write_bytes(sample_videos[2].read_bytes())
    second.write_bytes(sample_videos[0].read_bytes())
    out = tmp_path / "f.h5"
    base = ["--out", str(out), "--backbone", "handcrafted", "--workers", "0"]
    assert main(["extract-features", str(first), *base]) == 0
    with open_feature_cache(out) as cache:
        before = cache.features("clip")
        assert cache.source("clip")["source_size"] == first.stat().st_size
    assert main(["extract-features", str(first), *base]) == 0  # the same file: already done
    assert "0 new, 1 already done" in capsys.readouterr().err
    assert main(["extract-features", str(second), *base]) == 2
    assert f"1 video id(s) were extracted from another file than the one given now: 'clip' ({second}); pass " \
           f"--overwrite" in capsys.readouterr().err
    assert main(["extract-features", str(second), *base, "--overwrite"]) == 0
    with open_feature_cache(out) as cache:
        assert cache.features("clip").shape != before.shape or not np.array_equal(cache.features("clip"), before)
        assert cache.source("clip")["source_size"] == second.stat().st_size


@pytest.mark.parametrize("always", [False, True], ids=["killed-once", "killed-every-time"])
def test_a_killed_decoding_worker_fails_at_most_its_video(sample_videos, tmp_path, monkeypatch, capsys, always):
    """The worker decoding 'killme' is SIGKILLed (as the OOM killer would): once, the video is decoded again
    and every video lands; every time, that video alone fails with the reason and the others land."""
    import signal

    from tal.features import decode
    from tal.features.cache import open_feature_cache

    videos = []
    for i, name in enumerate(["a", "killme", "b", "c"]):
        videos.append(tmp_path / f"{name}.mp4")
        videos[-1].write_bytes(sample_videos[2 + i % 2].read_bytes())
    marker = tmp_path / "killed_once"
    real = decode.iter_clips

    def dying(path, *args, **kwargs):
        if "killme" in str(path) and (always or not marker.exists()):
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(decode, "iter_clips", dying)
    out = tmp_path / "f.h5"
    code = main(["extract-features", *map(str, videos), "--out", str(out), "--backbone", "handcrafted",
                 "--workers", "2"])
    err = capsys.readouterr().err
    assert "a decoding worker died" in err and "again one at a time" in err
    with open_feature_cache(out) as cache:
        assert cache.videos == (["a", "b", "c"] if always else ["a", "b", "c", "killme"])
    if always:
        assert code == 1
        failed = [json.loads(line) for line in (tmp_path / "f.h5.failures.jsonl").read_text().splitlines()]
        assert [f["video"] for f in failed] == ["killme"]
        assert failed[0]["reason"].startswith("its decoding worker died while decoding it (DataLoader worker")
    else:
        assert code == 0
