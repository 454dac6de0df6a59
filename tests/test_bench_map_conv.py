import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "bench"))
import bench_map_conv  # noqa: E402


@pytest.mark.parametrize("kind, size, kernel, layers", [("2dtan", 16, 5, 8), ("bsnpp", 12, 3, 2)])
def test_every_plan_matches_the_padded_stack(monkeypatch, kind, size, kernel, layers):
    monkeypatch.setitem(bench_map_conv.CONFIGS, "tiny", (kind, size, kernel, layers, 8, 2))
    rows = bench_map_conv.bench("tiny", runs=1, seed=0)
    assert [r["plan"] for r in rows] == ["padded (official arithmetic)", "pairs, oneDNN products",
                                         "pairs, torch.mm (BLAS) products", "crop", "fft tiles"]
    assert rows[0]["max_diff"] == 0.0
    assert all(r["max_diff"] < 1e-5 and r["infer_s"] > 0 and r["train_s"] > 0 for r in rows)
    assert sum(r["auto_train"] for r in rows) == 1 and sum(r["auto_infer"] for r in rows) == 1
    assert bench_map_conv.map_conv.PRODUCTS == "auto"  # restored
