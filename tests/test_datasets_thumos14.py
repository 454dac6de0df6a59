"""THUMOS14: the true counts of every source, and their agreement on every shared video."""
import numpy as np
import pytest

from tal.datasets.activitynet import read_activitynet_json
from tal.datasets.thumos14 import read_thumos14_csv, read_thumos14_txt, read_thumos14_video_info
from tal.datasets.types import LoadReport
from tal.errors import TalInputError


@pytest.fixture(scope="module")
def th(shared_data):
    return shared_data / "thumos14"


@pytest.fixture(scope="module")
def actionformer(th):
    return read_activitynet_json(th / "thumos14_actionformer.json")


@pytest.fixture(scope="module")
def info_csvs(th):
    return [th / "val_video_info.csv", th / "test_video_info.csv"]


@pytest.fixture(scope="module")
def txt(th, info_csvs):
    report = LoadReport()
    return read_thumos14_txt(th / "official_txt", video_info=info_csvs, report=report), report


@pytest.fixture(scope="module")
def txt_ambiguous(th):
    return read_thumos14_txt(th / "official_txt", keep_ambiguous=True)


@pytest.fixture(scope="module")
def csv_default(th):
    return read_thumos14_csv([th / "val_Annotation.csv", th / "test_Annotation.csv"])


@pytest.fixture(scope="module")
def csv_ambiguous(th):
    return read_thumos14_csv([th / "val_Annotation.csv", th / "test_Annotation.csv"], keep_ambiguous=True)


def counts(annotations):
    return {s: (len(annotations.subset(s).videos), annotations.subset(s).num_instances) for s in annotations.subsets()}


def instances(video_annotation):
    return sorted(zip(video_annotation.labels, video_annotation.segments[:, 0], video_annotation.segments[:, 1]))


def assert_same_instances(a, b, videos):
    for vid in videos:
        x, y = instances(a.videos[vid]), instances(b.videos[vid])
        assert [i[0] for i in x] == [i[0] for i in y], vid
        np.testing.assert_allclose([i[1:] for i in x], [i[1:] for i in y], rtol=0, atol=1e-6, err_msg=vid)


def test_actionformer_json_counts_and_fps(actionformer):
    assert counts(actionformer) == {"Test": (212, 3358), "Validation": (200, 3007)}
    assert len(actionformer.classes) == 20
    assert actionformer.videos["video_test_0000004"].extra == {"fps": 30.0}
    assert actionformer.videos["video_test_0000004"].duration == 33.83
    assert "video_test_0001292" not in actionformer.videos and "video_test_0000270" in actionformer.videos


def test_official_txt_counts(txt, txt_ambiguous):
    annotations, report = txt
    assert counts(annotations) == {"Test": (212, 3358), "Validation": (200, 3007)}
    assert report.dropped == {"Ambiguous instances (keep them with keep_ambiguous / --keep-ambiguous)": 99 + 89,
                              "video(s) with only Ambiguous instances": 1}
    assert counts(txt_ambiguous) == {"Test": (213, 3457), "Validation": (200, 3096)}
    assert txt_ambiguous.classes == sorted(annotations.classes + ["Ambiguous"])


def test_video_test_0001292_has_only_ambiguous_segments(txt, txt_ambiguous):
    assert "video_test_0001292" not in txt[0].videos
    only = txt_ambiguous.videos["video_test_0001292"]
    assert set(only.labels) == {"Ambiguous"} and len(only.labels) > 0


def test_gtad_csv_counts(csv_default, csv_ambiguous):
    assert counts(csv_default) == {"Test": (212, 3358), "Validation": (200, 3007)}
    assert counts(csv_ambiguous) == {"Test": (213, 3457), "Validation": (200, 3096)}


def test_txt_and_csv_agree_with_actionformer_on_every_video(txt, csv_default, actionformer):
    annotations = txt[0]
    assert list(annotations.videos) == sorted(actionformer.videos)
    assert list(csv_default.videos) == sorted(actionformer.videos)
    assert annotations.classes == csv_default.classes == actionformer.classes
    assert_same_instances(annotations, actionformer, actionformer.videos)
    assert_same_instances(csv_default, actionformer, actionformer.videos)


def test_txt_and_csv_agree_with_ambiguous_kept(txt_ambiguous, csv_ambiguous):
    assert list(txt_ambiguous.videos) == list(csv_ambiguous.videos)
    assert_same_instances(txt_ambiguous, csv_ambiguous, txt_ambiguous.videos)


def test_gtad_thumos_gt_json_counts_and_agreement(th, actionformer):
    gt = read_activitynet_json(th / "thumos_gt.json")  # string segments, no durations, subsets train/test
    assert counts(gt) == {"test": (210, 3311), "train": (200, 3007)}
    assert set(actionformer.videos) - set(gt.videos) == {"video_test_0000270", "video_test_0001496"}
    assert all(a.duration is None for a in gt.videos.values())
    assert_same_instances(gt, actionformer, gt.videos)


