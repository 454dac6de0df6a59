"""tools/bench/run_all.py: commands, figures from the benchmarks' JSON, the table and the README rows.

No benchmark is run here; the JSON inputs are small hand-written copies of each script's layout.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "tools" / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("run_all", None)


SERVE_JSON = {"meta": {}, "rows": [dict(retriever="real", requests=2000, clients=16, errors=0, wall_s=10.0,
                                        throughput_rps=200.0, p50_ms=70.25, p95_ms=140.5, p99_ms=180.0,
                                        mean_ms=80.0, max_ms=250.0)]}


def test_command_quick_full_scratch_and_json_last(run_all, tmp_path):
    quick = run_all.command("serve_2dtan", False, tmp_path / "out.json", tmp_path / "s")
    assert quick[:2] == [sys.executable, str(REPO / "tools" / "bench" / "bench_serve.py")]
    assert quick[2:] == ["--synthetic", "2dtan", "--requests", "500", "--warmup", "20", "--scratch",
                         str(tmp_path / "s" / "serve"), "--json", str(tmp_path / "out.json")]
    full = run_all.command("eval", True, tmp_path / "e.json", tmp_path)
    assert full[2:] == ["--runs", "5", "--json", str(tmp_path / "e.json")]
    assert run_all.display(full) == ".venv/bin/python tools/bench/bench_eval.py --runs 5"


def test_serve_and_detect_figures(run_all):
    figures = run_all.serve_figures(SERVE_JSON)
    assert [(f["figure"], f["value"], f["unit"]) for f in figures] == [
        ("p50 (2000 req, 16 clients)", 70.25, "ms"), ("p95 (2000 req, 16 clients)", 140.5, "ms"),
        ("p99 (2000 req, 16 clients)", 180.0, "ms"), ("throughput", 200.0, "req/s"), ("errors", 0, "requests")]
    detect = {"meta": {"minutes": 3.0, "size": "160x120", "fps": 10},
              "rows": [dict(part="decode", seconds=2.1, s_per_video_minute=0.7),
                       dict(part="extract", seconds=0.3, s_per_video_minute=0.1),
                       dict(part="load", seconds=0.16, s_per_video_minute=None),
                       dict(part="tal_detect_cli", seconds=None, s_per_video_minute=None)]}
    got = run_all.detect_figures(detect)
    assert [(f["figure"], f["value"], f["unit"], f["headline"]) for f in got] == [
        ("decode (3-min 160x120 10 fps)", 0.7, "s per video-minute", True),
        ("extract (3-min 160x120 10 fps)", 0.1, "s per video-minute", False), ("load", 0.16, "s", False)]


def test_decode_medians_per_decoder(run_all):
    rows = [dict(video=f"v{i}.mp4", width=2, height=2, decoder=d, seq_fps=fps, clips_realtime=None)
            for i, (d, fps) in enumerate([("pyav", 100.0), ("pyav", 300.0), ("pyav", 200.0), ("decord", 50.0)])]
    medians = {f["figure"]: f["value"] for f in run_all.decode_figures({"rows": rows}) if f["headline"]}
    assert medians == {"decord: median sequential over 1 videos": 50.0, "pyav: median sequential over 3 videos": 200.0}


def test_table_and_markdown_rows(run_all):
    results = {"serve": {"what": "HTTP, fake", "mode": "quick", "command": "cmd a",
                         "figures": run_all.serve_figures(SERVE_JSON)},
               "eval": {"what": "evaluators", "mode": "full", "command": "cmd b", "figures": [],
                        "error": "no JSON written (boom)"}}
    lines = run_all.table(results).splitlines()
    assert lines[0].split() == ["benchmark", "figure", "value", "unit", "command"]
    assert lines[2].split()[0] == "serve" and lines[2].rstrip().endswith("cmd a")
    assert lines[3].strip().startswith("p95") and "cmd a" not in lines[3]
    assert "ERROR" in lines[-1] and lines[-1].rstrip().endswith("cmd b")
    assert run_all.markdown_rows(results).splitlines() == [
        "| HTTP, fake (quick setting) | p50 (2000 req, 16 clients) 70.2 ms; p95 (2000 req, 16 clients) 140 ms; "
        "p99 (2000 req, 16 clients) 180 ms; throughput 200 req/s; errors 0 requests | `cmd a` |",
        "| evaluators | error: no JSON written (boom) | `cmd b` |"]


def test_main_from_saved_results_and_unknown_name(run_all, tmp_path, capsys):
    saved = tmp_path / "bench_results.json"
    serve = {"what": "HTTP, fake", "mode": "full", "command": "cmd a", "figures": run_all.serve_figures(SERVE_JSON)}
    nms = {"what": "NMS", "mode": "full", "command": "cmd n", "figures": [run_all.figure("x", 1.5, "ms", True)]}
    saved.write_text(json.dumps({"meta": {}, "benchmarks": {"serve": serve, "nms": nms}}))
    assert run_all.main(["--from", str(saved), "--only", "nms", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "| NMS | x 1.5 ms | `cmd n` |"
    assert "HTTP, fake" not in out
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--only", "nope", "--from", str(saved)])
    assert exc.value.code == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_a2net_figures(run_all):
    row = dict(input_dim=2048, batch_size=48, tal_steps_per_s=0.05, tal_windows_per_s=2.4, ratio=1.1)
    got = [(f["figure"], f["value"], f["unit"], f["headline"]) for f in run_all.a2net_figures({"rows": [row]})]
    assert got == [("THUMOS14 128 x 2048 batch 48: train", 0.05, "steps/s", True),
                   ("THUMOS14 128 x 2048 batch 48: train", 2.4, "windows/s", False),
                   ("THUMOS14 128 x 2048 batch 48: train vs official", 1.1, "x", True)]
    assert run_all.command("a2net", False, Path("o.json"), Path("s"))[2:] == ["--quick", "--json", "o.json"]
