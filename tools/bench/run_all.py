"""Run tal's benchmarks, collect their JSON, print one table and write bench_results.json.

Each benchmark runs in its own subprocess (`.venv/bin/python tools/bench/<script> ... --json OUT`), one
after another; every script also works on its own (see its --help). By default each runs with the
reduced setting below (minutes in all); `--full` uses the settings the README's figures come from
(an hour or more: the paper-size 2D-TAN training rows alone take a long time). `--list` prints both.

  name            script             quick (default)                           --full
  eval            bench_eval.py      --runs 1                                  --runs 5
  nms             bench_nms.py       --runs 3 --threads 1, uniform + clustered --runs 7
  decode          bench_decode.py    --runs 1                                  --runs 3
  extract         bench_extract.py   --repeat 1 --skip-memory                  (defaults: throughput + 10-min memory)
  detect          bench_detect.py    --quick (1-minute video, 1 run)           (defaults: 3-minute video, best of 2)
  serve           bench_serve.py     fake retriever, 500 requests              2,000 requests
  serve_2dtan     bench_serve.py     --synthetic 2dtan, 500 requests           2,000 requests, 16 clients
  serve_charades  bench_serve.py     --synthetic charades-2dtan, 1 client x 8  16 clients x 128 requests
  tan2d           bench_tan2d.py     charades pool, batch 2, 1 step            every config, batch 32 (tal only)
  a2net           bench_a2net.py     --quick (batch 2, 1 step)                 batch 48, 5 steps (tal only)

Quick settings pin torch to one thread where the script has the option: on a shared machine a second
process on the other core makes 2-thread OpenMP loops wait for each other (NMS ran 30x slower so).

Output: a table (benchmark, figure, value, unit, command) on stdout; `--out` (default
bench_results.json) holds, per benchmark, the command, its exit status and wall time, the figures and
the benchmark's own JSON. Results of benchmarks not run this time are kept from an existing `--out`
file, so `--only` updates part of it. `--markdown` prints the rows of the README's benchmark table
(what | figure | command) from the results; with `--from FILE` it prints them without running anything.

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/run_all.py --only eval nms
    .venv/bin/python tools/bench/run_all.py --lock /tmp/tal-heavy.lock     # takes the lock per benchmark
    .venv/bin/python tools/bench/run_all.py --from bench_results.json --markdown
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent

Figure = dict  # {"figure": str, "value": float | int | str, "unit": str, "headline": bool}


def figure(name: str, value, unit: str, headline: bool = False) -> Figure:
    return {"figure": name, "value": value, "unit": unit, "headline": headline}


# ----------------------------------------------------------------------------------------------
# What each benchmark's JSON says (one function per script; the JSON layouts are the scripts' own)


def eval_figures(data: dict) -> list[Figure]:
    out = []
    for r in data["rows"]:
        out.append(figure(f"{r['task']}: end to end", r["end_to_end_s"], "s", headline=True))
        out.append(figure(f"{r['task']}: evaluate only", r["evaluate_s"], "s"))
        out.append(figure(f"{r['task']}: {r['metric']}", r["value"], "fraction"))
    return out


NMS_HEADLINES = ("hard per-class (no cap)", "soft-gaussian per-class, max 200",
                 "torchvision.ops.batched_nms (compiled; reference)")


def nms_figures(data: dict) -> list[Figure]:
    return [figure(f"{r['scenario']}: {r['method']}", r["median_ms"], "ms",
                   headline=r["scenario"] != "chain" and r["method"] in NMS_HEADLINES) for r in data["rows"]]


def decode_figures(data: dict) -> list[Figure]:
    out = []
    for r in data["rows"]:
        name = f"{r['video']} {r['width']}x{r['height']} {r['decoder']}"
        out.append(figure(f"{name}: sequential", r["seq_fps"], "frames/s"))
        if r.get("clips_realtime") is not None:
            out.append(figure(f"{name}: clips", r["clips_realtime"], "x real time"))
    for decoder in sorted({r["decoder"] for r in data["rows"]}):
        fps = [r["seq_fps"] for r in data["rows"] if r["decoder"] == decoder]
        out.append(figure(f"{decoder}: median sequential over {len(fps)} videos", statistics.median(fps),
                          "frames/s", headline=True))
    return out


def extract_figures(data: dict) -> list[Figure]:
    t = data["throughput"]
    out = [figure(f"{t['backbone']} end to end ({t['clips']} clips, {t['workers']} workers)",
                  t["end_to_end_clips_per_s"], "clips/s", headline=True),
           figure("decode only (iter_clips, 1 process)", t["decode_only_clips_per_s"], "clips/s", headline=True),
           figure("ratio end to end / decode only", t["ratio_end_to_end_over_decode_only"], "")]
    for r in data.get("memory", {}).get("runs", []):
        out.append(figure(f"peak PSS, {r['backbone']} ({r['clips']} clips)", r["peak_pss_mib"], "MiB", headline=True))
        out.append(figure(f"peak RSS sum, {r['backbone']}", r["peak_rss_sum_mib"], "MiB"))
    return out


def detect_figures(data: dict) -> list[Figure]:
    m = data["meta"]
    where = f"{m['minutes']:g}-min {m['size']} {m['fps']} fps"
    out = []
    for r in data["rows"]:
        if r["s_per_video_minute"] is not None:
            out.append(figure(f"{r['part']} ({where})", r["s_per_video_minute"], "s per video-minute",
                              headline=r["part"] in ("decode", "features", "head", "detect_path")))
        elif r["seconds"] is not None:  # a fixed cost (checkpoint load)
            out.append(figure(r["part"], r["seconds"], "s"))
    return out


def serve_figures(data: dict) -> list[Figure]:
    (r,) = data["rows"]
    tail = f"{r['requests']} req, {r['clients']} clients"
    return [figure(f"p50 ({tail})", r["p50_ms"], "ms", headline=True),
            figure(f"p95 ({tail})", r["p95_ms"], "ms", headline=True),
            figure(f"p99 ({tail})", r["p99_ms"], "ms", headline=True),
            figure("throughput", r["throughput_rps"], "req/s", headline=True),
            figure("errors", r["errors"], "requests", headline=True)]


def tan2d_figures(data: dict) -> list[Figure]:
    out = []
    for r in data["rows"]:
        name = f"{r['config']} N={r['num_clips']} {r['prop']} batch {r['batch_size']}"
        for mode in ("train", "infer"):
            out.append(figure(f"{name}: {mode}", r[f"{mode}_tal_qps"], "queries/s", headline=True))
            if f"{mode}_ratio" in r:
                out.append(figure(f"{name}: {mode} vs official", r[f"{mode}_ratio"], "x", headline=True))
    return out


def a2net_figures(data: dict) -> list[Figure]:
    out = []
    for r in data["rows"]:
        name = f"THUMOS14 128 x {r['input_dim']} batch {r['batch_size']}"
        out.append(figure(f"{name}: train", r["tal_steps_per_s"], "steps/s", headline=True))
        out.append(figure(f"{name}: train", r["tal_windows_per_s"], "windows/s"))
        if "ratio" in r:
            out.append(figure(f"{name}: train vs official", r["ratio"], "x", headline=True))
    return out


@dataclass(frozen=True)
class Bench:
    script: str
    what: str
    quick: list[str]
    full: list[str]
    figures: Callable[[dict], list[Figure]]
    scratch: str | None = None  # the script's scratch option, pointed under run_all's --scratch
    extra: list[str] = field(default_factory=list)  # given in both modes


BENCHES: dict[str, Bench] = {
    "eval": Bench("bench_eval.py", "evaluators on the reference prediction files", ["--runs", "1"], ["--runs", "5"],
                  eval_figures),
    "nms": Bench("bench_nms.py", "temporal NMS, 10,000 segments, 20 classes, median",
                 ["--runs", "3", "--threads", "1", "--scenarios", "uniform", "clustered"], ["--runs", "7"],
                 nms_figures),
    "decode": Bench("bench_decode.py", "decode only, sample videos, best of N", ["--runs", "1"], ["--runs", "3"],
                    decode_figures),
    "extract": Bench("bench_extract.py", "feature extraction throughput and peak memory",
                     ["--repeat", "1", "--skip-memory"], [], extract_figures, scratch="--scratch"),
    "detect": Bench("bench_detect.py", "tal detect latency per video-minute (A2Net, handcrafted)", ["--quick"], [],
                    detect_figures, scratch="--scratch"),
    "serve": Bench("bench_serve.py", "HTTP POST /query, fake retriever (HTTP floor)",
                   ["--requests", "500", "--warmup", "20"], [], serve_figures),
    "serve_2dtan": Bench("bench_serve.py", "HTTP POST /query, small 2D-TAN on a cached 3-minute video",
                         ["--requests", "500", "--warmup", "20"], [], serve_figures, scratch="--scratch",
                         extra=["--synthetic", "2dtan"]),
    "serve_charades": Bench("bench_serve.py", "HTTP POST /query, paper-size Charades 2D-TAN (hidden 512, K5L8, N=16)",
                            ["--clients", "1", "--requests", "8", "--warmup", "1"],
                            ["--requests", "128", "--warmup", "16"], serve_figures, scratch="--scratch",
                            extra=["--synthetic", "charades-2dtan", "--timeout", "600"]),
    "tan2d": Bench("bench_tan2d.py", "2D-TAN train and infer queries/s at paper size on the CPU",
                   ["--configs", "charades", "--props", "pool", "--batch-size", "2", "--steps", "1"],
                   ["--batch-size", "32"], tan2d_figures),
    "a2net": Bench("bench_a2net.py", "A2Net training steps/s at paper size (THUMOS14 windows) on the CPU",
                   ["--quick"], ["--steps", "5"], a2net_figures),
}
SCRATCH_NAMES = {"extract": "extract", "detect": "detect", "serve_2dtan": "serve", "serve_charades": "serve"}


# ----------------------------------------------------------------------------------------------
# Running


def command(name: str, full: bool, json_out: Path, scratch: Path) -> list[str]:
    """The argv that runs benchmark `name` and writes its JSON to `json_out`."""
    bench = BENCHES[name]
    argv = [sys.executable, str(BENCH_DIR / bench.script), *bench.extra, *(bench.full if full else bench.quick)]
    if bench.scratch:
        argv += [bench.scratch, str(scratch / SCRATCH_NAMES[name])]
    return argv + ["--json", str(json_out)]


def display(argv: list[str]) -> str:
    """A command as a user would type it from the repository root (without the --json part)."""
    if argv[-2:-1] == ["--json"]:
        argv = argv[:-2]
    shown = [".venv/bin/python" if argv[:1] == [sys.executable] else argv[0]]
    for arg in argv[1:]:
        path = Path(arg)
        shown.append(str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else arg)
    return shlex.join(shown)


class HeavyLock:
    """An exclusive flock on `path` while a benchmark runs (none when path is None)."""

    def __init__(self, path: Path | None):
        self.path, self.file = path, None

    def __enter__(self) -> "HeavyLock":
        if self.path is not None:
            self.file = open(self.path, "a")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


def run_one(name: str, full: bool, results_dir: Path, scratch: Path, lock: Path | None) -> dict:
    """Run one benchmark; its entry for bench_results.json (figures, or the error)."""
    json_out = results_dir / f"{name}.json"
    json_out.unlink(missing_ok=True)
    argv = command(name, full, json_out, scratch)
    print(f"[run_all] {name}: {display(argv)}", file=sys.stderr, flush=True)
    with HeavyLock(lock):
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
    entry = {"what": BENCHES[name].what, "mode": "full" if full else "quick", "command": display(argv),
             "exit_status": done.returncode, "seconds": seconds, "json": str(json_out), "figures": [],
             "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (results_dir / f"{name}.stdout.txt").write_text(done.stdout)
    (results_dir / f"{name}.stderr.txt").write_text(done.stderr)
    if not json_out.is_file():
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        entry["error"] = f"no JSON written ({tail})"
        return entry
    entry["data"] = json.loads(json_out.read_text())
    try:
        entry["figures"] = BENCHES[name].figures(entry["data"])
    except (KeyError, TypeError, ValueError) as exc:
        entry["error"] = f"unexpected JSON from {BENCHES[name].script}: {type(exc).__name__}: {exc}"
    return entry


# ----------------------------------------------------------------------------------------------
# Reporting


def fmt(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def table(results: dict) -> str:
    """One row per figure: benchmark, figure, value, unit, command (command on each benchmark's first row)."""
    rows = []
    for name, entry in results.items():
        figures = entry.get("figures") or []
        if entry.get("error"):
            figures = figures + [figure("ERROR", entry["error"], "")]
        for i, f in enumerate(figures):
            rows.append((name if i == 0 else "", f["figure"], fmt(f["value"]), f["unit"],
                         entry["command"] if i == 0 else ""))
    head = ("benchmark", "figure", "value", "unit", "command")
    widths = [max(len(r[k]) for r in rows + [head]) for k in range(4)]
    lines = ["  ".join([head[0].ljust(widths[0]), head[1].ljust(widths[1]), head[2].rjust(widths[2]),
                        head[3].ljust(widths[3]), head[4]])]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]),
                                r[3].ljust(widths[3]), r[4]]))
    return "\n".join(lines)


