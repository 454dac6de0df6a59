"""`tal extract-features`: videos -> HDF5 feature cache (resumable, sharded under torchrun)."""
from __future__ import annotations

import argparse
import sys

from tal.cli.common import add_device, count
from tal.errors import TalInputError

EPILOG = """\
video ids: the file name without its extension (videos/abc.mp4 -> abc); two files with one id are an
error. --video-list FILE holds one video a line, 'path' or 'path<TAB>video_id' ('#' comments allowed;
relative paths are relative to the current directory).

defaults: --window = the backbone's clip length, --stride = the backbone's stride (else --window),
--fps = the backbone's rate (native rate of each video if it has none); see --list-backbones.

weights: without --weights the published file is used from the torch hub cache (<hub>/checkpoints,
$TORCH_HOME), downloaded there once when missing (TAL_OFFLINE=1: never download). --weights PATH takes
the published file as it is; backbones made of several networks (i3d flow: I3D + RAFT) take
PATH,PATH,... in any order.

resuming: finished videos are kept as OUT.h5.parts/ until the run ends, then OUT.h5 is rebuilt
atomically. Re-running the same command after a crash or kill skips finished videos; a different
backbone/weights/fps/window/stride/decoder on an existing OUT.h5 is an error.

exit status: 0 all videos extracted (or already there); 1 some videos failed (unreadable, no video
stream, zero frames, shorter than one window, ...): they are listed with their reason in
OUT.h5.failures.jsonl and the others are in OUT.h5; 2 bad usage or settings.

examples:
  tal extract-features videos/*.mp4 --out feats.h5 --backbone r2plus1d_18 --fps 15 --window 16 --stride 8
  tal extract-features --video-list list.txt --out feats.h5 --backbone handcrafted --workers 4
  torchrun --nproc-per-node 4 -m tal extract-features --video-list list.txt --out feats.h5 --backbone r3d_18
  tal extract-features --list-backbones
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract-features", help="extract clip features of videos into an HDF5 cache",
        description="Decode videos, run a backbone over sliding windows of frames and write one [T, D] "
                    "dataset per video into an HDF5 feature cache.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="video files")
    p.add_argument("--video-list", metavar="FILE", help="file with one video a line: path or path<TAB>video_id")
    p.add_argument("--out", metavar="FEATS.h5", help="the feature cache to write (or resume)")
    p.add_argument("--backbone", metavar="NAME", help="see --list-backbones; 'handcrafted' needs no weights")
    p.add_argument("--weights", metavar="PATH", help="the published weights file (default: the torch hub cache, "
                                                     "downloaded once); 'random' = random init, for tests and "
                                                     "benchmarks")
    p.add_argument("--fps", type=float, metavar="F", help="resample videos to F frames per second")
    p.add_argument("--window", type=int, metavar="W", help="frames per clip")
    p.add_argument("--stride", type=int, metavar="S", help="frames between consecutive clips")
    p.add_argument("--batch-size", type=int, default=4, metavar="B",
                   help="clips per forward pass (default 4: keeps a 3D CNN under 2 GB on the CPU)")
    p.add_argument("--decoder", default="auto", choices=["auto", "decord", "pyav"],
                   help="auto = PyAV here: its memory stays flat on long videos, while a decord worker feeding "
                        "a slower network grows (5.5 GB vs 1.4 GB on a 10-minute video with r2plus1d_18)")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="decoding processes (0 = decode in the main process; default 2)")
    add_device(p)
    p.add_argument("--overwrite", action="store_true",
                   help="extract again the videos already in --out whose file changed since (refused otherwise)")
    p.add_argument("--list-backbones", action="store_true", help="list the backbones and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _list_backbones() -> int:
    from tal.features.backbones import list_backbones

    rows = [("name", "kind", "input", "dim", "window", "stride", "fps", "weights", "reproduces")]
    for s in list_backbones():
        fps = "native" if s.default_fps is None else f"{s.default_fps:g}"
        rows.append((s.name, s.kind, str(s.input_size), str(s.feature_dim), str(s.default_window),
                     str(s.default_stride or s.default_window), fps, s.weights, s.reproduces or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list_backbones:
        return _list_backbones()
    from tal.features.extract import ExtractSettings, extract_features, jobs_from_paths, read_video_list

    if not args.out or not args.backbone:
        raise TalInputError("--out and --backbone are required (see 'tal extract-features --help')")
    jobs = jobs_from_paths(args.videos)
    if args.video_list:
        jobs += read_video_list(args.video_list)
    if not jobs:
        raise TalInputError("no videos: give video files or --video-list FILE")
    settings = ExtractSettings(args.backbone, args.weights, args.fps, args.window, args.stride, args.batch_size,
                               args.decoder, args.workers, args.device, args.overwrite)
    result = extract_features(jobs, args.out, settings, progress=False if args.no_progress else None)
    if result.rank == 0:
        msg = (f"tal extract-features: {result.out}: {count(result.num_videos, 'video')} ({result.num_new} new, "
               f"{result.num_skipped} already done)")
        if result.num_failed:
            msg += f"; {result.num_failed} failed, listed in {result.failures_path}"
        print(msg, file=sys.stderr)
    return 1 if result.num_failed else 0
