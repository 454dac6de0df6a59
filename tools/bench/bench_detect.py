"""Latency of `tal detect` on the CPU, in seconds per minute of video: decoding, features, head.

Setup, made once under --scratch and reused (nothing is trained for accuracy; only time is measured):
  checkpoint  A2Net (configs/synthetic/a2net.yaml), 1 epoch of `tal train` on 6 rendered synthetic videos
              (tal.datasets.synthetic_video: 20-40 s, 10 fps, 160x120) whose features come from the
              weight-free `handcrafted` backbone with the demo's window 8 / stride 4; or --checkpoint CKPT,
              any detection checkpoint whose features have an extractor
  long video  a --minutes synthetic video (default 3) with actions of every class one after another,
              rendered with `render_video` at the checkpoint's frame rate and --size
Timed on the long video (best of --runs; torch on --threads threads, extraction with workers 0 and the
checkpoint's settings, exactly as `ActionDetector` extracts a video file):
  decode        `tal.features.decode.iter_clips` over every window, as extraction decodes (PyAV, frames
                resized to the backbone's input while decoding)
  features      extract_features into a fresh cache, minus decode: preprocessing, backbone, HDF5 write
  head          ActionDetector.detect(video_id) on that cache: the head over cached features, NMS, seconds
  detect(path)  ActionDetector.detect(path) with a fresh cache: extraction + head, what `tal detect VIDEO`
                does once the checkpoint is loaded
  load          ActionDetector.from_checkpoint
  tal detect    the command in a subprocess, once: interpreter start-up, imports, load, extract, head
Run it alone on the machine:

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_detect.py --json bench_detect.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchlib import best_of  # noqa: E402

TRAIN_VIDEOS = 6
TRAIN_FEATURES = dict(backbone="handcrafted", window=8, stride=4)  # tal demo's settings
CONFIG = REPO / "configs" / "synthetic" / "a2net.yaml"


def say(message: str) -> None:
    print(f"[bench_detect] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Setup


def build_checkpoint(scratch: Path, threads: int) -> Path:
    """A2Net trained 1 epoch on handcrafted features of a few rendered videos (reused when present)."""
    from tal.datasets.synthetic_video import make_video_set
    from tal.features.extract import ExtractSettings, VideoJob, extract_features

    work = scratch / "a2net_1epoch"
    checkpoint = work / "checkpoint_last.pt"
    if checkpoint.is_file():
        return checkpoint
    videos = scratch / "train_videos"
    annotations = videos / "annotations.json"
    if not annotations.is_file():
        say(f"rendering {TRAIN_VIDEOS} training videos into {videos}")
        make_video_set(videos, TRAIN_VIDEOS, seed=0)
    features = videos / "features.h5"
    if not features.is_file():
        say(f"extracting handcrafted features into {features}")
        jobs = [VideoJob(p.stem, str(p)) for p in sorted((videos / "videos").glob("*.mp4"))]
        result = extract_features(jobs, features, ExtractSettings(**TRAIN_FEATURES, workers=0, device="cpu"),
                                  progress=False)
        if result.num_failed:
            raise SystemExit(f"extraction of the training videos failed: {result.failures}")
    say(f"training A2Net for 1 epoch into {work}")
    cmd = [sys.executable, "-m", "tal", "train", str(CONFIG), "--work-dir", str(work), "--threads", str(threads),
           "--set", f"dataset.features={features}", f"dataset.annotations={annotations}", "train.epochs=1",
           "eval.interval=1"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0 or not checkpoint.is_file():
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return checkpoint


def checkpoint_fps(settings: dict) -> int:
    """The frame rate to render at so the checkpoint accepts the video (10, the demo's, if it records none)."""
    fps = settings.get("fps")
    return int(round(float(fps))) if isinstance(fps, (int, float)) else 10


def long_video(scratch: Path, minutes: float, fps: int, size: tuple[int, int], seed: int) -> tuple[Path, int]:
    """(path, number of actions) of a rendered synthetic video of `minutes` (reused when present)."""
    from tal.datasets.synthetic_actions import CLASS_NAMES
    from tal.datasets.synthetic_render import render_video
    from tal.datasets.synthetic_video import sample_layout

    duration_s = round(minutes * 60 * fps) / fps
    layout = sample_layout(np.random.default_rng(seed), duration_s, fps, CLASS_NAMES, min_action_s=2.0,
                           max_action_s=10.0, min_gap_s=2.0, max_gap_s=15.0, repeat_classes=True)
    path = scratch / f"long_{minutes:g}min_{size[0]}x{size[1]}_{fps}fps_seed{seed}.mp4"
    if not path.is_file():
        say(f"rendering a {minutes:g}-minute video with {len(layout)} actions into {path}")
        render_video(path, layout, duration_s, fps, size, seed)
    return path, len(layout)


# ----------------------------------------------------------------------------------------------
# Timings


def extract_settings(settings: dict, device: str):
    """The ExtractSettings ActionDetector uses for a video file, from a checkpoint's feature settings."""
    from tal.features.extract import ExtractSettings

    fps, weights = settings.get("fps"), settings.get("weights")
    return ExtractSettings(backbone=str(settings["backbone"]),
                           weights=None if weights in (None, "none", "") else str(weights),
                           fps=None if fps in (None, "native") else float(fps),
                           window=settings.get("window"), stride=settings.get("stride"), workers=0, device=device)


def decode_only(path: Path, extract) -> int:
    """Clips of `iter_clips` over the video with extraction's decoder, frame rate and resize."""
    from tal.features.backbones import get_spec
    from tal.features.decode import iter_clips
    from tal.features.extract import decode_size, extraction_decoder, resolve_settings

    spec = get_spec(extract.backbone)
    fps, window, stride = resolve_settings(extract, spec)
    return sum(1 for _ in iter_clips(path, window, stride, fps, extraction_decoder(extract.decoder),
                                     decode_size(spec)))


def extract_fresh(path: Path, out: Path, extract) -> int:
    """Extract the video into a new cache at `out`; returns its number of features."""
    import h5py

    from tal.features.extract import VideoJob, extract_features

    for stale in (out, out.with_name(out.name + ".failures.jsonl")):
        stale.unlink(missing_ok=True)
    result = extract_features([VideoJob("long", str(path))], out, extract, progress=False)
    if result.num_failed:
        raise SystemExit(f"{path}: extraction failed: {result.failures}")
    with h5py.File(out, "r") as f:
        return int(f["long"].shape[0])


def time_cli(checkpoint: Path, video: Path, threads: int, tmp: Path) -> float:
    """Wall seconds of `python -m tal detect --checkpoint CKPT VIDEO --out OUT` (fresh process, no cache)."""
    out = tmp / "cli_detections.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "tal", "detect", "--checkpoint", str(checkpoint), str(video), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def run(args: argparse.Namespace) -> dict:
    import torch

    from tal.api import ActionDetector
    from tal.features.decode import probe_video

    torch.set_num_threads(args.threads)
    args.scratch = args.scratch.resolve()  # subprocesses run in the repository
    args.scratch.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint.resolve() if args.checkpoint else build_checkpoint(args.scratch, args.threads)
    start = time.perf_counter()
    detector = ActionDetector.from_checkpoint(checkpoint)
    load_s = time.perf_counter() - start
    settings = detector.settings
    fps = checkpoint_fps(settings)
    video, num_actions = long_video(args.scratch, args.minutes, fps, args.size, args.seed)
    num_frames = probe_video(video, "pyav").num_frames
    minutes = num_frames / fps / 60
    extract = extract_settings(settings, "cpu")

    say(f"timing on {video.name} ({minutes:.2f} min, {num_frames} frames), best of {args.runs}")
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp_name:
        tmp = Path(tmp_name)
        warm_video, _ = long_video(args.scratch, 0.05, fps, args.size, args.seed)  # 3 s: first calls, untimed
        ActionDetector.from_checkpoint(checkpoint, cache=tmp / "warmup.h5").detect(warm_video)
        decode_s, num_clips = best_of(args.runs, lambda: decode_only(video, extract))
        extract_s, num_features = best_of(args.runs, lambda: extract_fresh(video, tmp / "features.h5", extract))
        if num_clips != num_features:
            raise SystemExit(f"decode gave {num_clips} clips but extraction {num_features} features")

        cached = ActionDetector.from_checkpoint(checkpoint, features=tmp / "features.h5")
        cached.detect("long")  # warm-up: first calls allocate
        head_s, detections = best_of(max(args.runs, 3), lambda: cached.detect("long"))
        cached.features.close()

        e2e_s = float("inf")
        for i in range(args.runs):  # a fresh cache each run, so every run extracts
            fresh = ActionDetector.from_checkpoint(checkpoint, cache=tmp / f"e2e_{i}.h5")
            begin = time.perf_counter()
            fresh.detect(video)
            e2e_s = min(e2e_s, time.perf_counter() - begin)
        cli_s = None if args.no_cli else time_cli(checkpoint, video, args.threads, tmp)

    def part(name: str, seconds: float | None, what: str, fixed: bool = False) -> dict:
        """A row; a fixed cost (paid once per process, whatever the video's length) gets no per-minute figure."""
        per_minute = seconds is not None and not fixed
        return dict(part=name, what=what, seconds=seconds, fixed=fixed,
                    s_per_video_minute=seconds / minutes if per_minute else None,
                    x_realtime=minutes * 60 / seconds if per_minute and seconds else None)

    features_s = max(extract_s - decode_s, 0.0)
    rows = [
        part("decode", decode_s, "iter_clips over every window (extraction's decoding)"),
        part("features", features_s, "extract_features minus decode (preprocess, backbone, HDF5)"),
        part("head", head_s, "detect(video_id) on the cache (head + NMS)"),
        part("sum", decode_s + features_s + head_s, "decode + features + head"),
        part("extract", extract_s, "extract_features into a fresh cache (decode included)"),
        part("detect_path", e2e_s, "detect(path): extraction into a fresh cache + head"),
        part("load", load_s, "ActionDetector.from_checkpoint (once per process)", fixed=True),
        part("tal_detect_cli", cli_s, "tal detect VIDEO in a fresh process (start-up, load, extract, head)"),
    ]
    meta = dict(checkpoint=str(checkpoint), video=str(video), minutes=minutes, num_frames=num_frames, fps=fps,
                size=f"{args.size[0]}x{args.size[1]}", num_actions=num_actions, num_features=num_features,
                num_detections=len(detections), backbone=settings.get("backbone"), window=settings.get("window"),
                stride=settings.get("stride"), head=detector.model.__class__.__name__, runs=args.runs,
                torch_threads=torch.get_num_threads(), torch=torch.__version__, python=platform.python_version(),
                machine=platform.machine(), cpu_count=os.cpu_count(), load_average=os.getloadavg())
    return {"meta": meta, "rows": rows}


def size_arg(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 160x120, got {text!r}") from None
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="detection checkpoint (default: build the 1-epoch A2Net)")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the timed video (default 3)")
    parser.add_argument("--size", type=size_arg, default=(160, 120), help="WIDTHxHEIGHT (default 160x120, the demo's)")
    parser.add_argument("--runs", type=int, default=2, help="runs per timing; the best is reported (default 2; "
                                                            "the head at least 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="layout and look of the long video (default 0)")
    parser.add_argument("--no-cli", action="store_true", help="skip timing the `tal detect` subprocess")
    parser.add_argument("--quick", action="store_true", help="a 1-minute video, 1 run (for run_all.py)")
    parser.add_argument("--scratch", type=Path, default=REPO / "scratch" / "bench" / "detect",
                        help="generated videos, features and checkpoint (default: scratch/bench/detect)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.runs = 1.0, 1
    if args.runs < 1 or args.minutes <= 0:
        parser.error("--runs must be >= 1 and --minutes > 0")

    result = run(args)
    m = result["meta"]
    print(f"tal detect latency: {m['head']} ({m['backbone']} features, window {m['window']}, stride {m['stride']}) "
          f"on a {m['minutes']:.2f}-minute {m['size']} {m['fps']} fps video ({m['num_features']} features, "
          f"{m['num_actions']} actions, {m['num_detections']} detections); best of {m['runs']}, "
          f"{m['torch_threads']} torch threads, CPU")
    header = f"{'part':<16} {'seconds':>8} {'s / video-min':>13} {'x real time':>11}  what"
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        if r["seconds"] is None:
            print(f"{r['part']:<16} {'-':>8} {'-':>13} {'-':>11}  {r['what']} (skipped)")
        elif r["fixed"]:
            print(f"{r['part']:<16} {r['seconds']:8.3f} {'-':>13} {'-':>11}  {r['what']}")
        else:
            print(f"{r['part']:<16} {r['seconds']:8.3f} {r['s_per_video_minute']:13.3f} {r['x_realtime']:11.1f}  "
                  f"{r['what']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
