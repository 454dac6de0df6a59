import json

import numpy as np
import pytest
from matplotlib.image import imread

from tal.cli.main import main
from tal.datasets.types import DetectionAnnotations, VideoAnnotation
from tal.errors import TalInputError
from tal.eval.detection import _average_precision, class_matches, evaluate_detection
from tal.eval.groundtruth import load_subset
from tal.eval.predictions import parse_segment_predictions, read_segment_predictions
from tal.viz import DPI, _pr_envelope, plot_grounding, plot_pr_curves, plot_score_map, plot_timeline

GT = [(1.0, 4.0, "a"), (6.0, 9.0, "b")]
PREDS = [(1.2, 4.0, "a", 0.9), (5.5, 9.0, "b", 0.3), (0.0, 2.0, "a", 0.2)]


def _image(path) -> np.ndarray:
    """[H, W, 4] floats in [0, 1], checked to be a drawn picture rather than a blank canvas."""
    assert path.is_file()
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] == 4
    assert image[..., :3].std() > 0.05, f"{path} looks blank"
    return image


def test_timeline_size_rows_and_predictions(tmp_path):
    out = plot_timeline(tmp_path / "deep" / "dir" / "t.png", 10.0, GT, PREDS, title="v")
    assert out == tmp_path / "deep" / "dir" / "t.png"  # parents created
    with_preds = _image(out)
    height, width = with_preds.shape[:2]
    assert width == 12 * DPI and width > 2 * height  # a wide strip
    without = _image(plot_timeline(tmp_path / "gt_only.png", 10.0, GT, [], title="v"))
    assert without.shape == with_preds.shape  # same rows: the predictions use the GT's labels
    assert np.abs(without - with_preds).max() > 0.5
    # a label only predicted, and a proposal (label None), each add a row: a taller image
    more = _image(plot_timeline(tmp_path / "more.png", 10.0, GT, PREDS + [(2, 3, "c", 0.5), (3, 5, None, 0.5)]))
    assert more.shape[0] > height and more.shape[1] == width


def test_timeline_opacity_follows_score(tmp_path):
    darkness = []
    for score in (0.95, 0.1):
        image = _image(plot_timeline(tmp_path / f"{score}.png", 10.0, [(0.0, 1.0, "a")], [(2.0, 9.0, "a", score)]))
        darkness.append(1 - image[..., :3].mean())
    assert darkness[0] > darkness[1] + 0.01  # the well-scored bar is more opaque


def test_timeline_top_k_and_threshold_keep_the_best(tmp_path):
    def png(name, preds, **kw):
        return imread(plot_timeline(tmp_path / name, 10.0, GT, preds, **kw))

    # drawing is deterministic, so "keeps only the best" means the same pixels as passing only the best
    assert np.array_equal(png("k1.png", PREDS, top_k=1), png("best.png", PREDS[:1], top_k=1))
    assert not np.array_equal(png("k2.png", PREDS, top_k=2), png("best2.png", PREDS[:1], top_k=2))
    above = [p for p in PREDS if p[3] >= 0.25]
    assert np.array_equal(png("s.png", PREDS, score_threshold=0.25), png("s2.png", above, score_threshold=0.25))
    # reversed segments overlap nothing and are not drawn
    assert np.array_equal(png("r.png", PREDS + [(5.0, 3.0, "a", 0.99)], top_k=None), png("r2.png", PREDS, top_k=None))


def _detection_case():
    """Two classes, two videos; matching at tIoU 0.5 and 0.7 worked out by hand below."""
    gt = DetectionAnnotations({
        "v": VideoAnnotation("v", "val", 100.0, np.array([[0, 10], [20, 30], [40, 50]], float), ["a", "a", "b"]),
        "w": VideoAnnotation("w", "val", 100.0, np.array([[0, 10]], float), ["a"]),
    }, ["a", "b"], "hand.json")
    pred = parse_segment_predictions({"results": {
        "v": [{"segment": [0, 10], "score": 0.9, "label": "a"},  # a: TP
              {"segment": [21, 30], "score": 0.8, "label": "a"},  # a: tIoU 0.9, TP
              {"segment": [60, 70], "score": 0.7, "label": "a"},  # a: FP
              {"segment": [40, 50], "score": 0.5, "label": "b"},  # b: TP, ranked second
              {"segment": [0, 10], "score": 0.95, "label": "b"}],  # b: FP, ranked first
        "w": [{"segment": [0, 5], "score": 0.6, "label": "a"}],  # a: tIoU exactly 0.5: TP at 0.5, FP at 0.7
    }}, "hand_pred.json")
    return gt, pred


