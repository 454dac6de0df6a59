"""Synthetic feature-level sets: tal's readers load them, time convention, determinism, layout, real signal."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tal.datasets.activitynet import read_activitynet_json
from tal.datasets.grounding import read_grounding_jsonl
from tal.datasets.synthetic import (
    BOUNDARY_SIGNAL, CLASS_NAMES, CLASS_SIGNAL, EVENT_PHRASINGS, EVENT_SIGNAL, THUMOS14_SCALES, WEAK_COPY, main,
    make_detection_features, make_detection_set, make_grounding_set, step_spans_to_seconds,
)
from tal.errors import TalInputError
from tal.features.cache import feature_times, open_feature_cache

TYPE_OF = {text: kind for kind, texts in EVENT_PHRASINGS.items() for text in texts}


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    return make_detection_set(tmp_path_factory.mktemp("det"))


@pytest.fixture(scope="module")
def gro(tmp_path_factory):
    return make_grounding_set(tmp_path_factory.mktemp("gro"), val=True)


def inside(meta, segment) -> np.ndarray:
    """bool [T]: features whose centre lies in [start, end] (DESIGN.md time convention)."""
    centres = feature_times(meta)
    return (centres >= segment[0]) & (centres <= segment[1])


def load_detection(ds):
    """(annotations, {video: features [T, D]}, {video: FeatureMeta})."""
    ann = read_activitynet_json(ds.annotations)
    with open_feature_cache(ds.features) as cache:
        feats = {v: cache.features(v) for v in cache.videos}
        metas = {v: cache.meta(v) for v in cache.videos}
    return ann, feats, metas


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


# ----------------------------------------------------------------------------------------------
# Time convention


def test_step_spans_to_seconds_by_hand():
    spans = np.array([[0, 1], [3, 5], [10, 12]])
    # window 16, stride 8, 30 fps: step i's cell is frames [8i + 4, 8i + 12); T = 12 -> 3.2 s
    got = step_spans_to_seconds(spans, 30.0, 8, 16, 3.2)
    np.testing.assert_allclose(got, [[4 / 30, 12 / 30], [28 / 30, 44 / 30], [84 / 30, 3.2]])  # 100/30 clipped
    np.testing.assert_allclose(step_spans_to_seconds(spans, 10.0, 8, 8, 9.6), [[0, 0.8], [2.4, 4.0], [8.0, 9.6]])
    np.testing.assert_allclose(step_spans_to_seconds(spans[:1], 10.0, 8, 4, 9.6), [[0, 0.6]])  # -0.2 clipped


def test_detection_files_load_with_tal_readers(det):
    ann, feats, metas = load_detection(det)
    assert det.features == det.features.parent / "features.h5" and det.annotations.name == "annotations.json"
    assert sorted(feats) == sorted(ann.videos) and len(feats) == 48
    assert det.classes == ann.classes == sorted(CLASS_NAMES[:4])
    assert ann.subsets() == ["training", "validation"]
    assert len(ann.subset("validation").videos) == 12
    assert all(f.dtype == np.float32 and f.shape[1] == 64 and 96 <= f.shape[0] <= 192 for f in feats.values())
    with open_feature_cache(det.features) as cache:
        assert cache.attrs["backbone"] == "synthetic-detection" and cache.feature_dim == 64


def test_detection_time_convention(det):
    ann, feats, metas = load_detection(det)
    for vid, a in ann.videos.items():
        meta = metas[vid]
        assert (meta.fps, meta.stride, meta.window) == (30.0, 8, 16)
        assert meta.duration == a.duration == meta.num_features * 8 / 30.0
        assert 1 <= len(a.labels) <= 5
        start_s, end_s = a.segments[:, 0], a.segments[:, 1]
        assert np.all((0 <= start_s) & (start_s < end_s) & (end_s <= a.duration))
        assert np.all(end_s[:-1] < start_s[1:])  # sorted, disjoint, >= 1 step apart
        for segment in a.segments:
            first, stop = (segment * 30.0 - 4) / 8  # cell edges in steps: whole numbers
            assert first == pytest.approx(round(first), abs=1e-9)
            if segment[1] < a.duration:  # the last cell overhangs the duration and is clipped
                assert stop == pytest.approx(round(stop), abs=1e-9)
            expected = (round(stop) if segment[1] < a.duration else meta.num_features) - round(first)
            assert inside(meta, segment).sum() == expected


def instance_steps(ann, metas) -> list[tuple[int, int]]:
    """(steps inside, steps of the video) of every instance."""
    return [(int(inside(metas[v], s).sum()), metas[v].num_features)
            for v, a in ann.videos.items() for s in a.segments]


@pytest.mark.parametrize("seed", range(5))
def test_every_set_of_20_videos_has_very_short_and_very_long_instances(tmp_path, seed):
    ann, _, metas = load_detection(make_detection_set(tmp_path, num_videos=20, seed=seed, feature_dim=8))
    lengths = instance_steps(ann, metas)
    assert min(n for n, _ in lengths) == 1
    assert any(n >= t / 2 for n, t in lengths)
    assert any(6 <= n <= 30 for n, _ in lengths)


def test_length_spread_is_roughly_log_uniform(det):
    ann, _, metas = load_detection(det)
    steps = np.array([n for n, _ in instance_steps(ann, metas)])
    assert steps.min() == 1 and steps.max() >= 48  # half the shortest video
    counts = np.histogram(np.log2(steps), bins=[0, 2, 4, 6, 8])[0]  # 1-3, 4-15, 16-63, 64-255 steps
    assert counts.min() >= 0.05 * len(steps), counts


@pytest.mark.parametrize("seed", range(3))
def test_min_instance_steps_gives_thumos14_like_scales(tmp_path, seed):
    """THUMOS14 test instances: shortest fifth <= 11 I3D steps, median 24, longest fifth >= 50."""
    ds = make_detection_set(tmp_path, num_videos=40, seed=seed, feature_dim=8, **THUMOS14_SCALES)
    ann, _, metas = load_detection(ds)
    steps = np.array([n for n, _ in instance_steps(ann, metas)])
    assert steps.min() == 6
    fifth, median, four_fifths = np.quantile(steps, [0.2, 0.5, 0.8])
    assert 7 <= fifth <= 14 and 18 <= median <= 32 and four_fifths >= 45, (fifth, median, four_fifths)


def test_labels_are_readable_and_balanced(tmp_path):
    ds = make_detection_set(tmp_path, num_videos=8, num_classes=6, seed=3)
    labels = [label for a in read_activitynet_json(ds.annotations).videos.values() for label in a.labels]
    assert set(labels) == set(CLASS_NAMES[:6]) == set(ds.classes)
    counts = np.unique(labels, return_counts=True)[1]
    assert counts.max() - counts.min() <= 1


# ----------------------------------------------------------------------------------------------
# Along a real annotation file

def write_json(path: Path, database: dict) -> Path:
    path.write_text(json.dumps({"version": "test", "database": database}))
    return path


def test_features_along_a_file_by_hand(tmp_path):
    # fps 10, stride 2, window 4: T = floor((duration * 10 - 4) / 2) + 1, centre of step i = (2i + 2) / 10 s
    source = write_json(tmp_path / "ann.json", {
        "a": {"subset": "Validation", "duration": 3.0, "annotations": [
            {"segment": [0.35, 0.85], "label": "run"},  # centres 0.4, 0.6, 0.8: steps 1-3
            {"segment": [0.7, 1.2], "label": "jump"},  # overlaps it: steps 3-5
            {"segment": [2.02, 2.08], "label": "run"}]},  # no centre inside: the step nearest 2.05 s, 9
        "b": {"subset": "Test", "duration": 1.0, "annotations": []}})
    ds = make_detection_features(source, tmp_path / "out", fps=10.0, stride=2, window=4, feature_dim=8, noise=0.0,
                                 distractors=False)
    assert ds.classes == ["jump", "run"]
    truth = read_activitynet_json(ds.annotations)
    assert {v: (a.subset, a.duration, len(a.labels)) for v, a in truth.videos.items()} == {
        "a": ("Validation", 3.0, 3), "b": ("Test", 1.0, 0)}
    with open_feature_cache(ds.features) as cache:
        a, b = cache.features("a"), cache.features("b")
        assert (cache.meta("a").fps, cache.meta("a").stride, cache.meta("a").window) == (10.0, 2, 4)
    assert a.shape == (14, 8) and b.shape == (4, 8)
    assert not b.any()
    norms = np.linalg.norm(a, axis=1)
    assert np.flatnonzero(norms > 0).tolist() == [1, 2, 3, 4, 5, 9]
    # steps 2 and 4 carry only their class signature (run, jump): orthogonal, at 2.5 x [0.75, 1.25]
    assert abs(unit(a[2]) @ unit(a[4])) < 1e-6
    assert all(CLASS_SIGNAL * 0.75 <= norms[i] <= CLASS_SIGNAL * 1.25 for i in (2, 4))
    # step 3 carries both classes, the first's end and the second's start
    assert norms[3] == norms.max()
    # the one-step instance carries its class and both boundary signatures
    low, high = (CLASS_SIGNAL * 0.75) ** 2, (CLASS_SIGNAL * 1.25) ** 2
    assert low + 2 * BOUNDARY_SIGNAL ** 2 <= norms[9] ** 2 <= high + 2 * BOUNDARY_SIGNAL ** 2
    assert abs(unit(a[9]) @ unit(a[2])) > 0.3  # same class as steps 1-3


def test_features_along_thumos14_cover_every_instance(tmp_path, shared_data):
    thumos14 = shared_data / "thumos14" / "thumos14_actionformer.json"
    ds = make_detection_features(thumos14, tmp_path, feature_dim=24, noise=0.0, distractors=False)
    truth = read_activitynet_json(ds.annotations)
    source = read_activitynet_json(thumos14)
    assert len(truth.videos) == len(source.videos) == 412 and len(ds.classes) == 20
    assert sorted(truth.subsets()) == ["Test", "Validation"]
    with open_feature_cache(ds.features) as cache:
        for vid in ("video_validation_0000051", "video_test_0000004"):
            meta, feats = cache.meta(vid), cache.features(vid)
            assert meta.num_features == int((source.videos[vid].duration * 30 - 16) // 4) + 1
            covered = np.linalg.norm(feats, axis=1) > 0
            for segment in source.videos[vid].segments:
                assert covered[inside(meta, segment)].all()
            assert covered.sum() >= len(source.videos[vid].labels)


def test_features_along_a_file_reject_bad_input(tmp_path):
    source = write_json(tmp_path / "ann.json", {"a": {"subset": "x", "annotations": []}})
    with pytest.raises(TalInputError, match=r"video 'a' has duration None"):
        make_detection_features(source, tmp_path / "out")
    with pytest.raises(TalInputError, match="stride=0"):
        make_detection_features(source, tmp_path / "out", stride=0)
    assert main(["detection", str(tmp_path / "cli"), "--along", str(source)]) == 2
    with pytest.raises(SystemExit):
        main(["detection", str(tmp_path / "cli"), "--along", str(source), "--videos", "8"])
    with pytest.raises(SystemExit):
        main(["detection", str(tmp_path / "cli"), "--stride", "2"])  # only with --along
    assert not (tmp_path / "out").exists() and not (tmp_path / "cli").exists()


def test_cli_writes_features_along_a_file(tmp_path, capsys):
    source = write_json(tmp_path / "ann.json", {"a": {"subset": "x", "duration": 3.0, "annotations": [
        {"segment": [0.35, 0.85], "label": "run"}]}})
    assert main(["detection", str(tmp_path / "cli"), "--along", str(source), "--fps", "10", "--stride", "2",
                 "--window", "4", "--feature-dim", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["run"]
    same = make_detection_features(source, tmp_path / "api", fps=10.0, stride=2, window=4, feature_dim=8)
    assert (tmp_path / "cli" / "features.h5").read_bytes() == same.features.read_bytes()


# ----------------------------------------------------------------------------------------------
# Determinism


def test_detection_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_detection_set(tmp_path / "a", num_videos=6, seed=7)
    b = make_detection_set(tmp_path / "b", num_videos=6, seed=7)
    c = make_detection_set(tmp_path / "c", num_videos=6, seed=8)
    assert a.annotations.read_bytes() == b.annotations.read_bytes()
    assert a.features.read_bytes() == b.features.read_bytes()
    assert a.annotations.read_bytes() != c.annotations.read_bytes()
    _, fa, _ = load_detection(a)
    _, fb, _ = load_detection(b)
    _, fc, _ = load_detection(c)
    assert all(np.array_equal(fa[v], fb[v]) for v in fa)
    assert not any(fa[v].shape == fc[v].shape and np.allclose(fa[v], fc[v]) for v in fa)


def test_grounding_same_seed_same_bytes_other_seed_differs(tmp_path):
    sets = [make_grounding_set(tmp_path / name, num_videos=6, seed=seed, val=True)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))]
    for name in ("train", "test", "val", "features"):
        first, same, other = (getattr(s, name).read_bytes() for s in sets)
        assert first == same and first != other, name
    with open_feature_cache(sets[0].features) as a, open_feature_cache(sets[1].features) as b:
        assert all(np.array_equal(a.features(v), b.features(v)) for v in a.videos)


# ----------------------------------------------------------------------------------------------
# Detection signal


def class_directions(ann, feats, metas, subset: str) -> dict[str, np.ndarray]:
    """Unit direction per class: mean feature inside its instances minus the mean outside all of them."""
    sums, background = {}, []
    for vid, a in ann.subset(subset).videos.items():
        outside = np.ones(metas[vid].num_features, bool)
        for segment, label in zip(a.segments, a.labels):
            mask = inside(metas[vid], segment)
            outside &= ~mask
            sums.setdefault(label, []).append(feats[vid][mask])
        background.append(feats[vid][outside])
    mean_background = np.concatenate(background).mean(0)
    return {label: unit(np.concatenate(rows).mean(0) - mean_background) for label, rows in sums.items()}


def test_class_signal_is_real_on_held_out_videos(det):
    """Directions estimated on training videos separate classes and background on validation videos."""
    ann, feats, metas = load_detection(det)
    directions = class_directions(ann, feats, metas, "training")
    for label, direction in directions.items():
        own, other, outside = [], [], []
        for vid, a in ann.subset("validation").videos.items():
            projection = feats[vid] @ direction  # [T]
            background = np.ones(len(projection), bool)
            for segment, seg_label in zip(a.segments, a.labels):
                mask = inside(metas[vid], segment)
                background &= ~mask
                (own if seg_label == label else other).append(projection[mask])
            outside.append(projection[background])
        own, other, outside = (np.concatenate(p).mean() for p in (own, other, outside))
        assert own > 0.8 * CLASS_SIGNAL, (label, own)
        assert abs(other) < 0.3 and abs(outside) < 0.3, (label, other, outside)


def test_instances_carry_start_and_end_signatures(det):
    """Per instance, (first rows - middle rows) and (last rows - middle rows) point along two distinct
    directions: learnt on training instances, they hold on validation ones (the class part cancels)."""
    ann, feats, metas = load_detection(det)

    def differences(subset: str) -> tuple[np.ndarray, np.ndarray]:
        """[N, D] first-edge mean minus middle mean, and the same for the last edge, per instance."""
        starts, ends = [], []
        for vid, a in ann.subset(subset).videos.items():
            for segment in a.segments:
                rows = feats[vid][inside(metas[vid], segment)]  # [L, D]
                edge = int(np.ceil(0.1 * len(rows)))
                if len(rows) >= 3:
                    middle = rows[edge:len(rows) - edge].mean(0)
                    starts.append(rows[:edge].mean(0) - middle)
                    ends.append(rows[len(rows) - edge:].mean(0) - middle)
        return np.array(starts), np.array(ends)

    starts, ends = differences("training")
    start_dir, end_dir = unit(starts.mean(0)), unit(ends.mean(0))
    assert abs(start_dir @ end_dir) < 0.3  # distinct signatures
    starts, ends = differences("validation")
    assert (starts @ start_dir).mean() > 0.7 * CLASS_SIGNAL and (ends @ end_dir).mean() > 0.7 * CLASS_SIGNAL
    assert abs((ends @ start_dir).mean()) < 0.5 and abs((starts @ end_dir).mean()) < 0.5


def test_noise_free_features_are_exactly_the_signatures(tmp_path):
    ann, feats, metas = load_detection(make_detection_set(tmp_path, num_videos=6, noise=0.0, distractors=False))
    for vid, a in ann.videos.items():
        x = feats[vid]
        covered = np.zeros(len(x), bool)
        for segment in a.segments:
            idx = np.flatnonzero(inside(metas[vid], segment))
            covered[idx] = True
            edge = int(np.ceil(0.1 * len(idx)))
            core = x[idx[edge:len(idx) - edge]]
            if len(core):
                assert np.all(core == core[0])  # one class signature, constant amplitude
                assert 0.75 * CLASS_SIGNAL - 1e-5 <= np.linalg.norm(core[0]) <= 1.25 * CLASS_SIGNAL + 1e-5
                # a boundary row adds an orthogonal signature of norm 2.5 to the class signature
                np.testing.assert_allclose(np.linalg.norm(x[idx[0]] - core[0]), CLASS_SIGNAL, rtol=1e-5)
                np.testing.assert_allclose(x[idx[0]] @ core[0], core[0] @ core[0], rtol=1e-5)
        assert not x[~covered].any()


def test_distractors_change_only_background_spans(tmp_path):
    """Same seed with and without distractors: same annotations; the differences are clear background
    spans carrying a no-class signature (norm 2.5) or a weak copy (0.3x) of a class signature."""
    on = make_detection_set(tmp_path / "on", seed=4)
    off = make_detection_set(tmp_path / "off", seed=4, distractors=False)
    assert on.annotations.read_bytes() == off.annotations.read_bytes()
    ann, feats_on, metas = load_detection(on)
    _, feats_off, _ = load_detection(off)
    directions = class_directions(ann, feats_off, metas, None)
    kinds = {"foreign": 0, "weak": 0}
    for vid, a in ann.videos.items():
        diff = feats_on[vid].astype(np.float64) - feats_off[vid]  # [T, D]
        changed = np.linalg.norm(diff, axis=1) > 1e-4  # [T]
        near = np.zeros(len(diff), bool)
        for segment in a.segments:
            idx = np.flatnonzero(inside(metas[vid], segment))
            near[max(idx[0] - 1, 0):idx[-1] + 2] = True
        assert not (changed & near).any(), vid
        for row in diff[changed]:
            norm = np.linalg.norm(row)
            best = max(abs(unit(row) @ d) for d in directions.values())
            if norm == pytest.approx(CLASS_SIGNAL, abs=1e-3):
                assert best < 0.4
                kinds["foreign"] += 1
            else:
                assert norm == pytest.approx(WEAK_COPY * CLASS_SIGNAL, abs=1e-3) and best > 0.9
                kinds["weak"] += 1
    assert kinds["foreign"] >= 20 and kinds["weak"] >= 20, kinds  # rows of each kind


# ----------------------------------------------------------------------------------------------
# Grounding


def test_grounding_files_split_by_video(gro):
    splits = {name: read_grounding_jsonl(getattr(gro, name)) for name in ("train", "val", "test")}
    videos = {name: {q.video for q in queries} for name, queries in splits.items()}
    assert [len(videos[n]) for n in ("train", "val", "test")] == [30, 15, 15]
    assert not (videos["train"] & videos["val"] or videos["train"] & videos["test"] or videos["val"] & videos["test"])
    with open_feature_cache(gro.features) as cache:
        assert set(cache.videos) == videos["train"] | videos["val"] | videos["test"]
        assert cache.attrs["backbone"] == "synthetic-grounding"
        for queries in splits.values():
            for q in queries:
                meta = cache.meta(q.video)
                assert q.duration == meta.duration == meta.num_features * 8 / 30.0
                assert 0 <= q.segment[0] < q.segment[1] <= q.duration
    for queries in splits.values():
        assert np.all(np.unique([q.video for q in queries], return_counts=True)[1] == 3)


def test_grounding_without_val(tmp_path):
    gs = make_grounding_set(tmp_path, num_videos=8)
    assert gs.val is None and not (tmp_path / "val.jsonl").exists()
    assert [len({q.video for q in read_grounding_jsonl(p)}) for p in (gs.train, gs.test)] == [6, 2]


def test_grounding_events_and_phrasings(gro):
    queries = [q for name in ("train", "val", "test") for q in read_grounding_jsonl(getattr(gro, name))]
    assert len(EVENT_PHRASINGS) == 8 and all(len(set(t)) >= 4 for t in EVENT_PHRASINGS.values())
    assert all(q.query in TYPE_OF for q in queries)
    assert len({q.query for q in queries}) >= 24  # most of the 32 phrasings are used
    with open_feature_cache(gro.features) as cache:
        by_video: dict[str, list] = {}
        for q in queries:
            by_video.setdefault(q.video, []).append(q)
        for vid, qs in by_video.items():
            events = {q.segment: TYPE_OF[q.query] for q in qs}
            assert all(events[q.segment] == TYPE_OF[q.query] for q in qs)  # one event, one type
            assert len(events) >= 2 and len(set(events.values())) == len(events)  # distinct types
            assert len({q.query for q in qs}) == len(qs)  # a repeated event gets another phrasing
            spans = sorted(events)
            assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
            meta = cache.meta(vid)
            for segment in spans:
                fraction = inside(meta, segment).sum() / meta.num_features
                assert 0.07 <= fraction <= 0.61, (vid, segment)


def test_the_sentence_decides_which_segment(gro):
    """A type's direction, learnt from train queries, lights up the described segment of a test video
    and not the video's other events."""
    train, test = read_grounding_jsonl(gro.train), read_grounding_jsonl(gro.test)
    with open_feature_cache(gro.features) as cache:
        rows: dict[str, list] = {}
        background = []
        for vid in sorted({q.video for q in train}):
            meta, x = cache.meta(vid), cache.features(vid)
            outside = np.ones(len(x), bool)
            for q in (q for q in train if q.video == vid):
                mask = inside(meta, q.segment)
                outside &= ~mask
                rows.setdefault(TYPE_OF[q.query], []).append(x[mask])
            background.append(x[outside])
        mean_background = np.concatenate(background).mean(0)
        directions = {k: unit(np.concatenate(r).mean(0) - mean_background) for k, r in rows.items()}
        own, others, wins = [], [], []
        for q in test:
            meta, x = cache.meta(q.video), cache.features(q.video)
            projection = x @ directions[TYPE_OF[q.query]]  # [T]
            own.append(projection[inside(meta, q.segment)].mean())
            other = [projection[inside(meta, p.segment)].mean() for p in test
                     if p.video == q.video and p.segment != q.segment]
            others += other
            wins.append(own[-1] > max(other))
    assert len(others) >= len(test)  # every test video has other described events
    assert np.mean(own) > 0.8 * EVENT_SIGNAL and abs(np.mean(others)) < 0.3
    assert np.mean(wins) > 0.95


