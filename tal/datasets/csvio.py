"""Reading the CSV and plain-text side files of annotation sets, with errors that name file and line."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterator, Sequence, Union

from tal.errors import TalInputError

PathLike = Union[str, os.PathLike]
PathArg = Union[PathLike, Sequence[PathLike]]  # one path or several


def as_paths(value: PathArg | None) -> list[Path]:
    """One path or a sequence of paths as a list of `Path` (None: empty)."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def open_text(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of a UTF-8 text file; a missing or binary file is an error."""
    if not path.is_file():
        raise TalInputError(f"{path}: no such file")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TalInputError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start + 1} of the line); save the "
                                    f"file as UTF-8") from None
            yield lineno, line.rstrip("\r\n")


def read_csv_rows(path: PathLike, required: Sequence[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for every row of a CSV file with a header holding the `required` columns.

    `what` names the expected file in the error for a missing column ("the Charades CSV").
    """
    path = Path(path)
    if not path.is_file():
        raise TalInputError(f"{path}: no such file")
    try:
        with path.open("r", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise TalInputError(
                    f"{path}: missing column(s) {', '.join(map(repr, missing))} "
                    f"(header: {','.join(header) or 'empty'}); "
                    f"expected {what} with columns {','.join(required)}"
                )
            rows = []
            for row in reader:
                extra = row.pop(None, None) or []  # type: ignore[call-overload]
                if extra or any(v is None for v in row.values()):
                    got = sum(v is not None for v in row.values()) + len(extra)
                    raise TalInputError(
                        f"{path}:{reader.line_num}: expected {len(header)} comma-separated fields like the header, "
                        f"got {got}"
                    )
                rows.append((reader.line_num, row))
            return rows
    except UnicodeDecodeError:
        raise TalInputError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise TalInputError(f"{path}: malformed CSV: {exc}") from None


def parse_number(text: str, where: str, what: str, positive: bool = False) -> float:
    """A finite float from a text field (`positive`: also > 0), or an error naming the place and field."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise TalInputError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise TalInputError(f"{where}: {what} {text!r} is not a {'positive' if positive else 'finite'} number")
    return value
