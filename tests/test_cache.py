"""The HDF5 feature cache: round trips, timing, odd video ids, broken files, the resumable writer."""
from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest

from tal.errors import TalInputError
from tal.features.cache import (
    FeatureCacheWriter,
    FeatureMeta,
    feature_times,
    h5_name,
    open_feature_cache,
    part_stem,
    video_id,
    write_feature_cache,
)
from tal.features.cache_report import inspect_feature_cache

META = {"fps": 30.0, "stride": 4, "window": 16, "duration": 2.0}
ATTRS = {"backbone": "handcrafted", "weights": "none", "fps": "native", "window": 16, "stride": 4, "decoder": "pyav"}


def _items(n: int = 3, dim: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(f"vid{i}", rng.standard_normal((4 + i, dim)).astype(np.float32), dict(META, duration=1.0 + i))
            for i in range(n)]


def test_round_trip_arrays_meta_and_attrs(tmp_path):
    path = tmp_path / "f.h5"
    items = _items()
    write_feature_cache(path, items, ATTRS)
    with open_feature_cache(path) as cache:
        assert cache.videos == ["vid0", "vid1", "vid2"]
        assert len(cache) == 3 and "vid1" in cache and "nope" not in cache
        assert cache.feature_dim == 5
        assert cache.attrs["backbone"] == "handcrafted" and cache.attrs["stride"] == 4
        assert cache.attrs["tal_version"] and cache.attrs["created"] and cache.attrs["feature_dim"] == 5
        for vid, arr, meta in items:
            got = cache.features(vid)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, arr)
            assert cache.meta(vid) == FeatureMeta(30.0, 4, 16, meta["duration"], arr.shape[0], 5)
    assert not path.with_name("f.h5.tmp").exists()


def test_float16_is_kept_on_disk_and_read_as_float32(tmp_path):
    path = tmp_path / "f.h5"
    arr = np.arange(12, dtype=np.float16).reshape(4, 3)
    write_feature_cache(path, [("a", arr, META)], {})
    with h5py.File(path) as f:
        assert f["a"].dtype == np.float16
    with open_feature_cache(path) as cache:
        np.testing.assert_array_equal(cache.features("a"), arr.astype(np.float32))
        assert cache.features("a").dtype == np.float32


def test_feature_times_by_hand():
    meta = FeatureMeta(fps=30.0, stride=4, window=16, duration=1.0, num_features=3, dim=2)
    # centres (i*4 + 8) / 30 for i = 0, 1, 2
    np.testing.assert_allclose(feature_times(meta), [8 / 30, 12 / 30, 16 / 30])
    meta = FeatureMeta(fps=2.0, stride=1, window=1, duration=1.0, num_features=2, dim=2)
    np.testing.assert_allclose(feature_times(meta), [0.25, 0.75])


@pytest.mark.parametrize("vid", ["a/b", "dir/sub/x.mp4", "50%", "a%2Fb", ".", "..", "sp ace", "ümlaut",
                                 "tab\tid", "nul\x00id", "/lead", "trail/"])
def test_odd_video_ids_round_trip(tmp_path, vid):
    assert video_id(h5_name(vid)) == vid
    assert "/" not in h5_name(vid) and h5_name(vid) not in (".", "..")
    stem = part_stem(vid)
    assert "/" not in stem and len(stem) <= 100 and not stem.startswith(".")
    path = tmp_path / "f.h5"
    arr = np.ones((2, 3), np.float32)
    write_feature_cache(path, [(vid, arr, META), ("plain", arr * 2, META)], {})
    with open_feature_cache(path) as cache:
        assert sorted(cache.videos) == sorted([vid, "plain"])
        np.testing.assert_array_equal(cache.features(vid), arr)
    with h5py.File(path) as f:
        assert "plain" in f  # ids without special characters are their own dataset names
        assert list(f.keys()).count(h5_name(vid)) == 1


def test_escaping_is_explicit():
    assert h5_name("a/b") == "a%2Fb"
    assert h5_name("50%") == "50%25"
    assert h5_name("..") == "%2E%2E"
    assert h5_name("v_abc.mp4") == "v_abc.mp4"
    assert part_stem("a/b") != part_stem("a_b")


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(TalInputError, match=r"none\.h5: no such file"):
        open_feature_cache(tmp_path / "none.h5")
    text = tmp_path / "notes.h5"
    text.write_text("hello\n")
    with pytest.raises(TalInputError, match=r"notes\.h5: not an HDF5 file"):
        open_feature_cache(text)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "f.h5"
    write_feature_cache(path, _items(3, dim=256), ATTRS)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(TalInputError, match="truncated or corrupt"):
        with open_feature_cache(path) as cache:
            for vid in cache.videos:
                cache.features(vid)


