"""Configs: YAML files with `dataset`, `model`, `train`, `eval` sections and a top-level `seed`.

A config may start from others with `_base_: path.yaml` (or a list, merged in order, paths relative
to the file) and then says only what differs: mappings merge key by key, anything else replaces.
`--set a.b=c` overrides one key; the value is parsed as YAML (numbers, lists, booleans, null).
Overriding a key the config does not have is an error that lists close matches, so a typo never
passes silently; `--set +a.b=c` adds a new key on purpose.
"""
from __future__ import annotations

import copy
import difflib
import os
import math
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from tal.errors import TalInputError

SECTIONS = ("dataset", "model", "train", "eval")
_EXPONENT_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise TalInputError(f"{path}: no such config file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise TalInputError(f"{path}:{line}: not UTF-8 text; save the config as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TalInputError(f"{path}{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TalInputError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def merge(base: dict, override: dict) -> dict:
    """Deep merge: mappings merge key by key, every other value of `override` replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_with_bases(path: Path, chain: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in chain:
        raise TalInputError(f"{path}: _base_ cycle: {' -> '.join(str(p) for p in chain + (path,))}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list):
        raise TalInputError(f"{path}: _base_ must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        merged = merge(merged, _load_with_bases(path.parent / base, chain + (path,)))
    return merge(merged, data)


def apply_override(cfg: dict, assignment: str) -> None:
    """Apply one `key.sub=value` (or `+key.sub=value` to add a new key) to `cfg` in place."""
    if "=" not in assignment:
        raise TalInputError(f"--set {assignment!r}: expected key=value, e.g. train.epochs=10")
    key, raw = assignment.split("=", 1)
    add = key.startswith("+")
    parts = key.lstrip("+").strip().split(".")
    if not all(parts):
        raise TalInputError(f"--set {assignment!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _EXPONENT_NUMBER.match(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-4 as a string
    node = cfg
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if part not in node and not add:
            path = ".".join(parts[:depth + 1])
            close = difflib.get_close_matches(part, [str(k) for k in node], n=3, cutoff=0.75)
            hint = f"; did you mean {', '.join('.'.join(parts[:depth] + [c]) for c in close)}?" if close else ""
            raise TalInputError(f"--set {key}: the config has no key {path!r}{hint} "
                                f"(use --set +{key}=... to add a new key)")
        if last:
            node[part] = value
        else:
            if not isinstance(node.get(part), dict):
                if not add:
                    raise TalInputError(f"--set {key}: {'.'.join(parts[:depth + 1])!r} is not a section")
                node[part] = {}
            node = node[part]


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """The resolved config: bases merged, overrides applied, sections checked."""
    cfg = _load_with_bases(Path(path), ())
    for assignment in overrides:
        apply_override(cfg, assignment)
    for section in SECTIONS:
        value = cfg.setdefault(section, {})
        if not isinstance(value, dict):
            raise TalInputError(f"{path}: section {section!r} must be a mapping")
    unknown = sorted(set(cfg) - set(SECTIONS) - {"seed", "task"})
    if unknown:
        raise TalInputError(f"{path}: unknown top-level keys {unknown}; sections are {list(SECTIONS)}, "
                            "plus 'seed' and 'task'")
    cfg.setdefault("seed", 0)
    return cfg


def save_config(cfg: dict, path: str | Path) -> None:
    """Write the resolved config atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def get(cfg: dict, dotted: str, default: Any = None) -> Any:
    """`get(cfg, "train.lr", 1e-3)`: a nested value or the default."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def check_number(section: dict, key: str, where: str, default: Any, kind: type = float,
                 minimum: float | None = None, exclusive: bool = False) -> Any:
    """section[key] (or `default`) checked to be a `kind` (int: a whole number, not 2.5 or "abc"; float:
    any finite number) at least `minimum` (above it when `exclusive`); a TalInputError naming
    `where.key` and the value otherwise."""
    value = section.get(key, default)
    if value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
    ok = ok and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum:g}"
        noun = "a whole number" if kind is int else "a number"
        raise TalInputError(f"{where}.{key} must be {noun}{bound}, got {value!r}")
    return kind(value)
