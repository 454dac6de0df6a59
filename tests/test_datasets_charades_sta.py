"""Charades-STA: durations from the Charades CSV, 2D-TAN's clipping and dropping, errors."""
import json
import logging

import pytest

from tal.datasets.charades_sta import read_charades_sta
from tal.datasets.grounding import CLIPPED_END, DROPPED_EMPTY
from tal.datasets.types import GroundingQuery, LoadReport
from tal.errors import TalInputError


@pytest.fixture(scope="module")
def cs(shared_data):
    return shared_data / "charades_sta"


@pytest.fixture(scope="module")
def train(cs):
    report = LoadReport()
    return read_charades_sta(cs / "charades_sta_train.txt", cs / "Charades_v1_train.csv", report), report


@pytest.fixture(scope="module")
def test_split(cs):
    report = LoadReport()
    return read_charades_sta(cs / "charades_sta_test.txt", cs / "Charades_v1_test.csv", report), report


def test_train_counts_and_the_four_dropped_lines(train, cs):
    queries, report = train
    lines = (cs / "charades_sta_train.txt").read_text().splitlines()
    assert len(lines) == 12408
    assert len(queries) == 12404
    # 1805 lines end after the video; 3 of them are among the 4 dropped ones (all have end < start in the file)
    assert report.dropped == {DROPPED_EMPTY: 4}
    assert report.changed == {CLIPPED_END: 1802}
    assert len({q.video for q in queries}) == 5336  # of 5338: LEOL6 and AKKWU lose their only queries
    kept = {(q.video, q.query) for q in queries}
    for video, sentence in [("LEOL6", "person is holding medicine"),
                            ("IOL8Q", "a person is throwing a bag out of the room"),
                            ("AKKWU", "person opens the cabinet"), ("AKKWU", "person has opened a cabinet")]:
        assert (video, sentence) not in kept


def test_test_counts(test_split):
    queries, report = test_split
    assert len(queries) == 3720 and len({q.video for q in queries}) == 1334
    assert report.dropped == {} and report.changed == {CLIPPED_END: 562}


def test_a_clipped_query_by_hand(test_split):
    # charades_sta_test.txt: "AKO6M 12.7 19.9##the person takes a bag from the bottom cabinet."; length 18.58 s
    queries, _ = test_split
    q = next(q for q in queries if q.video == "AKO6M" and q.query == "the person takes a bag from the bottom cabinet")
    assert q == GroundingQuery("AKO6M", 18.58, "the person takes a bag from the bottom cabinet", (12.7, 18.58))


def test_test_split_equals_the_reference_predictions_ground_truth(test_split, shared_data):
    queries, _ = test_split
    with open(shared_data / "reference" / "charades_sta_test_predictions_seed1.jsonl") as f:
        reference = [json.loads(line) for line in f]
    assert [(q.video, q.query, q.duration, list(q.segment)) for q in queries] == \
        [(r["video"], r["query"], r["duration"], r["segment"]) for r in reference]


def test_dropping_is_logged(cs, tmp_path, caplog):
    (tmp_path / "sta.txt").write_text("AKO6M 12.7 19.9##a.\nAKO6M 19.0 20.0##b.\n")
    with caplog.at_level(logging.WARNING, logger="tal.datasets"):
        queries = read_charades_sta(tmp_path / "sta.txt", cs / "Charades_v1_test.csv")
    assert [q.segment for q in queries] == [(12.7, 18.58)]  # 19.0 >= 18.58 after clipping: dropped
    assert "sta.txt: dropped 1 of 2 queries with start >= end" in caplog.text


def test_video_without_duration_is_an_error(tmp_path):
    (tmp_path / "c.csv").write_text("id,length\nAAAAA,10.5\n")
    (tmp_path / "sta.txt").write_text("AAAAA 1 2##a.\nBBBBB 1 2##b.\n")
    with pytest.raises(TalInputError,
                       match=r"sta\.txt:2: video 'BBBBB' has no duration in .*c\.csv; give the Charades CSV"):
        read_charades_sta(tmp_path / "sta.txt", tmp_path / "c.csv")
    with pytest.raises(TalInputError, match=r"sta\.txt: Charades-STA lines carry no video durations"):
        read_charades_sta(tmp_path / "sta.txt")


def test_malformed_lines_and_csv(tmp_path):
    (tmp_path / "c.csv").write_text("id,length\nAAAAA,10.5\n")
    sta = tmp_path / "sta.txt"
    for text, message in [
        ("AAAAA 1 2 a person sits.\n", r"sta\.txt:1: expected 'VIDEO START END##sentence'"),
        ("AAAAA 1##a person sits.\n", r"sta\.txt:1: expected 'VIDEO START END##sentence'"),
        ("AAAAA one 2##a person sits.\n", r"sta\.txt:1: start 'one' is not a number"),
        ("AAAAA nan 2##a person sits.\n", r"sta\.txt:1: start 'nan' is not a finite number"),
        ("AAAAA 1 2##.\n", r"sta\.txt:1: empty sentence after '##'"),
    ]:
        sta.write_text(text)
        with pytest.raises(TalInputError, match=message):
            read_charades_sta(sta, tmp_path / "c.csv")
    sta.write_text("AAAAA 1 2##a person sits.\n")
    (tmp_path / "c.csv").write_text("id,duration\nAAAAA,10.5\n")
    with pytest.raises(TalInputError, match=r"c\.csv: missing column\(s\) 'length' .* expected the Charades CSV"):
        read_charades_sta(sta, tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text("id,length\nAAAAA,-3\n")
    with pytest.raises(TalInputError, match=r"c\.csv:2: length '-3' is not a positive number"):
        read_charades_sta(sta, tmp_path / "c.csv")
