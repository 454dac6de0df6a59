"""`tal import-features`: published feature sets -> a tal HDF5 feature cache."""
from __future__ import annotations

import argparse
import sys

EPILOG = """\
source layouts:
  2dtan-hdf5       one HDF5 file, a [T, D] dataset per video at the root (2D-TAN's TACoS
                   tall_c3d_features.hdf5, Charades vgg_rgb_features.hdf5); --key K reads vid/K instead
  activitynet-c3d  one HDF5 file, a group per video with c3d_features [T, 500]
                   (sub_activitynet_v1-3.c3d.hdf5, ids v_<id>); defaults --stride 8 --window 16
  npy-dir          a folder of <video id>.npy / .npz / .pt files, each [T, D] (ActionFormer, OpenTAD,
                   TriDet); .npz/.pt holding several arrays: --key (default 'feats'); --transpose for
                   [D, T] files; [T, 1, 1, D] arrays are squeezed

timing: the files do not record it, so give --fps (frames per second of the frames the features were
computed on), --stride and --window (frames). Durations: --durations FILE (ActivityNet-style JSON with
"duration" per video, or CSV video,duration), else ((T-1)*stride + window) / fps. '--fps durations'
derives each video's rate from its duration instead: fps = ((T-1)*stride + window) / duration.
--video-info FILE takes each video's fps and duration from an annotation file that records them
(ActionFormer's thumos14.json: THUMOS14 has 30, 29.97, 25 and 24 fps videos).
'tal features info' shows which was used.

examples:
  tal import-features --format npy-dir data/thumos/i3d_features --out thumos_i3d.h5 \\
      --stride 4 --window 16 --video-info thumos14.json --backbone i3d
  tal import-features --format activitynet-c3d sub_activitynet_v1-3.c3d.hdf5 --out anet_c3d.h5 \\
      --fps durations --durations activity_net.v1-3.min.json --strip-prefix v_
  tal import-features --format 2dtan-hdf5 tall_c3d_features.hdf5 --out tacos_c3d.h5 --fps 29.4 --stride 16 --window 16
"""


FORMATS = ("2dtan-hdf5", "activitynet-c3d", "npy-dir")  # = tal.features.importers.FORMATS (kept light for --help)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-features", help="convert published feature files into a tal feature cache",
        description="Convert a published feature set into a tal HDF5 feature cache (one [T, D] dataset per video "
                    "with fps/stride/window/duration).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="layout of SRC (see below)")
    p.add_argument("src", metavar="SRC", help="the HDF5 file or the folder of per-video files")
    p.add_argument("--out", required=True, metavar="FEATS.h5", help="the feature cache to write")
    p.add_argument("--fps", metavar="F", help="frame rate the features were computed at, or 'durations'")
    p.add_argument("--stride", type=int, metavar="S", help="frames between consecutive features")
    p.add_argument("--window", type=int, metavar="W", help="frames per feature")
    p.add_argument("--durations", metavar="FILE", help="ActivityNet-style JSON or CSV video,duration (seconds)")
    p.add_argument("--video-info", metavar="FILE",
                   help="ActivityNet-style JSON with each video's fps and duration (replaces --fps and --durations)")
    p.add_argument("--key", metavar="K", help="array name inside .npz/.pt files or per-video HDF5 groups")
    p.add_argument("--transpose", action="store_true", help="the files store [D, T]")
    p.add_argument("--strip-prefix", metavar="P", help="remove P from the start of video ids (e.g. v_)")
    p.add_argument("--backbone", metavar="NAME", help="what made the features, recorded in the file (e.g. i3d)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists (refused otherwise)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tal.features.importers import import_features

    summary = import_features(args.format, args.src, args.out, args.fps, args.stride, args.window,
                              durations=args.durations, key=args.key, transpose=args.transpose,
                              strip_prefix=args.strip_prefix, backbone=args.backbone,
                              video_info=args.video_info, overwrite=args.overwrite)
    from tal.cli.common import count

    print(f"tal import-features: {summary.out}: {count(summary.num_videos, 'video')}, dimension {summary.feature_dim}, "
          f"durations {summary.duration_source}", file=sys.stderr)
    return 0
