"""Published weight files: found in the torch hub cache, or downloaded there once.

A backbone's published weights are a URL (and, where the publisher gives one, a checksum). When
`--weights` is not given, the file is looked up as `<torch hub dir>/checkpoints/<file name>` (where
torchvision caches its own weights too, honouring $TORCH_HOME); when absent it is downloaded there
with a progress bar, checked against the checksum, and renamed into place only when complete.
Offline (no network, or TAL_OFFLINE=1) it is one line naming the URL, the file name and the folder.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from tal.errors import TalInputError

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,64})\.[^.]+$")  # torchvision's "name-<sha256 prefix>.pth"
_urlopen = urllib.request.urlopen  # tests replace it: they never download


@dataclass(frozen=True)
class PublishedFile:
    """A weight file as its authors publish it."""

    url: str
    sha256: str = ""  # full digest, when published; else the prefix in a torchvision-style name is used

    @property
    def file_name(self) -> str:
        return Path(urlparse(self.url).path).name

    @property
    def expected_digest(self) -> str:
        """The published sha256 or its prefix ("" when the publisher gives none)."""
        if self.sha256:
            return self.sha256
        match = _HASH_IN_NAME.search(self.file_name)
        return match.group(1) if match else ""


def weights_cache_dir() -> Path:
    """torchvision's checkpoint cache: <torch.hub.get_dir()>/checkpoints (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def published_path(backbone: str, published: PublishedFile, progress: bool | None = None) -> Path:
    """The cached published file, downloaded first when it is not there.

    progress: the download bar on stderr; None shows it only on a terminal.
    """
    folder = weights_cache_dir()
    path = folder / published.file_name
    if path.is_file():
        return path
    offline_hint = (f"download {published.url} on a machine with internet and put {published.file_name} in "
                    f"{folder}, or pass --weights PATH")
    if os.environ.get("TAL_OFFLINE"):
        raise TalInputError(f"backbone {backbone}: weights {path} not cached and TAL_OFFLINE is set; {offline_hint}")
    folder.mkdir(parents=True, exist_ok=True)
    _download(backbone, published, path, progress, offline_hint)
    return path


def _download(backbone: str, published: PublishedFile, path: Path, progress: bool | None, hint: str) -> None:
    from tqdm import tqdm

    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with _urlopen(published.url, timeout=60) as response, part.open("wb") as f:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                      desc=f"download {path.name}", disable=None if progress is None else not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    f.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise TalInputError(f"backbone {backbone}: cannot download its weights ({reason}); {hint}") from None
    expected = published.expected_digest
    if expected and not digest.hexdigest().startswith(expected):
        part.unlink(missing_ok=True)
        raise TalInputError(f"backbone {backbone}: {published.url} downloaded with sha256 {digest.hexdigest()[:16]}, "
                            f"not the published {expected[:16]}; the file is corrupt or was replaced: try again, "
                            f"or {hint}")
    os.replace(part, path)