def test_durations_from_video_info_csvs(txt, th):
    annotations = txt[0]
    a = annotations.videos["video_test_0000004"]  # count 1012 frames at 30 fps
    assert a.duration == pytest.approx(1012 / 30, abs=1e-12) and a.extra == {"fps": 30.0}
    assert annotations.videos["video_validation_0000051"].duration == pytest.approx(5091 / 30, abs=1e-12)
    info = read_thumos14_video_info([th / "test_video_info.csv", th / "thumos14_test_groundtruth.csv"])
    assert info["video_test_0001292"] == (232.5, 30.0)  # only in the ground-truth CSV
    assert info["video_test_0000004"] == (1012 / 30, 30.0)  # first file wins


def test_video_info_durations_differ_from_actionformer_by_about_a_tenth(txt, actionformer):
    diff = np.array([actionformer.videos[v].duration - a.duration for v, a in txt[0].videos.items()])
    assert diff.shape == (412,) and 0.06 < diff.min() and diff.max() < 0.13


def test_without_video_info_durations_are_none(txt_ambiguous):
    assert all(a.duration is None and a.extra == {} for a in txt_ambiguous.videos.values())


def test_missing_video_info_row_is_an_error(th, info_csvs):
    with pytest.raises(TalInputError, match=r"Ambiguous_test\.txt:\d+: video 'video_test_0001292' has no row in "
                                             r".*test_video_info\.csv; add a CSV that lists it"):
        read_thumos14_txt(th / "official_txt", video_info=info_csvs, keep_ambiguous=True)


def test_txt_errors(tmp_path):
    bad = tmp_path / "Diving_test.txt"
    bad.write_text("video_test_0000001  1.0 2.0\nvideo_test_0000001  3.0\n")
    with pytest.raises(TalInputError, match=r"Diving_test\.txt:2: expected 'VIDEO START END' \(seconds\)"):
        read_thumos14_txt(bad)
    bad.write_text("video_test_0000001  5.0 2.0\n")
    with pytest.raises(TalInputError, match=r"Diving_test\.txt:1: segment end 2.0 is before its start 5.0"):
        read_thumos14_txt(bad)
    bad.write_text("video_test_0000001  nan 2.0\n")
    with pytest.raises(TalInputError, match=r"Diving_test\.txt:1: segment \['nan', '2.0'\] is not finite"):
        read_thumos14_txt(bad)
    bad.write_text("my_video  1.0 2.0\n")
    with pytest.raises(TalInputError, match=r"Diving_test\.txt:1: video 'my_video' is not a THUMOS14 id"):
        read_thumos14_txt(bad)
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(TalInputError, match=r"notes\.txt: expected a THUMOS14 annotation file named <Class>_val\.txt"):
        read_thumos14_txt(other)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TalInputError, match=r"empty: no THUMOS14 annotation files"):
        read_thumos14_txt(empty)


def test_txt_zero_length_segment_is_kept(tmp_path):
    f = tmp_path / "Diving_val.txt"
    f.write_text("video_validation_0000001  2.0 2.0\nvideo_validation_0000001  0.5 1.0\n")
    a = read_thumos14_txt(f).videos["video_validation_0000001"]
    assert a.subset == "Validation"
    assert a.segments.tolist() == [[0.5, 1.0], [2.0, 2.0]]  # sorted by start


def test_csv_errors(tmp_path):
    f = tmp_path / "test_Annotation.csv"
    f.write_text("video,type,start\nvideo_test_0000001,Diving,1.0\n")
    with pytest.raises(TalInputError, match=r"_Annotation\.csv: missing column\(s\) 'end' \(header: video,type,start\)"):
        read_thumos14_csv(f)
    f.write_text("video,type,type_idx,start,end\nvideo_test_0000001,Diving,26,1.0\n")
    with pytest.raises(TalInputError, match=r"_Annotation\.csv:2: expected 5 comma-separated fields like the header, "
                                             r"got 4"):
        read_thumos14_csv(f)
    f.write_text("video,type,type_idx,start,end\nvideo_test_0000001,Diving,26,1.0,abc\n")
    with pytest.raises(TalInputError, match=r"test_Annotation\.csv:2: segment must hold two numbers"):
        read_thumos14_csv(f)


def test_video_info_errors(tmp_path):
    f = tmp_path / "info.csv"
    f.write_text("video,duration\nvideo_test_0000001,5\n")
    with pytest.raises(TalInputError, match=r"info\.csv: not a THUMOS14 video-info CSV"):
        read_thumos14_video_info(f)
    f.write_text("video,fps,count\nvideo_test_0000001,0,100\n")
    with pytest.raises(TalInputError, match=r"info\.csv:2: fps '0' is not a positive number"):
        read_thumos14_video_info(f)