def test_class_matches_by_hand_and_equal_to_the_evaluator():
    gt, pred = _detection_case()
    matches = class_matches(gt, pred, np.array([0.5, 0.7]))
    assert list(matches) == ["a", "b"]
    tp_a, num_gt_a = matches["a"]
    assert num_gt_a == 3 and tp_a.tolist() == [[True, True, False, True], [True, True, False, False]]
    assert matches["b"][0].tolist() == [[False, True], [False, True]] and matches["b"][1] == 1
    # a at 0.5: precision 1, 1, 2/3, 3/4 at recall 1/3, 2/3, 2/3, 1 -> AP (1 + 1 + 3/4) / 3; b: 1/2
    expected = np.array([[11 / 12, 0.5], [2 / 3, 0.5]])
    ours = np.stack([_average_precision(tp, n) for tp, n in matches.values()], axis=1)  # [T, C]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    result = evaluate_detection(gt, pred, np.array([0.5, 0.7]))
    assert result.classes == list(matches)
    np.testing.assert_array_equal(ours, result.ap)


def test_drawn_curve_area_is_the_ap():
    gt, pred = _detection_case()
    for tp, num_gt in class_matches(gt, pred, np.array([0.5])).values():
        recall, precision = _pr_envelope(tp[0], num_gt)
        area = np.sum(np.diff(recall) * precision[:-1])  # steps-post: precision[i] spans recall[i] .. recall[i+1]
        assert abs(area - _average_precision(tp, num_gt)[0]) < 1e-12
        assert np.all(np.diff(precision[:-1]) <= 0)  # an envelope never rises


def test_class_matches_equal_the_evaluator_on_thumos(shared_data):
    gt = load_subset(shared_data / "thumos14/thumos14_actionformer.json", "Test")
    pred = read_segment_predictions(shared_data / "reference/thumos14_test_detection_seed1.json")
    matches = class_matches(gt, pred, np.array([0.5]))
    ap = np.array([_average_precision(tp, n)[0] for tp, n in matches.values()])  # [C]
    result = evaluate_detection(gt, pred, np.array([0.5]))
    assert result.classes == list(matches)
    np.testing.assert_array_equal(ap, result.ap[0])
    assert abs(ap.mean() - 0.794634999921019) < 1e-9  # the official mAP@0.5 of the reference README


def test_plot_pr_curves(tmp_path):
    gt, pred = _detection_case()
    both = _image(plot_pr_curves(tmp_path / "pr.png", gt, pred, tiou=0.5))
    assert both.shape[1] > both.shape[0]  # room for the legend on the right
    only_b = _image(plot_pr_curves(tmp_path / "pr_b.png", gt, pred, tiou=0.5, classes=["b"]))
    assert only_b.shape == both.shape and not np.array_equal(only_b, both)
    with pytest.raises(TalInputError, match=r"class 'c'.*'a', 'b'"):
        plot_pr_curves(tmp_path / "bad.png", gt, pred, classes=["c"])