def test_dataset_without_attributes_is_foreign(tmp_path):
    path = tmp_path / "tacos.hdf5"
    with h5py.File(path, "w") as f:
        f["s13-d21.avi"] = np.zeros((5, 4), np.float32)
    with pytest.raises(TalInputError, match=r"has no fps, stride, window, duration attribute\(s\).*2dtan-hdf5"):
        open_feature_cache(path)


def test_activitynet_c3d_layout_is_recognised(tmp_path):
    path = tmp_path / "c3d.hdf5"
    with h5py.File(path, "w") as f:
        f["v_abc/c3d_features"] = np.zeros((5, 4), np.float32)
    with pytest.raises(TalInputError, match="activitynet-c3d"):
        open_feature_cache(path)


def test_nan_and_inf_name_the_video(tmp_path):
    path = tmp_path / "f.h5"
    bad = np.zeros((4, 2), np.float32)
    bad[2, 1] = np.nan
    bad[3, 0] = np.inf
    write_feature_cache(path, [("good", np.zeros((4, 2), np.float32), META), ("bad one", bad, META)], {})
    with open_feature_cache(path) as cache:
        cache.features("good")
        with pytest.raises(TalInputError, match=r"video 'bad one': 2 NaN/Inf values in 2 of 4 features "
                                                r"\(first at feature 2\)"):
            cache.features("bad one")
        with pytest.raises(TalInputError, match=r"no features for video 'missing' \(the cache holds 2 videos"):
            cache.features("missing")


def test_writer_rejects_bad_items(tmp_path):
    with pytest.raises(TalInputError, match=r"must be \[T, D\]"):
        write_feature_cache(tmp_path / "f.h5", [("a", np.zeros(3), META)], {})
    with pytest.raises(TalInputError, match="missing duration"):
        write_feature_cache(tmp_path / "f.h5", [("a", np.zeros((3, 2)), {"fps": 1, "stride": 1, "window": 1})], {})
    with pytest.raises(TalInputError, match="feature dimension 3, others have 2"):
        write_feature_cache(tmp_path / "f.h5", [("a", np.zeros((3, 2)), META), ("b", np.zeros((3, 3)), META)], {})
    with pytest.raises(TalInputError, match="appears twice"):
        write_feature_cache(tmp_path / "f.h5", [("a", np.zeros((3, 2)), META), ("a", np.zeros((3, 2)), META)], {})
    assert not (tmp_path / "f.h5").exists()


def test_cache_pickles_and_reopens(tmp_path):
    path = tmp_path / "f.h5"
    write_feature_cache(path, _items(), ATTRS)
    with open_feature_cache(path) as cache:
        clone = pickle.loads(pickle.dumps(cache))
        np.testing.assert_array_equal(clone.features("vid2"), cache.features("vid2"))
        clone.close()


def _dump(path):
    """{video: (bytes of the dataset, attrs)} of a cache file."""
    with h5py.File(path) as f:
        return {name: (f[name][()].tobytes(), dict(f[name].attrs)) for name in f}


def test_writer_parts_finalize_and_resume(tmp_path):
    out = tmp_path / "out.h5"
    items = _items(4)
    writer = FeatureCacheWriter(out, ATTRS)
    for vid, arr, meta in items[:2]:
        writer.add(vid, arr, meta)
    assert writer.done() == {"vid0", "vid1"}
    assert not out.exists()
    assert len(list(writer.parts.glob("*.npy"))) == 2
    # a half-written part (tmp file of a killed process) is not a finished video
    (writer.parts / "vid2-deadbeef.npy.tmp123").write_bytes(b"partial")
    # a new writer (the re-run after a kill) sees the parts
    writer = FeatureCacheWriter(out, ATTRS)
    assert writer.done() == {"vid0", "vid1"}
    writer.add(*items[2])
    assert writer.finalize() == 3
    assert not writer.parts.exists()
    # a later run adds to the existing file
    writer = FeatureCacheWriter(out, ATTRS)
    assert writer.done() == {"vid0", "vid1", "vid2"}
    writer.add(*items[3])
    writer.finalize()
    one_shot = tmp_path / "one.h5"
    write_feature_cache(one_shot, items, ATTRS)
    assert _dump(out) == _dump(one_shot)
    with open_feature_cache(out) as cache:
        assert cache.attrs["backbone"] == "handcrafted" and cache.attrs["updated"] >= cache.attrs["created"]


