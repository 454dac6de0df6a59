"""tools/bench/bench_a2net.py --quick runs tal's paper-size A2Net (no official checkout needed) and writes its row."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_a2net_quick_tal_only(tmp_path):
    out = tmp_path / "a2net.json"
    done = subprocess.run([sys.executable, str(REPO / "tools/bench/bench_a2net.py"), "--quick", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["batch_size"] == 2 and row["num_steps"] == 128 and row["input_dim"] == 2048
    assert 65 < row["params_m"] < 66  # the THUMOS14 pyramid up to 4096 channels
    assert row["tal_steps_per_s"] > 0 and len(row["tal_step_s"]) == 1 and "ratio" not in row
    assert "tal" in done.stdout and "official" not in done.stdout
