"""Time and memory of reading a GloVe-size word-vector file with tal.models.word_vectors.

Writes a file in the published text layout (`word v1 ... v300` a line, 5 decimals as glove.6B) of
--words x --dim (default 400,000 x 300, about 1 GB, the size of glove.6B.300d.txt), then measures, each
in a fresh process so that the peak memory is the phase's own:
  first   parse the text and write the binary cache (what the first training run pays)
  cached  open the cached table (word list + memory map) and look up 10,000 random words
  zip     (--zip) the same first read from a zip of the file, as glove.6B.zip is published
Memory: the process's peak resident set minus its resident set after the imports ("added_mb"), and at the
end of the phase its private (RssAnon) and file-mapped (RssFile: pages of the memory-mapped cache, shared
and reclaimable by the kernel) parts beyond the same point. Run it alone:

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_glove.py --json bench_glove.json
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def write_glove(path: Path, num_words: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, num_words, 10_000):
            rows = rng.normal(0.0, 0.4, size=(min(10_000, num_words - start), dim))
            lines = [f"w{start + i} " + " ".join(f"{x:.5f}" for x in row) for i, row in enumerate(rows.tolist())]
            f.write("\n".join(lines) + "\n")


def status_mb(field: str = "VmRSS") -> float:
    """A memory field of /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phase(name: str, path: Path, dim: int) -> dict:
    """One measurement in this process; printed as JSON by the child."""
    sys.path.insert(0, str(REPO))
    from tal.models.word_vectors import open_word_vectors

    base_mb, base_anon_mb, base_file_mb = status_mb(), status_mb("RssAnon"), status_mb("RssFile")
    start = time.perf_counter()
    table = open_word_vectors(path, dim)
    opened_s = time.perf_counter() - start
    out = {"phase": name, "seconds": round(opened_s, 3), "words": len(table)}
    if name == "cached":
        words = np.random.default_rng(1).choice(len(table), 10_000, replace=False)
        start = time.perf_counter()
        vectors, found = table.rows(table.words[i] for i in words)
        out["lookup_10k_ms"] = round((time.perf_counter() - start) * 1000, 1)
        assert found.all() and vectors.shape == (10_000, dim)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(peak_rss_mb=round(peak_mb), rss_after_imports_mb=round(base_mb), added_mb=round(peak_mb - base_mb),
               private_added_mb=round(status_mb("RssAnon") - base_anon_mb),
               mapped_added_mb=round(status_mb("RssFile") - base_file_mb))
    return out


def run_phase(name: str, path: Path, dim: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--phase", name, "--path", str(path), "--dim", str(dim)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--zip", action="store_true", help="also time the first read from a zip of the file")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.path, args.dim)))
        return

    work = Path(tempfile.mkdtemp(prefix="tal-bench-glove-"))
    try:
        text = work / f"glove.bench.{args.dim}d.txt"
        start = time.perf_counter()
        write_glove(text, args.words, args.dim)
        results = {"words": args.words, "dim": args.dim, "file_mb": round(text.stat().st_size / 2**20),
                   "generate_s": round(time.perf_counter() - start, 1),
                   "machine": platform.processor() or platform.machine(),
                   "phases": [run_phase("first", text, args.dim), run_phase("cached", text, args.dim)]}
        cache = work / f"{text.name}.tal-cache"
        results["cache_mb"] = round(sum(p.stat().st_size for p in cache.iterdir()) / 2**20)
        if args.zip:
            archive = work / "glove.bench.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
                z.write(text, text.name)
            text.unlink()
            results["zip_mb"] = round(archive.stat().st_size / 2**20)
            results["phases"].append(run_phase("zip", archive, args.dim))
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