# ----------------------------------------------------------------------------------------------
# Arguments and command line


@pytest.mark.parametrize("kwargs, match", [
    ({"num_videos": 3}, "num_videos=3"),
    ({"val_fraction": 0.0}, "val_fraction=0.0"),
    ({"val_fraction": 1.0}, "val_fraction=1.0"),
    ({"num_steps": (8, 100)}, "num_steps"),
    ({"num_steps": (100, 50)}, "num_steps"),
    ({"num_steps": 100}, "num_steps"),
    ({"num_steps": (64, 96.5)}, "num_steps"),
    ({"num_steps": (16, 32, 64)}, "num_steps"),
    ({"num_videos": 10.0}, "num_videos=10.0"),
    ({"stride": 0}, "stride=0"),
    ({"num_classes": 0}, "num_classes=0"),
    ({"num_classes": len(CLASS_NAMES) + 1}, "num_classes"),
    ({"num_classes": 8, "feature_dim": 11}, "feature_dim=11 is too small .* need at least 12"),
    ({"window": 17}, "window=17 > 2 \\* stride=16"),
    ({"noise": -1.0}, "noise=-1.0"),
    ({"fps": 0.0}, "fps=0.0"),
    ({"seed": -1}, "seed=-1"),
    ({"min_instance_steps": 0}, "min_instance_steps=0"),
    ({"min_instance_steps": 2.0}, "min_instance_steps=2.0"),
    ({"min_instance_steps": 77}, "min_instance_steps=77: .*video \\(76 steps\\)"),  # 0.8 x 96
])
def test_bad_detection_arguments(tmp_path, kwargs, match):
    with pytest.raises(TalInputError, match=match):
        make_detection_set(tmp_path, **kwargs)
    assert not (tmp_path / "features.h5").exists()