def test_writer_settings_mismatch(tmp_path):
    out = tmp_path / "out.h5"
    writer = FeatureCacheWriter(out, ATTRS)
    writer.add(*_items(1)[0])
    with pytest.raises(TalInputError, match=r"out\.h5\.parts holds videos of an unfinished run with other settings "
                                            r"\(stride: 4 \(existing\) vs 8 \(now\)\)"):
        FeatureCacheWriter(out, dict(ATTRS, stride=8))
    writer.finalize()
    with pytest.raises(TalInputError, match=r"out\.h5 was made with other settings \(backbone: 'handcrafted' "
                                            r"\(existing\) vs 'r3d_18' \(now\)\)"):
        FeatureCacheWriter(out, dict(ATTRS, backbone="r3d_18"))
    FeatureCacheWriter(out, dict(ATTRS, created="whenever"))  # non-identity attributes may differ


def test_writer_finalize_after_kill_between_rename_and_cleanup(tmp_path):
    out = tmp_path / "out.h5"
    items = _items(2)
    writer = FeatureCacheWriter(out, ATTRS)
    for item in items:
        writer.add(*item)
    parts = sorted(p.read_bytes() for p in writer.parts.iterdir())
    writer.finalize()
    # simulate the parts surviving a kill right after the rename
    writer.parts.mkdir()
    (writer.parts / "settings.json").write_text(json.dumps({k: ATTRS[k] for k in ATTRS}, sort_keys=True))
    writer = FeatureCacheWriter(out, ATTRS)
    for item in items:
        writer.add(*item)
    assert sorted(p.read_bytes() for p in writer.parts.iterdir()) == parts
    assert writer.finalize() == 2


def test_inspect_reports_problems(tmp_path):
    path = tmp_path / "f.h5"
    nan = np.zeros((3, 2), np.float32)
    nan[0, 0] = np.nan
    write_feature_cache(path, [("ok", np.zeros((3, 2), np.float32), META), ("nan", nan, META),
                               ("empty", np.zeros((0, 2), np.float32), META)], ATTRS)
    with h5py.File(path, "a") as f:
        f["noattrs"] = np.zeros((2, 2), np.float32)
    report = inspect_feature_cache(path)
    assert report["num_videos"] == 4 and report["feature_dims"] == [2] and report["total_features"] == 8
    assert report["nonfinite_videos"] == ["nan"] and report["empty_videos"] == ["empty"]
    assert report["videos_missing_attrs"] == ["noattrs"] and report["missing_file_attrs"] == []
    assert report["fps"] == [30.0] and report["stride"] == [4] and report["window"] == [16]
    assert report["problems"] == ["1 videos lack fps/stride/window/duration attributes",
                                  "1 videos have zero features", "1 videos contain NaN/Inf"]


def test_writer_parts_with_odd_ids(tmp_path):
    out = tmp_path / "out.h5"
    ids = ["cam/1", "cam_1", "..", "50%"]
    writer = FeatureCacheWriter(out, ATTRS)
    for i, vid in enumerate(ids):
        writer.add(vid, np.full((2, 3), i, np.float32), META)
    assert writer.done() == set(ids) and len(list(writer.parts.glob("*.npy"))) == 4
    writer.finalize()
    with open_feature_cache(out) as cache:
        assert sorted(cache.videos) == sorted(ids)
        for i, vid in enumerate(ids):
            np.testing.assert_array_equal(cache.features(vid), np.full((2, 3), i, np.float32))


def test_finalize_without_new_parts_keeps_the_file(tmp_path):
    out = tmp_path / "out.h5"
    writer = FeatureCacheWriter(out, ATTRS)
    writer.add(*_items(1)[0])
    writer.finalize()
    before = out.read_bytes()
    assert FeatureCacheWriter(out, ATTRS).finalize() == 1
    assert out.read_bytes() == before
