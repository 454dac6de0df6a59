"""2D-TAN's ActivityNet Captions and TACoS JSON: counts, frames -> seconds, clipping, errors."""
import json

import pytest

from tal.datasets.captions import read_anet_captions, read_tacos
from tal.datasets.grounding import CLIPPED_END, DROPPED_EMPTY
from tal.datasets.types import GroundingQuery, LoadReport
from tal.errors import TalInputError


def load(reader, path):
    report = LoadReport()
    return reader(path, report), report


@pytest.mark.parametrize("split, raw, kept, dropped, clipped, videos", [
    ("train", 37421, 37417, 4, 261, 10009),
    ("val", 17505, 17505, 0, 134, 4917),
    ("test", 17031, 17031, 0, 111, 4885),
])
def test_anet_captions_counts(shared_data, split, raw, kept, dropped, clipped, videos):
    path = shared_data / "activitynet_captions" / f"{split}.json"
    data = json.loads(path.read_text())
    assert sum(len(v["sentences"]) for v in data.values()) == raw
    queries, report = load(read_anet_captions, path)
    assert len(queries) == kept and len({q.video for q in queries}) == videos
    assert report.dropped == ({DROPPED_EMPTY: dropped} if dropped else {})
    assert report.changed == {CLIPPED_END: clipped}
    assert all(0 <= q.segment[0] < q.segment[1] <= q.duration for q in queries)


@pytest.mark.parametrize("split, count, clipped, videos", [("train", 9790, 43, 75), ("val", 4436, 0, 27),
                                                           ("test", 4001, 5, 25)])
def test_tacos_counts(shared_data, split, count, clipped, videos):
    queries, report = load(read_tacos, shared_data / "tacos" / f"{split}.json")
    assert len(queries) == count and len({q.video for q in queries}) == videos
    assert report.dropped == {} and report.changed == ({CLIPPED_END: clipped} if clipped else {})


def test_tacos_frames_to_seconds_by_hand(shared_data):
    queries, _ = load(read_tacos, shared_data / "tacos" / "test.json")
    # s30-d52.avi: fps 29.4, num_frames 7346, first timestamp [141, 354] frames, "She took out kiwi"
    assert queries[0] == GroundingQuery("s30-d52.avi", 7346 / 29.4, "She took out kiwi", (141 / 29.4, 354 / 29.4))
    assert queries[0].segment == pytest.approx((4.795918367346939, 12.040816326530612), abs=1e-12)
    # s30-d41.avi: [19055, 19154] frames, but the video has 19147 frames: end clipped to 651.2585... s
    q = next(q for q in queries if q.video == "s30-d41.avi" and q.segment[0] == 19055 / 29.4)
    assert q.segment[1] == 19147 / 29.4 == q.duration and q.query == "She cleans up."


def test_anet_captions_sentences_are_stripped_and_dropped_ones_are_the_reversed(shared_data):
    queries, _ = load(read_anet_captions, shared_data / "activitynet_captions" / "val.json")
    assert queries[1] == GroundingQuery(
        "v_uqiMw7tQ1Cc", 55.15, "The coach helps the guy in red with the proper body placement and lifting technique.",
        (13.79, 54.32))
    train, _ = load(read_anet_captions, shared_data / "activitynet_captions" / "train.json")
    # the 4 training timestamps with start >= end are left out, and only they
    dropped = {("v_N7ppHQNikv8", "The boy pours some water on the sand castle."),  # [34.77, 34.77]
               ("v_4rKTw99bM8g", "The raft completely overturns as he tries to make his way up."),  # [4.97, 4.97]
               ("v_0bosp4-pyTM", "He grind it hard to make the pieces smaller."),  # [61.29, 60.71]
               ("v_rhOtqArO-3Y", "Two people are playing with a Frisbee as one person walks on the rope.")}
    assert not dropped & {(q.video, q.query) for q in train}


@pytest.mark.parametrize("entry, message", [
    ({"duration": 10, "timestamps": [[1, 2]], "sentences": []},
     r"video 'v_a': 'timestamps' and 'sentences' must be lists of the same length \(got 1 and 0\)"),
    ({"timestamps": [[1, 2]], "sentences": ["x"]}, r"video 'v_a': missing key 'duration'"),
    ({"duration": -1, "timestamps": [[1, 2]], "sentences": ["x"]}, r"video 'v_a': duration -1.0 must be positive"),
    ({"duration": 10, "timestamps": [[1]], "sentences": ["x"]},
     r"video 'v_a', query 0: timestamp must be \[start, end\]"),
    ({"duration": 10, "timestamps": [[1, "2"]], "sentences": ["x"]},
     r"video 'v_a', query 0: end must be a finite number, got '2'"),
    ({"duration": 10, "timestamps": [[1, 2]], "sentences": ["  "]},
     r"video 'v_a', query 0: sentence must be a non-empty string"),
])
def test_anet_captions_errors(tmp_path, entry, message):
    path = tmp_path / "cap.json"
    path.write_text(json.dumps({"v_a": entry}))
    with pytest.raises(TalInputError, match=r"cap\.json: " + message):
        read_anet_captions(path)


def test_tacos_errors(tmp_path):
    path = tmp_path / "tacos.json"
    path.write_text(json.dumps({"s1.avi": {"timestamps": [[1, 2]], "sentences": ["x"], "num_frames": 100}}))
    with pytest.raises(TalInputError, match=r"tacos\.json: video 's1\.avi': missing key 'fps'"):
        read_tacos(path)
    path.write_text('{"s1.avi": {"timestamps": [[NaN, 2]], "sentences": ["x"], "num_frames": 100, "fps": 30}}')
    with pytest.raises(TalInputError, match=r"video 's1\.avi', query 0: start must be a finite number, got nan"):
        read_tacos(path)
    path.write_text('["s1.avi"]')
    with pytest.raises(TalInputError, match=r"tacos\.json: expected a TACoS JSON object"):
        read_tacos(path)
