"""The single entry point: format registry, sniffing of every real file, common options, merging."""
import json

import pytest

from tal.datasets.activitynet import write_activitynet_json
from tal.datasets.annotations import (DETECTION_FORMATS, FORMATS, GROUNDING_FORMATS, load_detection_annotations,
                                      load_grounding_queries, sniff_format)
from tal.datasets.types import LoadReport
from tal.errors import TalInputError

REAL_FILES = {
    "activitynet13/anet_anno_action.json": "activitynet-bsn",
    "activitynet13/activity_net.v1-3.bsn_derived.json": "activitynet",
    "thumos14/thumos14_actionformer.json": "activitynet",
    "thumos14/thumos_gt.json": "activitynet",
    "thumos14/official_txt": "thumos14-txt",
    "thumos14/official_txt/annotation_val": "thumos14-txt",
    "thumos14/official_txt/annotation_test/Diving_test.txt": "thumos14-txt",
    "thumos14/val_Annotation.csv": "thumos14-csv",
    "thumos14/test_Annotation.csv": "thumos14-csv",
    "charades_sta/charades_sta_train.txt": "charades-sta",
    "charades_sta/charades_sta_test.txt": "charades-sta",
    "activitynet_captions/train.json": "anet-captions",
    "activitynet_captions/val.json": "anet-captions",
    "tacos/test.json": "tacos",
    "reference/charades_sta_test_predictions_seed1.jsonl": "jsonl",
}


@pytest.mark.parametrize("relpath, expected", REAL_FILES.items())
def test_sniff_every_real_file(shared_data, relpath, expected):
    assert sniff_format(shared_data / relpath) == expected


def test_registry_lists_each_format_once_by_task():
    assert DETECTION_FORMATS == ["activitynet", "thumos14-actionformer", "activitynet-bsn", "thumos14-txt",
                                 "thumos14-csv"]
    assert GROUNDING_FORMATS == ["jsonl", "charades-sta", "anet-captions", "tacos"]
    assert set(FORMATS) == set(DETECTION_FORMATS) | set(GROUNDING_FORMATS)


def test_sniff_refuses_predictions_and_unknown_files(shared_data, tmp_path):
    with pytest.raises(TalInputError, match=r"sample_detection_prediction\.json: a predictions file"):
        sniff_format(shared_data / "activitynet13" / "official_samples" / "sample_detection_prediction.json")
    with pytest.raises(TalInputError, match=r"video_info_new\.csv: cannot tell its annotation format; pass one of"):
        sniff_format(shared_data / "activitynet13" / "video_info_new.csv")
    (tmp_path / "x.json").write_text('{"a": [1, 2]}')
    with pytest.raises(TalInputError, match=r"x\.json: a JSON file of no known annotation layout"):
        sniff_format(tmp_path / "x.json")
    with pytest.raises(TalInputError, match=r"nothing\.json: no such file"):
        sniff_format(tmp_path / "nothing.json")


def test_auto_detection_with_subset_and_strip_prefix(shared_data):
    d = shared_data / "activitynet13"
    val = load_detection_annotations(d / "anet_anno_action.json", video_info=d / "video_info_new.csv",
                                     subset="validation", strip_prefix="v_")
    assert (len(val.videos), val.num_instances) == (4728, 7293)
    assert "--1DO2V4K74" in val.videos and len(val.classes) == 200


def test_unknown_subset_lists_the_present_ones(shared_data):
    with pytest.raises(TalInputError, match=r"thumos14_actionformer\.json: no video has subset 'test'; "
                                             r"subsets present: Test, Validation"):
        load_detection_annotations(shared_data / "thumos14" / "thumos14_actionformer.json", subset="test")


def test_many_file_formats_read_their_paths_together(shared_data):
    th = shared_data / "thumos14"
    report = LoadReport()
    both = load_detection_annotations([th / "official_txt/annotation_val", th / "official_txt/annotation_test"],
                                      "thumos14-txt", report=report)
    assert (len(both.videos), both.num_instances) == (412, 6365)
    assert report.dropped["video(s) with only Ambiguous instances"] == 1
    csvs = load_detection_annotations([th / "val_Annotation.csv", th / "test_Annotation.csv"], keep_ambiguous=True)
    assert (len(csvs.videos), csvs.num_instances) == (413, 6553)


def test_one_file_formats_merge_disjoint_files_and_refuse_overlap(shared_data, tmp_path):
    th = shared_data / "thumos14"
    test = load_detection_annotations(th / "thumos14_actionformer.json", subset="Test")
    val = load_detection_annotations(th / "thumos14_actionformer.json", subset="Validation")
    write_activitynet_json(test, tmp_path / "test.json")
    write_activitynet_json(val, tmp_path / "val.json")
    merged = load_detection_annotations([tmp_path / "val.json", tmp_path / "test.json"])
    assert (len(merged.videos), merged.num_instances) == (412, 6365)
    with pytest.raises(TalInputError, match=r"video 'video_test_0000004' is in both .*test\.json and .*test\.json"):
        load_detection_annotations([tmp_path / "test.json", tmp_path / "test.json"])


def test_task_and_option_mismatches_are_errors(shared_data, tmp_path):
    tacos = shared_data / "tacos" / "test.json"
    with pytest.raises(TalInputError, match=r"format 'tacos' holds grounding annotations, not detection; "
                                             r"use load_grounding_queries"):
        load_detection_annotations(tacos)
    with pytest.raises(TalInputError, match=r"format 'tacos' takes no option keep_ambiguous \(its options: none\)"):
        load_grounding_queries(tacos, keep_ambiguous=True)
    with pytest.raises(TalInputError, match=r"unknown annotation format 'thumos'"):
        load_detection_annotations(tacos, "thumos")


def test_grounding_entry_point_and_strip_prefix(shared_data, tmp_path):
    report = LoadReport()
    queries = load_grounding_queries(shared_data / "activitynet_captions" / "train.json", strip_prefix="v_",
                                     report=report)
    assert len(queries) == 37417 and queries[0].video == "QOlSCBRmfWY"
    assert sum(report.dropped.values()) == 4
    cs = shared_data / "charades_sta"
    queries = load_grounding_queries(cs / "charades_sta_test.txt", video_info=[cs / "Charades_v1_train.csv",
                                                                               cs / "Charades_v1_test.csv"])
    assert len(queries) == 3720
    (tmp_path / "q.jsonl").write_text(json.dumps({"video": "v", "duration": 3, "query": "q", "segment": [0, 1]}) + "\n")
    assert load_grounding_queries(tmp_path / "q.jsonl")[0].segment == (0.0, 1.0)
