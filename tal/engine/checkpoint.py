"""Checkpoints: one file holds everything to resume training or to run inference without the data.

Layout (a dict saved with torch.save): format/version, "config" (the resolved config), "meta" (what the
task read from the data: feature settings, class list, vocabulary...), "model" (state dict), and for
resuming "optimizer", "scheduler", "scaler", "epoch" (epochs finished), "rng", "best", "history".
Files are written to a temp file in the same folder, fsynced, then renamed: a kill while saving leaves
the previous checkpoint intact.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tal.errors import TalInputError

FORMAT = "tal-checkpoint"
VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
# Checkpoints written before the RNG state became tensors hold numpy's MT19937 keys as an array: allow
# exactly the numpy types that rebuild a plain array, nothing that can call code.
_reconstruct = getattr(getattr(np, "_core", None) or np.core, "multiarray")._reconstruct
_OLD_RNG_TYPES = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct,
                  (_reconstruct, "numpy.core.multiarray._reconstruct")]


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write `state` (plus format and version) atomically to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        kept = ("the previous one is intact; free space and re-run with --resume" if path.exists()
                else "nothing was lost")
        raise TalInputError(f"{path}: no space left on the device while saving the checkpoint; {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a tal checkpoint; a missing, truncated or foreign file is a TalInputError saying so."""
    path = Path(path)
    if not path.is_file():
        raise TalInputError(f"{path}: no such checkpoint file")
    try:
        with path.open("rb") as f:
            head = f.read(len(ZIP_MAGIC))
        if head != ZIP_MAGIC:  # never unpickle arbitrary bytes: a huge pickle FRAME length alone can exhaust memory
            raise ValueError("empty file" if not head else "not a torch zip archive")
        with torch.serialization.safe_globals(_OLD_RNG_TYPES):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"GLOBAL (\S+)", str(exc))
        raise TalInputError(f"{path}: refused: the file holds a Python object that loading would run "
                            f"({blocked.group(1) if blocked else 'not tensors or plain data'}); tal loads only "
                            f"tensors and plain data from checkpoints, and `tal train` writes nothing else. Use a "
                            f"checkpoint that tal train wrote") from None
    except Exception as exc:  # whatever unpickling a damaged file raises (EOF, overflow, bad opcode, zip...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TalInputError(f"{path}: not a readable checkpoint ({reason}); it may be truncated: "
                            f"use another checkpoint (checkpoint_best.pt / checkpoint_last.pt) or retrain") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TalInputError(f"{path}: not a tal checkpoint (no '{FORMAT}' marker); "
                            f"tal loads the checkpoints that `tal train` writes")
    if state.get("version", 0) > VERSION:
        raise TalInputError(f"{path}: checkpoint version {state['version']} is newer than this tal reads "
                            f"({VERSION}); upgrade tal")
    for key in ("config", "meta", "model"):
        if key not in state:
            raise TalInputError(f"{path}: checkpoint has no {key!r} entry")
    return state