def test_plot_score_map(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.random((16, 16))
    image = _image(plot_score_map(tmp_path / "map.png", scores, 16.0))
    assert abs(image.shape[0] - image.shape[1]) < 0.2 * image.shape[1]  # about square
    marked = _image(plot_score_map(tmp_path / "gt.png", scores, 16.0, ground_truth=(3.0, 7.0)))
    assert not np.array_equal(image, marked)
    mask = np.triu(np.ones((16, 16), dtype=bool)) & ~np.triu(np.ones((16, 16), dtype=bool), 8)
    sparse = _image(plot_score_map(tmp_path / "sparse.png", scores, 16.0, valid_mask=mask))
    assert sparse[..., :3].mean() > image[..., :3].mean()  # masked cells are light grey
    with pytest.raises(TalInputError, match="square"):
        plot_score_map(tmp_path / "bad.png", scores[:4], 16.0)


def test_plot_grounding(tmp_path):
    moments = [(4.0, 9.0, 0.3), (2.0, 6.0, 0.8), (10.0, 12.0, 0.1)]
    image = _image(plot_grounding(tmp_path / "g.png", 12.0, "a person opens a door", (2.0, 6.5), moments))
    assert image.shape[1] > image.shape[0]
    no_gt = _image(plot_grounding(tmp_path / "nogt.png", 12.0, "a person opens a door", None, moments))
    assert no_gt.shape == image.shape and not np.array_equal(no_gt, image)
    top1 = _image(plot_grounding(tmp_path / "top1.png", 12.0, "q", (2.0, 6.5), moments, top_k=1))
    assert top1.shape[0] < image.shape[0]  # one row of moments instead of three
    # moments are ranked by score whatever their order, so a shuffled list draws the same picture
    shuffled = plot_grounding(tmp_path / "shuffled.png", 12.0, "a person opens a door", (2.0, 6.5), moments[::-1])
    assert np.array_equal(imread(shuffled), image)
    _image(plot_grounding(tmp_path / "empty.png", 12.0, "q", (2.0, 6.5), []))


def test_cli_timeline_and_pr_on_reference_files(shared_data, tmp_path, capsys):
    gt = str(shared_data / "thumos14/thumos14_actionformer.json")
    pred = str(shared_data / "reference/thumos14_test_detection_seed1.json")
    out = tmp_path / "t.png"
    assert main(["visualize", "timeline", "--gt", gt, "--pred", pred, "--video", "video_test_0000004",
                 "--out", str(out), "--top-k", "10", "--score-threshold", "0.2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    _image(out)
    out = tmp_path / "pr.png"
    assert main(["visualize", "pr", "--gt", gt, "--pred", pred, "--subset", "Test", "--tiou", "0.5",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    _image(out)


def _detection_files(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {
        "v": {"subset": "val", "duration": 60, "annotations": [{"segment": [0, 10], "label": "a"}]},
        "w": {"subset": "val", "duration": 30, "annotations": [{"segment": [5, 10], "label": "b"}]}}}))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {
        "v": [{"segment": [0, 9], "score": 0.9, "label": "a"}, {"segment": [30, 40], "score": 0.4}]}}))
    return str(gt), str(pred)


