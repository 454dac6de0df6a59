"""Load-test the HTTP query API: N POST /query requests from C concurrent clients (keep-alive connections).

Reports latency percentiles (ms, per request, as a client sees it), throughput and errors (any answer
but 200, or a failed connection). The server runs in a subprocess (this script with --serve), so the
client threads do not compete with it for the GIL; it serves
  real  tal.api.MomentRetriever.from_checkpoint(--checkpoint, --features), torch on --threads threads
  fake  a stand-in whose query returns top_k fixed moments at once (no sleep, unless --fake-ms): the
        cost of HTTP, JSON, validation and the model lock alone, the floor under any real model
(fake unless both --checkpoint and --features are given). Queries cycle through the server's videos and
a fixed set of sentences, or the (video, query) pairs of --queries GROUNDING.jsonl. Run it alone:

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_serve.py --json bench_serve.json
    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_serve.py \\
        --checkpoint work/charades/checkpoint_last.pt --features charades_vgg.h5 --queries charades_test.jsonl

`--synthetic MODEL` serves a real model on a cached 3-minute video set with no data to download (made
once under --scratch, reused): 4 videos of 675 feature steps (stride 8 at 30 fps: 180 s, 64-d) from
`tal.datasets.synthetic.make_grounding_set`, queried with their own sentences, and a checkpoint trained
by `tal train` on a small set from the same generator (same fps, stride, window, dimension, so the
retriever accepts the cache; trained for latency, not accuracy):
  2dtan           configs/synthetic/2dtan.yaml (hidden 32, N=16, K3L2), 2 epochs on 24 videos
  charades-2dtan  configs/charades_sta/2dtan_pool.yaml, the paper's size (hidden 512, N=16, K5L8, 3-layer
                  512-d LSTM over learned 300-d word vectors), 1 epoch on 4 videos: nearly untrained weights,
                  a real-size head's cost per query

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_serve.py --synthetic 2dtan --json serve_2dtan.json
    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_serve.py --synthetic charades-2dtan --requests 64
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SYNTHETIC = {  # --synthetic MODEL: (config, overrides, training videos)
    "2dtan": ("configs/synthetic/2dtan.yaml", ["train.epochs=2", "eval.interval=2"], 24),
    "charades-2dtan": ("configs/charades_sta/2dtan_pool.yaml",  # synthetic sentences: no GloVe
                       ["train.epochs=1", "train.batch_size=8", "model.text.word_vectors=learned"], 4),
}
CACHE_STEPS = 675  # 675 steps x stride 8 / 30 fps = 180 s

SENTENCES = ["a person opens the door", "someone is cooking at the stove", "the man picks up a phone",
             "a woman sits down on the sofa", "person takes a towel", "they laugh and walk away",
             "a person is putting a book on a shelf", "the girl turns off the light"]


class FakeRetriever:
    """top_k moments [i, i + 2] s with score 1 / (i + 1), after `delay_s` of pretend model time."""

    def __init__(self, num_videos: int = 100, delay_s: float = 0.0):
        self._videos = [f"video_{i:04d}" for i in range(num_videos)]
        self.delay_s = delay_s

    def videos(self) -> list[str]:
        return list(self._videos)

    def query(self, video: str, sentence: str, top_k: int = 5) -> list[dict]:
        if self.delay_s:
            time.sleep(self.delay_s)
        return [{"start": float(i), "end": float(i + 2), "score": 1.0 / (i + 1)} for i in range(top_k)]


def synthetic_paths(scratch: Path, model: str) -> tuple[Path, Path, Path]:
    """(checkpoint, 3-minute feature cache, queries JSONL) of --synthetic MODEL under --scratch."""
    cache = scratch / "cache_3min"
    return scratch / f"{model}_trained" / "checkpoint_last.pt", cache / "features.h5", cache / "queries.jsonl"


def prepare_synthetic(scratch: Path, model: str, threads: int) -> None:
    """Make the 3-minute cache, its queries and the trained checkpoint of --synthetic MODEL (when missing)."""
    from tal.datasets.synthetic import make_grounding_set

    checkpoint, features, queries = synthetic_paths(scratch, model)
    if not queries.is_file():
        made = make_grounding_set(features.parent, num_videos=4, num_steps=(CACHE_STEPS, CACHE_STEPS))
        lines = made.train.read_text().splitlines() + made.test.read_text().splitlines()
        queries.write_text("".join(line + "\n" for line in lines))
    if checkpoint.is_file():
        return
    config, overrides, num_videos = SYNTHETIC[model]
    data = make_grounding_set(scratch / f"train_{num_videos}videos", num_videos=num_videos, seed=1)
    cmd = [sys.executable, "-m", "tal", "train", config, "--work-dir", str(checkpoint.parent), "--threads",
           str(threads), "--set", f"dataset.features={data.features}", f"dataset.train={data.train}",
           f"dataset.test={data.test}", *overrides]
    print(f"bench_serve: training {model}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0 or not checkpoint.is_file():
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    print(f"bench_serve: trained in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def serve(args: argparse.Namespace) -> int:
    """Child process: serve, print 'READY <url>' on stdout, stop when stdin closes."""
    from tal.serve import BackgroundServer

    if args.checkpoint:
        import torch

        torch.set_num_threads(args.threads)
        from tal.api import MomentRetriever

        retriever = MomentRetriever.from_checkpoint(args.checkpoint, features=args.features, device=args.device)
    else:
        retriever = FakeRetriever(delay_s=args.fake_ms / 1000)
    with BackgroundServer(retriever, log_level="warning") as server:
        print("READY", server.url, flush=True)
        sys.stdin.read()
    return 0


def request_bodies(args: argparse.Namespace, videos: list[str]) -> list[dict]:
    if args.queries:
        known = set(videos)
        pairs = [(q["video"], q["query"]) for q in map(json.loads, Path(args.queries).read_text().splitlines())
                 if q.get("video") in known]
        if not pairs:
            raise SystemExit(f"{args.queries}: no query is about a video the server has")
    else:
        pairs = [(video, SENTENCES[i % len(SENTENCES)]) for i, video in enumerate(videos)]
    return [{"video": v, "query": q, "top_k": args.top_k} for v, q in itertools.islice(itertools.cycle(pairs),
                                                                                     args.requests)]


def fire(url: str, bodies: list[dict], clients: int, timeout_s: float = 60.0) -> tuple[list[float], int, float]:
    """POST every body from `clients` concurrent keep-alive connections: latencies (s), errors, wall s.

    The clients are asyncio coroutines writing HTTP/1.1 by hand: a load generator must cost far less
    than the server it measures, and on a 2-core machine 16 httpx client threads took most of a core
    (they measured a 0-ms fake model at p95 40 ms). Latency is from writing the request to having read
    the whole response.
    """
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    payloads = [json.dumps(body).encode() for body in bodies]
    head = f"POST /query HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\nContent-Length: "
    requests = [head.encode() + b"%d\r\n\r\n" % len(p) + p for p in payloads]
    next_index = itertools.count()
    latencies_s: list[float] = []
    errors = 0

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(request)
        header = await reader.readuntil(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is None:  # (a StopIteration would turn into a RuntimeError inside a coroutine)
            raise ValueError("a response without Content-Length")
        await reader.readexactly(length)
        return status == 200

    async def client() -> None:
        nonlocal errors
        reader = writer = None
        while (i := next(next_index)) < len(requests):
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                ok = await asyncio.wait_for(exchange(reader, writer, requests[i]), timeout_s)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                ok = False
                if writer is not None:
                    writer.close()
                reader = writer = None
            latencies_s.append(time.perf_counter() - start)
            errors += not ok
        if writer is not None:
            writer.close()

    async def run_all() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - start

    wall_s = asyncio.run(run_all())
    return latencies_s, errors, wall_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", metavar="CKPT", help="grounding checkpoint (with --features: real model)")
    parser.add_argument("--features", metavar="H5", help="feature cache of the videos to query")
    parser.add_argument("--queries", metavar="JSONL", help="grounding JSONL whose (video, query) pairs to send")
    parser.add_argument("--device", default="cpu", help="torch device of the real model (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server (default 1)")
    parser.add_argument("--fake-ms", type=float, default=0.0, help="pretend model time per fake query (default 0)")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests (default 2000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests first (default 50)")
    parser.add_argument("--top-k", type=int, default=5, help="top_k of every query (default 5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="client timeout per request, s (default 60)")
    parser.add_argument("--synthetic", choices=list(SYNTHETIC),
                        help="real model on a cached 3-minute synthetic set (see above; made once in --scratch)")
    parser.add_argument("--scratch", type=Path, default=REPO / "scratch" / "bench" / "serve",
                        help="where --synthetic keeps its cache and checkpoints (default: scratch/bench/serve)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.synthetic:
        args.scratch = args.scratch.resolve()  # `tal train` runs in the repository
        if args.checkpoint or args.features:
            parser.error("--synthetic brings its own checkpoint and features: drop --checkpoint / --features")
        if not args.serve:
            prepare_synthetic(args.scratch, args.synthetic, args.threads)
        checkpoint, features, queries = synthetic_paths(args.scratch, args.synthetic)
        args.checkpoint, args.features = str(checkpoint), str(features)
        args.queries = args.queries or str(queries)
    if bool(args.checkpoint) != bool(args.features):
        parser.error("give both --checkpoint and --features for the real model, or neither for the fake one")
    if args.serve:
        return serve(args)

    import fastapi
    import httpx
    import uvicorn

    kind = "real" if args.checkpoint else "fake"
    child = subprocess.Popen([sys.executable, __file__, "--serve", *(argv if argv is not None else sys.argv[1:])],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = child.stdout.readline().split()
        if ready[:1] != ["READY"]:
            print(f"bench_serve: the server did not start (exit status {child.wait()})", file=sys.stderr)
            return 1
        url = ready[1]
        videos = httpx.get(url + "/videos", timeout=60).json()["videos"]
        fire(url, request_bodies(argparse.Namespace(**{**vars(args), "requests": args.warmup}), videos), args.clients,
             args.timeout)
        latencies_s, errors, wall_s = fire(url, request_bodies(args, videos), args.clients, args.timeout)
    finally:
        child.stdin.close()
        child.wait(timeout=60)

    cuts_ms = statistics.quantiles([1000 * s for s in latencies_s], n=100, method="inclusive")
    row = dict(retriever=kind, requests=len(latencies_s), clients=args.clients, errors=errors, wall_s=wall_s,
               throughput_rps=len(latencies_s) / wall_s, p50_ms=cuts_ms[49], p95_ms=cuts_ms[94], p99_ms=cuts_ms[98],
               mean_ms=1000 * statistics.fmean(latencies_s), max_ms=1000 * max(latencies_s))
    what = (f"real model {args.checkpoint} on {args.features} ({args.device}, {args.threads} torch threads)"
            if kind == "real" else f"fake retriever ({args.fake_ms:g} ms per query)")
    print(f"POST /query: {row['requests']} requests from {args.clients} clients, top_k {args.top_k}, {what}; "
          f"{len(videos)} videos, {os.cpu_count()} cores")
    header = (f"{'retriever':<10} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'p99 ms':>8} {'mean ms':>8} {'max ms':>8}")
    print(header)
    print("-" * len(header))
    print(f"{kind:<10} {row['requests']:8d} {errors:6d} {row['throughput_rps']:8.1f} {row['p50_ms']:8.2f} "
          f"{row['p95_ms']:8.2f} {row['p99_ms']:8.2f} {row['mean_ms']:8.2f} {row['max_ms']:8.2f}")
    if args.json:
        meta = dict(python=platform.python_version(), machine=platform.machine(), cpu_count=os.cpu_count(),
                    fastapi=fastapi.__version__, uvicorn=uvicorn.__version__, httpx=httpx.__version__,
                    retriever=kind, checkpoint=args.checkpoint, features=args.features, device=args.device,
                    torch_threads=args.threads if kind == "real" else None, fake_ms=args.fake_ms,
                    num_videos=len(videos), top_k=args.top_k, warmup=args.warmup, queries=args.queries,
                    synthetic=args.synthetic, timeout_s=args.timeout)
        args.json.write_text(json.dumps({"meta": meta, "rows": [row]}, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
