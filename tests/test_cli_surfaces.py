"""The CLI's shared surfaces: one default device everywhere, --threads where a head runs, folders as video
inputs, plurals, a closed stdout pipe, no progress bars in logs, notes on resampled windows, dir(tal)."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import tal
from tal.cli.main import build_parser, main
from tal.errors import TalInputError
from tal.features.extract import VideoJob, jobs_from_paths


def _verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _option(parser: argparse.ArgumentParser, flag: str):
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_every_verb_that_runs_a_network_defaults_to_the_same_device_and_takes_threads():
    verbs = _verbs()
    for name in ("extract-features", "train", "eval", "query", "serve", "detect", "demo"):
        assert _option(verbs[name], "--device").default == "auto", name
    for name in ("train", "eval", "query", "serve", "detect"):
        assert _option(verbs[name], "--threads") is not None, name
    for name in ("query", "serve", "detect"):
        assert _option(verbs[name], "--weights") is not None, name


def test_a_folder_stands_for_its_videos(tmp_path):
    (tmp_path / "b.MP4").write_bytes(b"")
    (tmp_path / "a.mkv").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.mp4").write_bytes(b"")
    assert jobs_from_paths([str(tmp_path), "x.avi"]) == [
        VideoJob("a", str(tmp_path / "a.mkv")), VideoJob("b", str(tmp_path / "b.MP4")), VideoJob("x", "x.avi")]
    (tmp_path / "sub" / "deeper").mkdir()
    with pytest.raises(TalInputError, match=r"deeper: a folder with no video files in it .*subfolders are not "
                                            r"searched\): give the files, or --video-list FILE"):
        jobs_from_paths([str(tmp_path / "sub" / "deeper")])


def test_extraction_of_one_folder_says_one_video_and_draws_no_bar_into_a_log(sample_videos, tmp_path, capsys):
    """stderr is not a terminal here (captured): no carriage-return bar, whatever --no-progress says."""
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(sample_videos[2].read_bytes())
    out = tmp_path / "f.h5"
    assert main(["extract-features", str(folder), "--out", str(out), "--backbone", "handcrafted",
                 "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "extract handcrafted" not in err
    assert f"{out}: 1 video (1 new, 0 already done)" in err


def test_windows_the_network_cannot_take_are_announced():
    from tal.features.backbones import get_spec
    from tal.features.extract import window_notes

    assert window_notes(get_spec("mvit_v2_s"), 32) == [
        "backbone mvit_v2_s takes at most 16 frames per clip: each 32-frame window is resampled to 16 frames "
        "(nearest frame)"]
    assert window_notes(get_spec("s3d"), 8)[0].startswith("backbone s3d needs at least 14 frames per clip")
    assert window_notes(get_spec("r3d_18"), 32) == []


def test_a_closed_stdout_pipe_is_a_quiet_exit(shared_data):
    """`tal evaluate ... | head` where the reader is gone before tal writes: no traceback, exit 141."""
    proc = subprocess.Popen([sys.executable, "-m", "tal", "evaluate", "detection", "--gt",
                             str(shared_data / "thumos14/thumos14_actionformer.json"), "--pred",
                             str(shared_data / "reference/thumos14_test_detection_seed1.json"), "--subset", "Test",
                             "--protocol", "thumos14", "--per-class"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves at once
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_dir_of_tal_lists_the_lazy_classes():
    names = dir(tal)
    assert "ActionDetector" in names and "MomentRetriever" in names and "__version__" in names
