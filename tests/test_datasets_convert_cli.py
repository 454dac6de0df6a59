"""`tal convert-annotations`: real conversions, round trips through the contract readers, exit codes."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tal.cli.convert_annotations import FORMAT_HELP
from tal.cli.main import main
from tal.datasets.activitynet import read_activitynet_json
from tal.datasets.annotations import FORMATS, load_detection_annotations, load_grounding_queries
from tal.datasets.grounding import read_grounding_jsonl


def tal(*args):
    """Run `python -m tal ...` in a subprocess: (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "tal", *map(str, args)], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_help_lists_every_format_and_an_example_per_real_dataset():
    assert set(FORMAT_HELP) == set(FORMATS)
    assert all(FORMAT_HELP[n][0] == f.task for n, f in FORMATS.items())
    code, out, _ = tal("convert-annotations", "--help")
    assert code == 0
    for name in FORMATS:
        assert f"\n  {name} " in out
    for example in ["--format activitynet-bsn D/activitynet13/anet_anno_action.json",
                    "--format thumos14-txt D/thumos14/official_txt",
                    "--format thumos14-csv D/thumos14/val_Annotation.csv",
                    "--format thumos14-actionformer", "--format charades-sta D/charades_sta/charades_sta_train.txt",
                    "--format anet-captions", "--format tacos"]:
        assert example in out


def test_activitynet_bsn_equals_the_derived_file(shared_data, tmp_path):
    d = shared_data / "activitynet13"
    out = tmp_path / "anet13.json"
    code, stdout, err = tal("convert-annotations", "--format", "activitynet-bsn", d / "anet_anno_action.json",
                            "--video-info", d / "video_info_new.csv", "--strip-prefix", "v_", "--out", out)
    assert code == 0 and stdout == ""
    assert err == (f"tal convert-annotations: wrote {out} (activitynet-bsn -> ActivityNet JSON): 19228 videos, "
                   "22152 instances, 200 classes (videos/instances by subset: testing 4851/0, training 9649/14859, "
                   "validation 4728/7293); nothing dropped or changed\n")
    derived = json.loads((d / "activity_net.v1-3.bsn_derived.json").read_text())
    assert json.loads(out.read_text())["database"] == derived["database"]


def test_charades_train_round_trip_and_summary(shared_data, tmp_path):
    cs = shared_data / "charades_sta"
    out = tmp_path / "sub" / "charades_sta_train.jsonl"
    code, _, err = tal("convert-annotations", cs / "charades_sta_train.txt",
                       "--durations", cs / "Charades_v1_train.csv", "--out", out)
    assert code == 0
    assert err.splitlines() == [
        f"tal convert-annotations: wrote {out} (charades-sta -> grounding JSONL): 12404 queries over 5336 videos; "
        "dropped 4 queries with start >= end after clipping to the video (2D-TAN drops them); "
        "1802 query ends clipped to the video duration"]
    assert read_grounding_jsonl(out) == load_grounding_queries(cs / "charades_sta_train.txt",
                                                               video_info=cs / "Charades_v1_train.csv")


def test_bad_input_exits_2_with_one_line(shared_data, tmp_path):
    bad = tmp_path / "Diving_test.txt"
    bad.write_text("video_test_0000001  5.0 2.0\n")
    code, _, err = tal("convert-annotations", "--format", "thumos14-txt", bad, "--out", tmp_path / "o.json")
    assert code == 2
    assert err == f"tal convert-annotations: error: {bad}:1: segment end 2.0 is before its start 5.0\n"
    assert not (tmp_path / "o.json").exists()


VAL_INFO, TEST_INFO, TEST_GT = ("thumos14/val_video_info.csv", "thumos14/test_video_info.csv",
                                 "thumos14/thumos14_test_groundtruth.csv")


@pytest.mark.parametrize("fmt, src, flags, kwargs", [
    ("thumos14-txt", ["thumos14/official_txt"], ["--video-info", VAL_INFO, TEST_INFO],
     {"video_info": [VAL_INFO, TEST_INFO]}),
    ("thumos14-csv", ["thumos14/val_Annotation.csv", "thumos14/test_Annotation.csv"],
     ["--keep-ambiguous", "--video-info", VAL_INFO, TEST_INFO, TEST_GT],
     {"keep_ambiguous": True, "video_info": [VAL_INFO, TEST_INFO, TEST_GT]}),
    ("thumos14-actionformer", ["thumos14/thumos14_actionformer.json"], ["--subset", "Test"], {"subset": "Test"}),
])
def test_detection_round_trip_through_the_contract_reader(shared_data, tmp_path, capsys, fmt, src, flags, kwargs):
    out = tmp_path / "out.json"
    flags = [str(shared_data / f) if "/" in f else f for f in flags]
    kwargs = {k: [shared_data / p for p in v] if k == "video_info" else v for k, v in kwargs.items()}
    assert main(["convert-annotations", "--format", fmt, *[str(shared_data / s) for s in src], *flags,
                 "--out", str(out)]) == 0
    expected = load_detection_annotations([shared_data / s for s in src], fmt, **kwargs)
    back = read_activitynet_json(out)
    assert list(back.videos) == list(expected.videos) and back.classes == expected.classes
    for vid, a in expected.videos.items():
        b = back.videos[vid]
        assert (b.subset, b.duration, b.labels, b.extra) == (a.subset, a.duration, a.labels, a.extra)
        np.testing.assert_array_equal(b.segments, a.segments)
    assert f"({fmt} -> ActivityNet JSON)" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, src", [("anet-captions", "activitynet_captions/test.json"),
                                      ("tacos", "tacos/val.json")])
def test_grounding_round_trip(shared_data, tmp_path, capsys, fmt, src):
    out = tmp_path / "out.jsonl"
    assert main(["convert-annotations", str(shared_data / src), "--out", str(out)]) == 0  # auto-detected
    assert read_grounding_jsonl(out) == load_grounding_queries(shared_data / src, fmt)
    assert f"({fmt} -> grounding JSONL)" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--format", "charades-sta", "{cs}/charades_sta_test.txt", "--keep-ambiguous"],
     "--keep-ambiguous does not apply to --format charades-sta (it applies to thumos14-txt, thumos14-csv)"),
    (["--format", "tacos", "{d}/tacos/val.json", "{d}/tacos/test.json"],
     "--format tacos converts one split per command (got 2 sources)"),
    (["{d}/tacos/val.json", "--subset", "val"], "--subset applies to detection formats"),
    (["--format", "charades-sta", "{cs}/charades_sta_test.txt"], "Charades-STA lines carry no video durations"),
    (["--format", "charades-sta", "{cs}/charades_sta_test.txt", "--durations", "{cs}/Charades_v1_train.csv"],
     "charades_sta_test.txt:1: video '3MSZA' has no duration in"),
    (["{d}/thumos14/thumos14_actionformer.json", "--subset", "validation"], "no video has subset 'validation'"),
])
def test_usage_errors_exit_2(shared_data, tmp_path, capsys, args, message):
    args = [a.format(d=shared_data, cs=shared_data / "charades_sta") for a in args]
    assert main(["convert-annotations", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tal convert-annotations: error: ") and message in err and err.count("\n") == 1
