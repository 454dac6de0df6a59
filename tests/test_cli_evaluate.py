import json
import subprocess
import sys

import numpy as np
import pytest

from tal.cli.main import main

THUMOS_MAP = {"0.30": 0.8100924050523559, "0.40": 0.8037789944961726, "0.50": 0.794634999921019,
              "0.60": 0.7753454466828417, "0.70": 0.7298979422864058}


def run_tal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tal", *args], capture_output=True, text=True, timeout=120)


def test_detection_subprocess_prints_one_json_object(shared_data):
    proc = run_tal("evaluate", "detection", "--gt", str(shared_data / "thumos14/thumos14_actionformer.json"),
                   "--pred", str(shared_data / "reference/thumos14_test_detection_seed1.json"),
                   "--subset", "Test", "--tiou", "0.3:0.7:0.1")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == ["mAP", "average_mAP", "tiou_thresholds"] and list(out["mAP"]) == list(THUMOS_MAP)
    assert out["tiou_thresholds"] == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7], abs=1e-12)
    for key, value in THUMOS_MAP.items():
        assert abs(out["mAP"][key] - value) < 1e-9
    assert abs(out["average_mAP"] - 0.782749957687759) < 1e-9
    assert "0.782749957687759" in proc.stdout  # full precision, not rounded
    assert proc.stderr.startswith("tal evaluate detection: note: 78 predicted segments have end < start")


def test_grounding_subprocess(shared_data):
    proc = run_tal("evaluate", "grounding", "--pred",
                   str(shared_data / "reference/charades_sta_test_predictions_seed1.jsonl"),
                   "--recall", "1,5", "--iou", "0.5,0.7", "--nms", "0.45")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == ["R@1,IoU=0.5", "R@1,IoU=0.7", "R@5,IoU=0.5", "R@5,IoU=0.7", "mIoU"]
    assert abs(out["R@5,IoU=0.7"] - 0.7922043010752688) < 1e-9
    assert abs(out["mIoU"] - 0.7286777675935968) < 1e-9


def _files(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {
        "v": {"subset": "val", "duration": 60, "annotations": [{"segment": [0, 10], "label": "a"},
                                                               {"segment": [20, 30], "label": "b"}]},
        "w": {"subset": "train", "duration": 60, "annotations": [{"segment": [0, 10], "label": "a"}]}}}))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"version": "x", "results": {"v": [
        {"segment": [0, 10], "score": 0.9, "label": "a"}, {"segment": [40, 50], "score": 0.8, "label": "b"},
        {"segment": [20, 30], "score": 0.7, "label": "b"}]}, "external_data": {}}))
    return gt, pred


def test_detection_defaults_and_per_class(tmp_path, capsys):
    gt, pred = _files(tmp_path)
    assert main(["evaluate", "detection", "--gt", str(gt), "--pred", str(pred), "--subset", "val", "--per-class"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert list(out["mAP"]) == ["0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80", "0.85", "0.90", "0.95"]
    # a: AP 1; b: FP then TP -> 1/2; mean 3/4 at every threshold
    assert set(out["mAP"].values()) == {0.75} and out["average_mAP"] == 0.75
    assert out["per_class_AP"]["b"]["0.95"] == 0.5 and out["per_class_AP"]["a"]["0.50"] == 1.0
    assert out["tiou_thresholds"] == pytest.approx(np.linspace(0.5, 0.95, 10).tolist(), abs=1e-12)
    assert "note: tIoU thresholds 0.5:0.95:0.05 (ActivityNet-1.3, the default)" in captured.err


def test_protocol_presets_and_tiou_exclusive(shared_data, capsys):
    """The THUMOS14 reference scores the same by --protocol thumos14 as by --tiou 0.3:0.7:0.1, and
    differently (and saying so) by the default ActivityNet thresholds; --protocol and --tiou exclude each other."""
    gt = str(shared_data / "thumos14/thumos14_actionformer.json")
    pred = str(shared_data / "reference/thumos14_test_detection_seed1.json")
    base = ["evaluate", "detection", "--gt", gt, "--pred", pred, "--subset", "Test"]
    assert main([*base, "--protocol", "thumos14"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert abs(out["average_mAP"] - 0.782749957687759) < 1e-9 and "(ActivityNet-1.3, the default)" not in captured.err
    assert main(base) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["tiou_thresholds"]) == 10 and "--protocol thumos14" in captured.err
    with pytest.raises(SystemExit) as exc:
        main([*base, "--protocol", "thumos14", "--tiou", "0.5"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_tiou_comma_list(tmp_path, capsys):
    gt, pred = _files(tmp_path)
    assert main(["evaluate", "detection", "--gt", str(gt), "--pred", str(pred), "--subset", "val",
                 "--tiou", "0.3,0.5"]) == 0
    assert list(json.loads(capsys.readouterr().out)["mAP"]) == ["0.30", "0.50"]


def test_proposals(tmp_path, capsys):
    gt, pred = _files(tmp_path)
    assert main(["evaluate", "proposals", "--gt", str(gt), "--pred", str(pred), "--subset", "val",
                 "--max-avg-proposals", "3"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    # 3 proposals, [0, 10] first and [20, 30] third: AR@1 = 1/2 and AR@3 (the curve's end) = 1
    assert out["AR@1"] == 0.5 and list(out) == ["AR@1", "AUC"]
    assert 0 < out["AUC"] < 1


def _exit_code(argv: list[str]) -> int:
    """What `tal` exits with: argparse usage errors raise SystemExit, input errors return 2."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("args, message", [
    (["--subset", "test"], "gt.json: no subset 'test'; the subsets are 'train', 'val'"),
    ([], "gt.json: has subsets 'train', 'val'; choose one with --subset"),
    (["--subset", "val", "--tiou", "0.5:0.95:0.07"], "argument --tiou: '0.5:0.95:0.07': 0.95 is not reached"),
    (["--subset", "val", "--tiou", "0,0.5"], "argument --tiou: '0,0.5': thresholds must be in (0, 1]"),
    (["--subset", "val", "--tiou", "x"], "argument --tiou: 'x': expected A:B:STEP or a comma list of numbers"),
])
def test_bad_usage_exits_2_with_one_line(tmp_path, capsys, args, message):
    gt, pred = _files(tmp_path)
    assert _exit_code(["evaluate", "detection", "--gt", str(gt), "--pred", str(pred), *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and captured.out == ""


def test_missing_file_and_bad_json_exit_2(tmp_path):
    gt, _ = _files(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": {"v": [{"segment": [0, 1], "score": NaN, "label": "a"}]}}')
    proc = run_tal("evaluate", "detection", "--gt", str(gt), "--pred", str(bad), "--subset", "val")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"tal evaluate: error: {bad}: results['v'][0]: score nan is not finite\n"
    proc = run_tal("evaluate", "proposals", "--gt", str(tmp_path / "nope.json"), "--pred", str(bad))
    assert proc.returncode == 2 and proc.stderr == f"tal evaluate: error: {tmp_path / 'nope.json'}: no such file\n"


def test_help_has_an_example_per_task():
    for task in ("detection", "proposals", "grounding"):
        proc = run_tal("evaluate", task, "--help")
        assert proc.returncode == 0 and f"tal evaluate {task} --" in proc.stdout and "example:" in proc.stdout
