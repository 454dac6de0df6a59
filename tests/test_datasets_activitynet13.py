"""ActivityNet-1.3 in BSN/BMN's layout: counts, the derived official-style file, errors."""
import csv
import json

import numpy as np
import pytest

from tal.datasets.activitynet import activitynet_dict, read_activitynet_json, write_activitynet_json
from tal.datasets.activitynet13 import read_bsn_annotations
from tal.datasets.annotations import load_detection_annotations
from tal.errors import TalInputError


@pytest.fixture(scope="module")
def anet(shared_data):
    d = shared_data / "activitynet13"
    return load_detection_annotations(d / "anet_anno_action.json", "activitynet-bsn",
                                      video_info=d / "video_info_new.csv", strip_prefix="v_")


@pytest.fixture(scope="module")
def derived(shared_data):
    with open(shared_data / "activitynet13" / "activity_net.v1-3.bsn_derived.json") as f:
        return json.load(f)


def test_bsn_counts_per_subset(anet):
    assert len(anet.videos) == 19228
    counts = {s: (len(anet.subset(s).videos), anet.subset(s).num_instances) for s in anet.subsets()}
    assert counts == {"training": (9649, 14859), "validation": (4728, 7293), "testing": (4851, 0)}


def test_bsn_classes_are_the_200_of_action_name_csv(anet, shared_data):
    with open(shared_data / "activitynet13" / "action_name.csv") as f:
        names = [row["action"] for row in csv.DictReader(f)]
    assert len(names) == 200
    assert anet.classes == sorted(names)


def test_bsn_conversion_equals_the_derived_file(anet, derived):
    database = derived["database"]
    assert list(anet.videos) == list(database)  # same ids (no "v_"), same order (the CSV's)
    # video by video: subset, duration and every segment and label, exactly
    assert activitynet_dict(anet)["database"] == database
    a, entry = anet.videos["--1DO2V4K74"], database["--1DO2V4K74"]
    assert (a.subset, a.duration, a.segments.tolist()) == ("validation", 211.53, [entry["annotations"][0]["segment"]])


def test_zero_length_validation_segments_are_kept(anet):
    val = anet.subset("validation")
    zero = [(v, tuple(s)) for v, a in val.videos.items() for s in a.segments if s[0] == s[1]]
    assert len(zero) == 3


def test_ids_keep_v_prefix_unless_stripped(tmp_path):
    anno, info = _write_bsn(tmp_path, {"v_a": {"duration_second": 82.730000000000004, "duration_frame": 2067,
                                               "annotations": [{"segment": [6.1, 77.7], "label": "Ballet"}]}})
    raw = read_bsn_annotations(anno, info)
    assert list(raw.videos) == ["v_a"] and raw.videos["v_a"].duration == 82.73 and raw.videos["v_a"].extra == {}
    stripped = load_detection_annotations(anno, "activitynet-bsn", video_info=info, strip_prefix="v_")
    assert list(stripped.videos) == ["a"] and stripped.videos["a"].labels == ["Ballet"]


def test_round_trip_through_the_contract_json(anet, tmp_path):
    anet = anet.subset("validation")
    out = tmp_path / "anet.json"
    write_activitynet_json(anet, out)
    back = read_activitynet_json(out)
    assert list(back.videos) == list(anet.videos)
    assert back.classes == anet.classes
    for vid, a in anet.videos.items():
        b = back.videos[vid]
        assert (b.subset, b.duration, b.labels) == (a.subset, a.duration, a.labels)
        np.testing.assert_array_equal(b.segments, a.segments)


def _write_bsn(tmp_path, entries, rows="video,subset\nv_a,training\n"):
    (tmp_path / "anno.json").write_text(json.dumps(entries))
    (tmp_path / "info.csv").write_text(rows)
    return tmp_path / "anno.json", tmp_path / "info.csv"


def test_error_video_missing_from_csv(tmp_path):
    anno, info = _write_bsn(tmp_path, {"v_a": {"duration_second": 5, "annotations": []},
                                       "v_b": {"duration_second": 5, "annotations": []}})
    with pytest.raises(TalInputError, match=r"anno\.json: 1 video\(s\) have no row in .*info\.csv \(first: 'v_b'\)"):
        read_bsn_annotations(anno, info)


def test_error_end_before_start_names_video_and_annotation(tmp_path):
    anno, info = _write_bsn(tmp_path, {"v_a": {"duration_second": 5,
                                               "annotations": [{"segment": [3, 2], "label": "x"}]}})
    with pytest.raises(TalInputError, match=r"video 'v_a', annotation 0: segment end 2.0 is before its start 3.0"):
        read_bsn_annotations(anno, info)


def test_error_nan_segment(tmp_path):
    (tmp_path / "anno.json").write_text('{"v_a": {"duration_second": 5, "annotations": [{"segment": [NaN, 2], '
                                        '"label": "x"}]}}')
    (tmp_path / "info.csv").write_text("video,subset\nv_a,training\n")
    with pytest.raises(TalInputError, match=r"video 'v_a', annotation 0: segment \[nan, 2\] is not finite"):
        read_bsn_annotations(tmp_path / "anno.json", tmp_path / "info.csv")


def test_error_missing_subset_column_and_missing_csv(tmp_path):
    anno, info = _write_bsn(tmp_path, {"v_a": {"duration_second": 5, "annotations": []}}, rows="video,seconds\nv_a,5\n")
    with pytest.raises(TalInputError, match=r"info\.csv: missing column\(s\) 'subset' \(header: video,seconds\)"):
        read_bsn_annotations(anno, info)
    with pytest.raises(TalInputError, match=r"need exactly one video_info_new\.csv .* got 0"):
        read_bsn_annotations(anno)


def test_error_missing_duration_and_malformed_json(tmp_path):
    anno, info = _write_bsn(tmp_path, {"v_a": {"annotations": []}})
    with pytest.raises(TalInputError, match=r"anno\.json: video 'v_a': missing key 'duration_second'"):
        read_bsn_annotations(anno, info)
    anno.write_text('{"v_a": {"duration_second": 5,,}}')
    with pytest.raises(TalInputError, match=r"anno\.json: malformed JSON at line 1, column 31: Expecting property"):
        read_bsn_annotations(anno, info)
