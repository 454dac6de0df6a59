"""`tal import-features` on small sources in each published layout, and `tal features info`."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from tal.cli.main import main
from tal.errors import TalInputError
from tal.features.cache import open_feature_cache, write_feature_cache
from tal.features.importers import import_features, read_durations

RNG = np.random.default_rng(0)


def _arr(t: int, d: int = 4) -> np.ndarray:
    return RNG.standard_normal((t, d)).astype(np.float32)


def test_npy_dir_mixed_files_and_computed_durations(tmp_path):
    src = tmp_path / "i3d_features"
    src.mkdir()
    a, b, c = _arr(5), _arr(3), _arr(7)
    np.save(src / "video_test_0000004.npy", a)  # ActionFormer: one [T, D] .npy per video
    np.savez(src / "b.npz", feats=b)
    torch.save(torch.from_numpy(c), src / "c.pt")
    (src / "README.txt").write_text("not a feature file")
    out = tmp_path / "out.h5"
    summary = import_features("npy-dir", src, out, fps=30, stride=4, window=16)
    assert summary.num_videos == 3 and summary.feature_dim == 4
    with open_feature_cache(out) as cache:
        assert cache.videos == ["b", "c", "video_test_0000004"]
        np.testing.assert_array_equal(cache.features("video_test_0000004"), a)
        np.testing.assert_array_equal(cache.features("b"), b)
        np.testing.assert_array_equal(cache.features("c"), c)
        meta = cache.meta("video_test_0000004")
        assert (meta.fps, meta.stride, meta.window, meta.num_features) == (30.0, 4, 16, 5)
        assert meta.duration == pytest.approx((4 * 4 + 16) / 30)  # ((T-1)*stride + window) / fps
        assert cache.attrs["duration_source"] == "computed as ((T-1)*stride + window) / fps"
        assert cache.attrs["import_format"] == "npy-dir" and cache.attrs["backbone"] == "unknown"


def test_npz_keys_pt_dicts_and_squeeze(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "two.npz", rgb=_arr(3), flow=_arr(3))
    with pytest.raises(TalInputError, match=r"two\.npz: holds several arrays \['flow', 'rgb'\]; choose one with --key"):
        import_features("npy-dir", src, tmp_path / "o.h5", fps=30, stride=4, window=16)
    rgb = np.load(src / "two.npz")["rgb"]
    torch.save({"rgb": torch.from_numpy(_arr(2)), "other": torch.zeros(1)}, src / "dict.pt")
    np.save(src / "charades.npy", _arr(6)[:, None, None, :])  # [T, 1, 1, D] as some I3D releases
    import_features("npy-dir", src, tmp_path / "o.h5", fps=24, stride=4, window=16, key="rgb")
    with open_feature_cache(tmp_path / "o.h5") as cache:
        np.testing.assert_array_equal(cache.features("two"), rgb)
        assert cache.meta("dict").num_features == 2 and cache.meta("charades").num_features == 6


def test_transposed_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a, b = _arr(5, 8), _arr(9, 8)
    np.save(src / "a.npy", a.T)  # [D, T]
    np.save(src / "b.npy", b.T)
    with pytest.raises(TalInputError, match=r"'b' has shape \(8, 9\), earlier videos have dimension 5; "
                                            r"if the files store \[D, T\], pass --transpose"):
        import_features("npy-dir", src, tmp_path / "o.h5", fps=30, stride=4, window=16)
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.tmp").exists()
    import_features("npy-dir", src, tmp_path / "o.h5", fps=30, stride=4, window=16, transpose=True)
    with open_feature_cache(tmp_path / "o.h5") as cache:
        np.testing.assert_array_equal(cache.features("b"), b)


def test_2dtan_hdf5_with_durations_csv(tmp_path):
    src = tmp_path / "tall_c3d_features.hdf5"
    feats = {"s13-d21.avi": _arr(10, 6), "s22-d55.avi": _arr(4, 6)}
    with h5py.File(src, "w") as f:  # 2D-TAN: vid -> [T, D] at the root
        for vid, arr in feats.items():
            f[vid] = arr
    durations = tmp_path / "durations.csv"
    durations.write_text("video,duration\ns13-d21.avi,12.5\ns22-d55.avi,4\n")
    import_features("2dtan-hdf5", src, tmp_path / "o.h5", fps=29.4, stride=16, window=16, durations=durations)
    with open_feature_cache(tmp_path / "o.h5") as cache:
        for vid, arr in feats.items():
            np.testing.assert_array_equal(cache.features(vid), arr)
        assert cache.meta("s13-d21.avi").duration == 12.5 and cache.meta("s22-d55.avi").fps == 29.4
        assert cache.attrs["duration_source"] == "from durations.csv"


def test_activitynet_c3d_per_video_fps_from_durations(tmp_path):
    src = tmp_path / "sub_activitynet_v1-3.c3d.hdf5"
    with h5py.File(src, "w") as f:
        f["v_abc/c3d_features"] = _arr(4, 5)  # group per video, C3D every 8 frames over 16
        f["v_xyz/c3d_features"] = _arr(11, 5)
    gt = tmp_path / "activity_net.v1-3.min.json"
    gt.write_text(json.dumps({"database": {"abc": {"duration": 3.2, "subset": "validation"},
                                           "xyz": {"duration": 10.0, "subset": "training"}}}))
    with pytest.raises(TalInputError, match=r"no duration for 2 videos \(e.g. 'v_abc', 'v_xyz'\); fix the ids "
                                            r"\(e.g. --strip-prefix v_\)"):
        import_features("activitynet-c3d", src, tmp_path / "o.h5", fps="durations", stride=None, window=None,
                        durations=gt)
    import_features("activitynet-c3d", src, tmp_path / "o.h5", fps="durations", stride=None, window=None,
                    durations=gt, strip_prefix="v_")
    with open_feature_cache(tmp_path / "o.h5") as cache:
        assert cache.videos == ["abc", "xyz"]
        m = cache.meta("abc")
        # ((T-1)*stride + window) / duration = (3*8 + 16) / 3.2
        assert (m.stride, m.window, m.fps, m.duration) == (8, 16, 12.5, 3.2)
        assert cache.meta("xyz").fps == pytest.approx((10 * 8 + 16) / 10.0)


def test_read_durations_formats(tmp_path):
    (tmp_path / "a.csv").write_text("v1,3.5\nv2,10\n")
    (tmp_path / "b.csv").write_text("id,seconds,duration\nv1,9,3.5\n")
    (tmp_path / "c.json").write_text(json.dumps({"v_1": {"duration": 82.7, "timestamps": []}}))
    assert read_durations(tmp_path / "a.csv") == {"v1": 3.5, "v2": 10.0}
    assert read_durations(tmp_path / "b.csv") == {"v1": 3.5}
    assert read_durations(tmp_path / "c.json") == {"v_1": 82.7}
    (tmp_path / "d.csv").write_text("v1,-2\n")
    with pytest.raises(TalInputError, match=r"d\.csv: video 'v1': duration '-2' must be a positive number"):
        read_durations(tmp_path / "d.csv")


def test_cli_formats_match_the_importers():
    from tal.cli import import_features as cli
    from tal.features import importers

    assert cli.FORMATS == importers.FORMATS


def test_cli_import_usage_errors(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", _arr(3))
    assert main(["import-features", "--format", "npy-dir", str(src), "--out", str(tmp_path / "o.h5")]) == 2
    assert "--fps, --stride and --window are required" in capsys.readouterr().err
    assert main(["import-features", "--format", "npy-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o.h5"),
                 "--fps", "30", "--stride", "4", "--window", "16"]) == 2
    assert "nope: not a folder" in capsys.readouterr().err
    assert main(["import-features", "--format", "npy-dir", str(src), "--out", str(tmp_path / "o.h5"),
                 "--fps", "30", "--stride", "4", "--window", "16", "--backbone", "i3d"]) == 0
    assert "o.h5: 1 video, dimension 4" in capsys.readouterr().err


def test_cli_features_info_text_and_json(tmp_path, capsys):
    path = tmp_path / "f.h5"
    meta = {"fps": 30.0, "stride": 4, "window": 16, "duration": 2.0}
    write_feature_cache(path, [("a", _arr(3), meta), ("b", _arr(5), meta)],
                        {"backbone": "r2plus1d_18", "weights": "R2Plus1D_18_Weights.KINETICS400_V1", "fps": 30.0,
                         "stride": 4, "window": 16})
    assert main(["features", "info", str(path)]) == 0
    text = capsys.readouterr().out
    for line in ["videos          2", "feature dim     4 (float32)", "total features  8", "stride          4 frames",
                 "backbone        r2plus1d_18", "weights         R2Plus1D_18_Weights.KINETICS400_V1",
                 "problems        none"]:
        assert line in text
    assert main(["features", "info", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_videos"] == 2 and report["total_features"] == 8 and report["feature_dims"] == [4]
    assert report["file_size_bytes"] == path.stat().st_size and report["problems"] == []


def test_cli_features_info_problems(tmp_path, capsys):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.array([[np.nan, 1.0]], np.float32)
        f["empty"] = np.zeros((0, 2), np.float32)
    assert main(["features", "info", str(path)]) == 1
    text = capsys.readouterr().out
    assert "backbone        (not recorded)" in text
    assert "  - file attributes missing: backbone, tal_version" in text
    assert "  - 2 videos lack fps/stride/window/duration attributes: empty, x" in text
    assert "  - 1 videos have zero features: empty" in text
    assert "  - 1 videos contain NaN/Inf: x" in text
    (tmp_path / "t.h5").write_text("text")
    assert main(["features", "info", str(tmp_path / "t.h5")]) == 2
    assert "t.h5: not an HDF5 file" in capsys.readouterr().err


def test_per_video_fps_and_durations_from_the_thumos14_annotation_file(shared_data, tmp_path, capsys):
    # ActionFormer's thumos14.json records each video's rate; the official A2Net THUMOS14 config lists the
    # same test videos as 25 fps (video_test_0000950, ...) and 24 fps (video_test_0001207)
    info = shared_data / "thumos14/thumos14_actionformer.json"
    src = tmp_path / "i3d_features"
    src.mkdir()
    expected = {"video_test_0000004": (30.0, 33.83), "video_test_0000950": (25.0, 1315.39),
                "video_test_0001207": (24.0, 1103.7), "video_test_0000273": (29.97, 128.78)}
    for vid in expected:
        np.save(src / f"{vid}.npy", _arr(6))
    out = tmp_path / "thumos.h5"
    assert main(["import-features", "--format", "npy-dir", str(src), "--out", str(out), "--stride", "4",
                 "--window", "16", "--video-info", str(info)]) == 0
    with open_feature_cache(out) as cache:
        got = {vid: (cache.meta(vid).fps, cache.meta(vid).duration) for vid in cache.videos}
    assert got == expected
    # --fps as well is refused: the file already gives every video its rate
    assert main(["import-features", "--format", "npy-dir", str(src), "--out", str(tmp_path / "x.h5"), "--fps", "30",
                 "--stride", "4", "--window", "16", "--video-info", str(info)]) == 2
    assert "drop --fps and --durations" in capsys.readouterr().err


def test_video_info_without_fps_is_a_one_line_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "v.npy", _arr(3))
    (tmp_path / "gt.json").write_text(json.dumps({"database": {"v": {"duration": 3.0, "annotations": []}}}))
    with pytest.raises(TalInputError, match=r"gt.json: video 'v' needs both 'fps' and 'duration'"):
        import_features("npy-dir", src, tmp_path / "o.h5", None, 4, 16, video_info=tmp_path / "gt.json")