def test_cli_timeline_unknown_video_and_proposals(tmp_path, capsys):
    gt, pred = _detection_files(tmp_path)
    assert main(["visualize", "timeline", "--gt", gt, "--pred", pred, "--video", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope'" in err and "'v'" in err and "'w'" in err
    # an entry without a label is drawn in the "proposal" row; a video without predictions is a note
    out = tmp_path / "v.png"
    assert main(["visualize", "timeline", "--gt", gt, "--pred", pred, "--video", "v", "--out", str(out)]) == 0
    _image(out)
    assert main(["visualize", "timeline", "--gt", gt, "--pred", pred, "--video", "w", "--out",
                 str(tmp_path / "w.png")]) == 0
    assert "no predictions for 'w'" in capsys.readouterr().err


def test_cli_pr_unknown_subset(tmp_path, capsys):
    gt, pred = _detection_files(tmp_path)
    assert main(["visualize", "pr", "--gt", gt, "--pred", pred, "--subset", "test"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'test'" in err and "'val'" in err


def test_cli_grounding(tmp_path, capsys):
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(json.dumps(line) for line in [
        {"video": "v1", "query": "a man sits", "duration": 20.0, "segment": [2, 6],
         "moments": [[2, 5, 0.9], [10, 14, 0.5]]},
        {"video": "v2", "query": "he stands up", "segment": [1, 3], "moments": [[0, 4, 0.7]]},
        {"video": "v2", "query": "he leaves", "segment": [5, 8], "moments": [[4, 8, 0.6]]},
    ]) + "\n")
    out = tmp_path / "q.png"
    assert main(["visualize", "grounding", "--pred", str(pred), "--index", "0", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    by_video = tmp_path / "v2.png"
    assert main(["visualize", "grounding", "--pred", str(pred), "--video", "v2", "--out", str(by_video)]) == 0
    assert "2 queries (--index 1, 2)" in capsys.readouterr().err
    same = tmp_path / "i1.png"
    assert main(["visualize", "grounding", "--pred", str(pred), "--index", "1", "--out", str(same)]) == 0
    assert np.array_equal(_image(by_video), _image(same))  # --video picks the video's first query
    assert main(["visualize", "grounding", "--pred", str(pred), "--video", "v9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'v9'" in err and "'v1', 'v2'" in err
    assert main(["visualize", "grounding", "--pred", str(pred), "--index", "3"]) == 2
    assert "has 3 queries (0 to 2)" in capsys.readouterr().err


def test_help_has_examples(capsys):
    for plot in ("timeline", "pr", "grounding"):
        with pytest.raises(SystemExit) as exc:
            main(["visualize", plot, "--help"])
        assert exc.value.code == 0
        assert f"example:\n  tal visualize {plot} " in capsys.readouterr().out


def _bars(fig, label_rows: list[str]) -> dict[str, list]:
    """The prediction rectangles of each row of a timeline figure, by row label."""
    from matplotlib.patches import Rectangle

    ax = fig.axes[0]
    out: dict[str, list] = {label: [] for label in label_rows}
    for patch in ax.patches:
        if isinstance(patch, Rectangle):
            row = int(round(patch.get_y()))
            out[label_rows[row]].append(patch)
    return out


def test_a_class_keeps_its_colour_in_every_timeline():
    """'b' is the second row in one figure and the first in the other: the same colour in both, from the class
    list when given, else from its name; two classes do not share it."""
    from tal.viz import class_color, timeline_figure

    classes = ["a", "b", "c"]
    first = timeline_figure(10.0, [], [(1, 2, "a", 0.9), (3, 4, "b", 0.5)], classes=classes)
    second = timeline_figure(10.0, [], [(3, 4, "b", 0.9), (5, 6, "c", 0.5)], classes=classes)
    colour_1 = _bars(first, ["a", "b"])["b"][0].get_edgecolor()
    colour_2 = _bars(second, ["b", "c"])["b"][0].get_edgecolor()
    assert colour_1 == colour_2 == class_color("b", {c: i for i, c in enumerate(classes)})
    assert _bars(second, ["b", "c"])["c"][0].get_edgecolor() != colour_2
    unlisted = [timeline_figure(10.0, [], preds) for preds in ([(1, 2, "x", 0.9), (3, 4, "y", 0.5)],
                                                               [(3, 4, "y", 0.9)])]
    assert _bars(unlisted[0], ["x", "y"])["y"][0].get_edgecolor() == _bars(unlisted[1], ["y"])["y"][0].get_edgecolor()


def test_overlapping_predictions_take_lanes_and_the_best_carry_scores():
    from tal.viz import timeline_figure

    preds = [(1.0, 5.0, "a", 0.9), (2.0, 6.0, "a", 0.8), (5.5, 8.0, "a", 0.7), (3.0, 4.0, "a", 0.1)]
    fig = timeline_figure(10.0, [], preds, num_labelled=2)
    bars = sorted(_bars(fig, ["a"])["a"], key=lambda p: (p.get_x(), p.get_y()))
    ys = {round(b.get_x(), 3): round(b.get_y(), 4) for b in bars}
    # [1,5] lane 0, [2,6] lane 1, [3,4] lane 2, [5.5,8] fits lane 0 again (after 5): three lanes of 0.4/3
    assert ys[1.0] == ys[5.5] and len({ys[1.0], ys[2.0], ys[3.0]}) == 3
    assert abs(bars[0].get_height() - 0.4 / 3) < 1e-9
    texts = sorted(t.get_text().strip() for t in fig.axes[0].texts)
    assert texts == ["0.80", "0.90"]


def test_no_ground_truth_entry_without_ground_truth():
    from tal.viz import timeline_figure

    def legend(fig):
        return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]

    assert legend(timeline_figure(10.0, [], PREDS)) == ["prediction (opacity = score)"]
    assert legend(timeline_figure(10.0, GT, PREDS))[0] == "ground truth (top half)"
    assert timeline_figure(10.0, [], PREDS, title="v").axes[0].get_title() == "v: 3 predictions (top 20)"


def test_grounding_title_names_the_video():
    from tal.viz import grounding_figure

    fig = grounding_figure(12.0, "a person opens a door", None, [(1.0, 2.0, 0.5)], video="3MSZA")
    assert fig.axes[0].get_title() == '3MSZA: "a person opens a door"'