def markdown_rows(results: dict) -> str:
    """README benchmark-table rows, `| what | headline figures | command |`, one per benchmark."""
    lines = []
    for name, entry in results.items():
        shown = [f for f in entry.get("figures") or [] if f.get("headline")] or entry.get("figures") or []
        text = "; ".join(f"{f['figure']} {fmt(f['value'])}{' ' + f['unit'] if f['unit'] else ''}" for f in shown)
        if entry.get("error"):
            text = (text + "; " if text else "") + f"error: {entry['error']}"
        what = entry["what"] + (" (quick setting)" if entry.get("mode") == "quick" else "")
        lines.append(f"| {what} | {text.replace('|', '/')} | `{entry['command']}` |")
    return "\n".join(lines)


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return dict(python=platform.python_version(), machine=platform.machine(), processor=platform.processor(),
                cpu_count=os.cpu_count(), load_average=os.getloadavg(), git_commit=commit or None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"benchmarks to run (of {', '.join(BENCHES)})")
    parser.add_argument("--full", action="store_true", help="the README's settings instead of the quick ones (slow)")
    parser.add_argument("--out", type=Path, default=Path("bench_results.json"),
                        help="combined results (default bench_results.json; other benchmarks' entries are kept)")
    parser.add_argument("--results-dir", type=Path, default=REPO / "scratch" / "bench" / "results",
                        help="each benchmark's JSON and output (default scratch/bench/results)")
    parser.add_argument("--scratch", type=Path, default=REPO / "scratch" / "bench",
                        help="generated videos, caches and checkpoints (default scratch/bench)")
    parser.add_argument("--lock", type=Path, metavar="FILE", help="hold an exclusive flock on FILE during each "
                                                                  "benchmark (e.g. /tmp/tal-heavy.lock)")
    parser.add_argument("--markdown", action="store_true", help="also print the README's benchmark table rows")
    parser.add_argument("--from", dest="from_file", type=Path, metavar="FILE",
                        help="run nothing: print the table (and --markdown rows) of a saved bench_results.json")
    parser.add_argument("--list", action="store_true", help="print every benchmark's commands and exit")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHES)}")

    if args.list:
        for name in names:
            for full in (False, True):
                print(f"{name:<15} {'full ' if full else 'quick'}  "
                      f"{display(command(name, full, Path('OUT.json'), args.scratch.resolve()))}")
        return 0
    if args.from_file:
        if not args.from_file.is_file():
            parser.error(f"--from {args.from_file}: no such file")
        saved = json.loads(args.from_file.read_text())["benchmarks"]
        results = {n: saved[n] for n in names if n in saved} if args.only else saved
    else:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        results = {name: run_one(name, args.full, args.results_dir.resolve(), args.scratch.resolve(), args.lock)
                   for name in names}
        previous = json.loads(args.out.read_text()).get("benchmarks", {}) if args.out.is_file() else {}
        merged = {**{n: e for n, e in previous.items() if n not in results}, **results}
        payload = {"meta": {**machine(), "started": started,
                            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                   "benchmarks": merged}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, args.out)
        print(f"[run_all] wrote {args.out}", file=sys.stderr)
    print(table(results))
    if args.markdown:
        print()
        print(markdown_rows(results))
    failed = [n for n, e in results.items() if e.get("error") or e.get("exit_status")]
    if failed:
        print(f"[run_all] problems in: {', '.join(failed)} (see {args.results_dir}/<name>.stderr.txt)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