@pytest.mark.parametrize("kwargs, match", [
    ({"num_videos": 2}, "num_videos=2"),
    ({"test_fraction": 1.5}, "test_fraction=1.5"),
    ({"queries_per_video": 0}, "queries_per_video=0"),
    ({"feature_dim": 7}, "need at least 8"),
    ({"num_steps": (64, 32)}, "num_steps"),
])
def test_bad_grounding_arguments(tmp_path, kwargs, match):
    with pytest.raises(TalInputError, match=match):
        make_grounding_set(tmp_path, **kwargs)


def test_smallest_sets_keep_every_split_non_empty(tmp_path):
    ds = make_detection_set(tmp_path / "d", num_videos=np.int64(4), val_fraction=0.9, num_steps=np.array([16, 16]),
                            feature_dim=8)
    assert [len(read_activitynet_json(ds.annotations).subset(s).videos) for s in ("training", "validation")] == [1, 3]
    gs = make_grounding_set(tmp_path / "g", num_videos=4, test_fraction=0.9, val=True, num_steps=(16, 16),
                            feature_dim=8)
    assert [len({q.video for q in read_grounding_jsonl(p)}) for p in (gs.train, gs.val, gs.test)] == [1, 1, 2]


def test_cli_prints_the_paths_as_json(tmp_path, capsys):
    assert main(["detection", str(tmp_path / "d"), "--videos", "6", "--seed", "2", "--feature-dim", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"features", "annotations", "classes"} and Path(out["annotations"]).is_file()
    with open_feature_cache(out["features"]) as cache:
        assert len(cache) == 6 and cache.feature_dim == 16 and cache.attrs["seed"] == 2
    assert main(["detection", str(tmp_path / "bad"), "--videos", "2"]) == 2
    assert "num_videos=2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["detection", str(tmp_path / "bad"), "--val"])
    assert exit_info.value.code == 2 and "--val applies to grounding" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["grounding", str(tmp_path / "bad"), "--min-instance-steps", "4"])
    assert exit_info.value.code == 2 and "detection sets only" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_sets_video_and_instance_lengths(tmp_path, capsys):
    assert main(["detection", str(tmp_path), "--videos", "8", "--feature-dim", "8", "--steps", "40", "48",
                 "--min-instance-steps", "5"]) == 0
    ann, _, metas = load_detection(make_detection_set(tmp_path / "same", num_videos=8, feature_dim=8,
                                                      num_steps=(40, 48), min_instance_steps=5))
    assert (tmp_path / "annotations.json").read_bytes() == (tmp_path / "same" / "annotations.json").read_bytes()
    assert all(40 <= m.num_features <= 48 for m in metas.values())
    assert min(n for n, _ in instance_steps(ann, metas)) >= 5


def test_module_entry_point_writes_a_grounding_set(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tal.datasets.synthetic", "grounding", str(tmp_path), "--videos", "5",
                           "--val"], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out == {"features": str(tmp_path / "features.h5"), "train": str(tmp_path / "train.jsonl"),
                   "test": str(tmp_path / "test.jsonl"), "val": str(tmp_path / "val.jsonl")}
    assert all(read_grounding_jsonl(out[k]) for k in ("train", "test", "val"))


def test_docstrings_state_the_signal_constants():
    assert f"amplitude\n      {CLASS_SIGNAL}" in make_detection_set.__doc__
    assert f"amplitude {EVENT_SIGNAL}" in make_grounding_set.__doc__
    assert f"{WEAK_COPY}x copy" in make_detection_set.__doc__
