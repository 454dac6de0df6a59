"""`tal convert-annotations`: native annotation files -> the contract formats.

Detection formats are written as ActivityNet JSON, grounding formats as JSONL (DESIGN.md
"Annotations"). A one-line summary (videos, instances or queries, what was dropped or changed and
why) goes to stderr; bad input exits 2 with the file, line or video and the fix.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# name -> (task, one-line description); the registry in tal.datasets.annotations must have the same names
FORMAT_HELP = {
    "activitynet": ("detection", "ActivityNet JSON (official ActivityNet-1.3, G-TAD thumos_gt.json, the contract)"),
    "activitynet-bsn": ("detection", "BSN/BMN anet_anno_action.json; needs --video-info video_info_new.csv"),
    "thumos14-actionformer": ("detection", "ActionFormer thumos14.json"),
    "thumos14-txt": ("detection", "official <Class>_{val,test}.txt files or their folders"),
    "thumos14-csv": ("detection", "G-TAD {val,test}_Annotation.csv"),
    "charades-sta": ("grounding", "'VID START END##sentence' lines; needs --durations Charades_v1_*.csv"),
    "anet-captions": ("grounding", "2D-TAN ActivityNet Captions JSON (seconds)"),
    "tacos": ("grounding", "2D-TAN TACoS JSON (frames, converted to seconds)"),
    "jsonl": ("grounding", "grounding JSONL (the contract; re-checked and re-written)"),
}

EXAMPLES = """\
formats (--format; default auto: told from the file):
{formats}

examples (D = the folder holding the published annotation files):
  # ActivityNet-1.3 from BSN/BMN's files, ids without "v_" like the official ground truth
  # (19228 videos; validation 4728 videos / 7293 instances)
  tal convert-annotations --format activitynet-bsn D/activitynet13/anet_anno_action.json \\
      --video-info D/activitynet13/video_info_new.csv --strip-prefix v_ --out anet13.json

  # THUMOS14 from the official per-class txt (Ambiguous dropped; 200 Validation / 3007, 212 Test / 3358)
  tal convert-annotations --format thumos14-txt D/thumos14/official_txt \\
      --video-info D/thumos14/val_video_info.csv D/thumos14/test_video_info.csv --out thumos14.json

  # THUMOS14 from G-TAD's CSVs, keeping Ambiguous (213 Test videos / 3457 instances); the ground-truth
  # CSV adds the duration of video_test_0001292, which has only Ambiguous segments
  tal convert-annotations --format thumos14-csv D/thumos14/val_Annotation.csv D/thumos14/test_Annotation.csv \\
      --keep-ambiguous --video-info D/thumos14/val_video_info.csv D/thumos14/test_video_info.csv \\
      D/thumos14/thumos14_test_groundtruth.csv --out thumos14_ambiguous.json

  # THUMOS14 test split of ActionFormer's JSON (already the contract: checked and re-written)
  tal convert-annotations --format thumos14-actionformer D/thumos14/thumos14_actionformer.json \\
      --subset Test --out thumos14_test.json

  # Charades-STA: ends clipped to the video length, start >= end dropped (train 12404 of 12408 kept)
  tal convert-annotations --format charades-sta D/charades_sta/charades_sta_train.txt \\
      --durations D/charades_sta/Charades_v1_train.csv --out charades_sta_train.jsonl
  tal convert-annotations --format charades-sta D/charades_sta/charades_sta_test.txt \\
      --durations D/charades_sta/Charades_v1_test.csv --out charades_sta_test.jsonl

  # ActivityNet Captions (2D-TAN's train / val = val_1 / test = val_2) and TACoS: one split per command
  tal convert-annotations --format anet-captions D/activitynet_captions/val.json --out anet_captions_val.jsonl
  tal convert-annotations --format tacos D/tacos/test.json --out tacos_test.jsonl
