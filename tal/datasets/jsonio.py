"""Reading JSON / JSONL input files with errors that name the file and the place."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

from tal.errors import TalInputError


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise TalInputError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise TalInputError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise TalInputError(f"{path}: not a UTF-8 text file") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file."""
    from tal.datasets.csvio import open_text

    for lineno, line in open_text(Path(path)):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TalInputError(f"{path}:{lineno}: malformed JSON line: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise TalInputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def parse_segment(value: Any, where: str, allow_zero_length: bool = True) -> tuple[float, float]:
    """A `[start, end]` pair in seconds (numbers or numeric strings), checked for NaN and order."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise TalInputError(f"{where}: segment must be [start, end], got {value!r}")
    try:
        start, end = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise TalInputError(f"{where}: segment must hold two numbers, got {value!r}") from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise TalInputError(f"{where}: segment {value!r} is not finite")
    if end < start or (end == start and not allow_zero_length):
        raise TalInputError(f"{where}: segment end {end} is before its start {start}" if end < start
                            else f"{where}: segment [{start}, {end}] has zero length")
    return start, end


def require(obj: dict, key: str, where: str) -> Any:
    if key not in obj:
        raise TalInputError(f"{where}: missing key {key!r}")
    return obj[key]


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write `text` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(obj: Any, path: str | Path, indent: int | None = 2) -> Path:
    return write_text_atomic(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", path)


def write_jsonl_atomic(rows: Any, path: str | Path) -> Path:
    return write_text_atomic("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), path)
