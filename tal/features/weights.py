"""Which backbone weights made a feature cache, and finding them again for inference.

A cache records the weights of its backbone as three file attributes: `weights` (an id: the published
weights, e.g. `torchvision:R3D_18_Weights.KINETICS400_V1`, a user file `file:NAME#sha256:PREFIX`,
`random(seed=0)` or `none`), `weights_sha256` (the full digest of the file loaded, when there was one)
and `weights_path` (where it was loaded from). A head trained on that cache stores them in its
checkpoint, so a video file given at inference is extracted with the same weights: the published file
from the torch hub cache, the recorded path, or a `--weights` override whose digest must match.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tal.errors import TalInputError

RANDOM_ID = "random(seed=0)"
NO_WEIGHTS = ("", "none")
_ID_DIGEST = re.compile(r"#sha256:([0-9a-f]+)$")


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_weights_id(path: Path, sha256: str) -> str:
    """The `weights` id of a user-supplied state dict file."""
    return f"file:{path.name}#sha256:{sha256[:12]}"


def weight_files(value: str | Path) -> list[Path]:
    """The files of a `--weights` value: one path, or several joined by commas (a backbone made of several
    networks, e.g. I3D flow = I3D + RAFT)."""
    return [Path(part) for part in str(value).split(",") if part]


def digest_of(value: str | Path) -> str:
    """sha256 of a `--weights` value: the file's own, or for several files the sha256 of their sorted digests
    (one per line), so the order they were given in does not matter."""
    files = weight_files(value)
    if len(files) == 1:
        return sha256_of(files[0])
    return hashlib.sha256("\n".join(sorted(sha256_of(f) for f in files)).encode()).hexdigest()


def files_exist(value: str | Path) -> bool:
    files = weight_files(value)
    return bool(files) and all(f.is_file() for f in files)


def weights_digest(settings: dict) -> str | None:
    """The sha256 (full, or the 12-character prefix an id carries) recorded in cache / checkpoint settings."""
    full = settings.get("weights_sha256")
    if full:
        return str(full)
    match = _ID_DIGEST.search(str(settings.get("weights") or ""))
    return match.group(1) if match else None


def same_weights(trained: dict, now: dict) -> bool | None:
    """True / False when both sides say which weights they used; None when either does not."""
    a, b = weights_digest(trained), weights_digest(now)
    if a and b:
        return a.startswith(b) or b.startswith(a)
    ia, ib = trained.get("weights"), now.get("weights")
    if ia is None or ib is None:
        return None
    return str(ia) == str(ib)


def describe(settings: dict) -> str:
    """A short human description of recorded weights, for messages."""
    weights = str(settings.get("weights"))
    digest = weights_digest(settings)
    if digest and not weights.endswith(digest[:12]):
        weights += f" (sha256 {digest[:12]})"
    return weights


def inference_weights(recorded: dict, override: str | None, checkpoint: str | Path) -> str | None:
    """The `weights` argument of `build_backbone` that reproduces the features a head was trained on.

    recorded: the checkpoint's feature settings (`weights`, `weights_sha256`, `weights_path`);
    override: `--weights` / `weights=` from the user ("random" or a file), checked against the digest.
    None means the published weights (torch hub cache).
    """
    rec_id = str(recorded.get("weights") or "none")
    if rec_id in NO_WEIGHTS:
        if override is not None:
            raise TalInputError(f"{checkpoint}: its features were made by backbone {recorded.get('backbone')!r}, "
                                f"which has no weights; drop --weights {override}")
        return None
    if override is not None:
        return _checked_override(recorded, rec_id, override, checkpoint)
    if rec_id == RANDOM_ID:
        return "random"
    if rec_id.startswith("file:"):
        path = recorded.get("weights_path")
        if path and files_exist(path) and same_weights(recorded, {"weights_sha256": digest_of(path)}):
            return str(path)
        state = "missing" if not path or not files_exist(path) else "another file now"
        where = f" (recorded at {path}, which is {state})"
        raise TalInputError(f"{checkpoint}: its features were made with the backbone weights {describe(recorded)}"
                            f"{where if path else ''}; pass that file with --weights PATH (weights=PATH in Python)")
    return None  # published weights: the backbone finds them in the torch hub cache


def _checked_override(recorded: dict, rec_id: str, override: str, checkpoint: str | Path) -> str:
    if override == "random":
        if rec_id != RANDOM_ID:
            raise TalInputError(f"--weights random: {checkpoint} was trained on features made with "
                                f"{describe(recorded)}, not random weights")
        return override
    path = override
    missing = [f for f in weight_files(override) if not f.is_file()]
    if missing or not weight_files(override):
        raise TalInputError(f"--weights {missing[0] if missing else override}: no such file")
    digest = digest_of(override)
    if weights_digest(recorded) and not same_weights(recorded, {"weights_sha256": digest}):
        raise TalInputError(f"--weights {path} (sha256 {digest[:12]}) are not the weights the features of "
                            f"{checkpoint} were made with ({describe(recorded)}); pass that file instead")
    if rec_id == RANDOM_ID:
        raise TalInputError(f"--weights {path}: {checkpoint} was trained on features made with random weights; "
                            f"use --weights random")
    return str(path)