"""

# CLI flag -> reader option, for the flags that only some formats take
_FLAG_OPTIONS = {"--video-info/--durations": "video_info", "--keep-ambiguous": "keep_ambiguous"}


def register(subparsers: argparse._SubParsersAction) -> None:
    formats = "\n".join(f"  {name:22s} {task:9s} {text}" for name, (task, text) in FORMAT_HELP.items())
    parser = subparsers.add_parser(
        "convert-annotations",
        help="convert native annotation files to the contract formats (ActivityNet JSON / grounding JSONL)",
        description="Convert annotation files to the contract formats: detection formats to ActivityNet JSON, "
        "grounding formats to JSONL (one query a line). Prints a one-line summary on stderr.",
        epilog=EXAMPLES.format(formats=formats),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sources", nargs="+", metavar="SRC",
                        help="annotation file(s) or folder(s); several detection sources are merged into one file")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMAT_HELP], metavar="FORMAT",
                        help="input format (see below); default: auto")
    parser.add_argument("--out", required=True, metavar="OUT", help="output .json (detection) or .jsonl (grounding)")
    parser.add_argument("--video-info", "--durations", dest="video_info", nargs="+", action="extend", metavar="CSV",
                        help="per-video CSV(s): video_info_new.csv (activitynet-bsn subsets), "
                        "{val,test}_video_info.csv or thumos14_test_groundtruth.csv (THUMOS14 durations), "
                        "Charades_v1_*.csv (Charades-STA durations)")
    parser.add_argument("--subset", metavar="NAME", help="detection: keep only the videos of this subset")
    parser.add_argument("--keep-ambiguous", action="store_true",
                        help="THUMOS14 txt/csv: keep 'Ambiguous' segments as a class (dropped by default)")
    parser.add_argument("--strip-prefix", metavar="PREFIX", help="remove this prefix from video ids (e.g. v_)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tal.datasets.annotations import FORMATS, sniff_format
    from tal.datasets.types import LoadReport
    from tal.errors import TalInputError

    fmt = FORMATS[sniff_format(args.sources[0]) if args.format == "auto" else args.format]
    options = {}
    for flag, value in {"--video-info/--durations": args.video_info,
                        "--keep-ambiguous": args.keep_ambiguous or None}.items():
        if value is None:
            continue
        if _FLAG_OPTIONS[flag] not in fmt.options:
            takers = [n for n, f in FORMATS.items() if _FLAG_OPTIONS[flag] in f.options]
            raise TalInputError(f"{flag} does not apply to --format {fmt.name} (it applies to {', '.join(takers)})")
        options[_FLAG_OPTIONS[flag]] = value
    if fmt.task == "grounding" and args.subset is not None:
        raise TalInputError(f"--subset applies to detection formats; {fmt.name} files hold one split each")
    if fmt.task == "grounding" and len(args.sources) != 1:
        raise TalInputError(
            f"--format {fmt.name} converts one split per command (got {len(args.sources)} sources): "
            "run it once per file, as train, val and test go to separate JSONL files"
        )
    out = Path(args.out)
    if out.is_dir():
        raise TalInputError(f"--out {out} is a folder; give the output file's name")
    report = LoadReport()
    quiet = logging.getLogger("tal.datasets")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the summary line below says what the loaders would warn about
    try:
        convert = _convert_detection if fmt.task == "detection" else _convert_grounding
        what = convert(args, fmt.name, options, out, report)
    finally:
        quiet.setLevel(level)
    target = "ActivityNet JSON" if fmt.task == "detection" else "grounding JSONL"
    print(f"tal convert-annotations: wrote {out} ({fmt.name} -> {target}): {what}; {report.describe()}",
          file=sys.stderr)
    return 0


def _convert_detection(args: argparse.Namespace, fmt: str, options: dict, out: Path, report) -> str:
    """Load, write ActivityNet JSON, and describe what was written."""
    from tal import __version__
    from tal.datasets.activitynet import write_activitynet_json
    from tal.datasets.annotations import load_detection_annotations

    annotations = load_detection_annotations(args.sources, fmt, subset=args.subset, strip_prefix=args.strip_prefix,
                                             report=report, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_activitynet_json(annotations, out, version=f"tal {__version__} convert-annotations {fmt}")
    per_subset = ", ".join(f"{s} {len(part.videos)}/{part.num_instances}"
                           for s in annotations.subsets() for part in [annotations.subset(s)])
    return (f"{len(annotations.videos)} videos, {annotations.num_instances} instances, "
            f"{len(annotations.classes)} classes (videos/instances by subset: {per_subset or 'none'})")


def _convert_grounding(args: argparse.Namespace, fmt: str, options: dict, out: Path, report) -> str:
    """Load, write grounding JSONL, and describe what was written."""
    from tal.datasets.annotations import load_grounding_queries
    from tal.datasets.grounding import write_grounding_jsonl

    queries = load_grounding_queries(args.sources[0], fmt, strip_prefix=args.strip_prefix, report=report, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_grounding_jsonl(queries, out)
    return f"{len(queries)} queries over {len({q.video for q in queries})} videos"
