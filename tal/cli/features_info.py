"""`tal features info FILE`: what a feature cache holds, and what is wrong with it."""
from __future__ import annotations

import argparse
import json

EPILOG = """\
Reads every dataset to find NaN/Inf values (--no-values skips that). Exit status: 0 no problems found,
1 problems listed, 2 not a readable HDF5 file.

example:
  tal features info feats.h5 --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("features", help="inspect feature caches (features info FILE)",
                              description="Inspect HDF5 feature caches.")
    sub = p.add_subparsers(dest="features_command", metavar="SUBCOMMAND", parser_class=type(p))
    info = sub.add_parser("info", help="videos, dimensions, timing, provenance and problems of a cache",
                          description="Summarise a feature cache: videos, dimension, fps/stride/window, backbone, "
                                      "weights, file size, total features, and problems found.",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("file", metavar="FILE", help="the .h5 feature cache")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.add_argument("--no-values", action="store_true", help="do not read the arrays (no NaN/Inf check)")
    info.add_argument("--verify", action="store_true",
                      help="also compare every video's data with the checksum recorded when it was written")
    info.set_defaults(func=run_info)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return ""


def _values(values: list) -> str:
    if not values:
        return "-"
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:5]) + (" ..." if len(values) > 5 else "")


def format_report(r: dict) -> str:
    a = r["attrs"]
    lines = [
        f"file            {r['path']} ({_size(r['file_size_bytes'])})",
        f"videos          {r['num_videos']}",
        f"feature dim     {_values(r['feature_dims'])} ({_values(r['dtypes'])})",
        f"total features  {r['total_features']}",
        f"fps             {_values(r['fps'])}" + (f"  (file: {a['fps']})" if "fps" in a else ""),
        f"stride          {_values(r['stride'])} frames",
        f"window          {_values(r['window'])} frames",
        f"backbone        {r['backbone'] if r['backbone'] is not None else '(not recorded)'}",
        f"weights         {r['weights'] if r['weights'] is not None else '(not recorded)'}",
        f"durations       {r['duration_source'] or '(not recorded)'}",
    ]
    for key in ("decoder", "source", "import_format", "tal_version", "created", "updated"):
        if key in a:
            lines.append(f"{key:<16}{a[key]}")
    if not r["values_checked"]:
        lines.append("values          not checked (--no-values)")
    if r["verified"]:
        lines.append(f"checksums       verified ({len(r['unverified_videos'])} videos have none recorded)")
    if r["problems"]:
        lines.append("problems:")
        details = {"videos contain NaN/Inf": r["nonfinite_videos"], "zero features": r["empty_videos"],
                   "lack fps/stride": r["videos_missing_attrs"], "are groups": r["groups"],
                   "cannot be read": r["unreadable_videos"], "not 2-D": r["bad_shape"],
                   "damaged data": r["damaged_videos"]}
        for problem in r["problems"]:
            shown = next((v for k, v in details.items() if k in problem), [])
            lines.append(f"  - {problem}" + (f": {_values(shown)}" if shown else ""))
    else:
        lines.append("problems        none")
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    from tal.features.cache_report import inspect_feature_cache

    report = inspect_feature_cache(args.file, check_values=not args.no_values, verify=args.verify)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["problems"] else 0
