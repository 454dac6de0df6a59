import json
import subprocess
import sys
from pathlib import Path

import tal.models  # noqa: F401  (registers the heads)
from tal.features.backbones import list_backbones
from tal.registry import MODELS

REPO = Path(__file__).resolve().parents[1]


def test_device_suite_cpu_quick_reports_every_section(tmp_path):
    out = tmp_path / "suite.json"
    done = subprocess.run([sys.executable, str(REPO / "tools/bench/device_suite.py"), "--cpu", "--quick",
                           "--scratch", str(tmp_path / "scratch"), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["quick"] is True
    heads = {(r["head"], r["amp"]) for r in report["heads"]}
    assert heads == {(h, amp) for h in MODELS.names() for amp in (False, True)}
    for row in report["heads"]:  # every head trains and predicts with AMP off and on
        assert "error" not in row, row
        assert row["train_inputs_per_s"] > 0 and row["infer_s"] > 0 and row["peak_memory_mib"] > 0
    paper = {(r["name"], r["amp"]) for r in report["paper"]}  # --quick: one grounding, one detection head
    assert paper == {(n, amp) for n in ("2dtan charades", "a2net thumos14") for amp in (False, True)}
    for row in report["paper"]:
        assert "error" not in row, row
        assert row["batch_size"] == 1 and row["train_inputs_per_s"] > 0 and row["infer_inputs_per_s"] > 0
    by_name = {r["name"]: r for r in report["paper"]}
    assert by_name["a2net thumos14"]["params_m"] > 60  # the THUMOS14 config's 65.5 M parameters, not a small one
    assert by_name["2dtan charades"]["params_m"] > 50
    assert [r["evaluator"] for r in report["evaluators"]] == ["detection mAP", "grounding recall"]
    assert 0 <= report["evaluators"][0]["value"] <= 1
    assert {r["method"] for r in report["nms"]} == {"hard per class", "soft gaussian, max 200"}
    loader = {(r["head"], r["num_workers"], r["pin_memory"]) for r in report["loader"]}
    assert loader == {(h, w, False) for h in ("2dtan", "a2net") for w in (0, 2)}  # no pinning on the CPU
    assert all(r["inputs"] > 0 and r["train_inputs_per_s"] > 0 for r in report["loader"])
    registered = {spec.name for spec in list_backbones()}
    assert [r["backbone"] for r in report["extract"]] == [b for b in ("r2plus1d_18", "i3d") if b in registered]
    for row in report["extract"]:
        assert row["clips"] > 0 and row["end_to_end_clips_per_s"] > 0 and row["decode_only_clips_per_s"] > 0
    assert "total" in done.stdout and "end to end clips/s" in done.stdout and "paper size" in done.stdout
