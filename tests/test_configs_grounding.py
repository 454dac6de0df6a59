"""The grounding configs: each loads, builds its head with the official sizes through the task
machinery, and any grounding set in the contract formats trains with them through --set alone."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tal.config import load_config
from tal.datasets.synthetic import make_grounding_set
from tal.engine.trainer import train
from tal.models.tan2d import SparsePropConv, SparsePropPool
from tal.tasks import build_task
from tal.tasks.base import GROUNDING_MODELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VALID_CELLS = {16: 136, 64: 1104, 128: 2548}  # cells of 2D-TAN's sparse maps for N = 16, 64, 128

# Transcribed by hand from microsoft/2D-TAN experiments/<dataset>/2D-TAN-*.yaml (both variants agree
# on all of these): clips = NUM_SAMPLE_CLIPS / TARGET_STRIDE, feature dimension, MapConv kernel x layers,
# bce_rescale_loss MIN_IOU / MAX_IOU, TEST.TIOU.
OFFICIAL = {
    "charades_sta": dict(num_clips=16, frame_stride=16, input_dim=4096, map_kernel=5, map_layers=8,
                         min_iou=0.5, max_iou=1.0, iou=[0.5, 0.7]),
    "activitynet_captions": dict(num_clips=64, frame_stride=4, input_dim=500, map_kernel=9, map_layers=4,
                                 min_iou=0.5, max_iou=1.0, iou=[0.3, 0.5, 0.7]),
    "tacos": dict(num_clips=128, frame_stride=2, input_dim=4096, map_kernel=5, map_layers=8,
                  min_iou=0.3, max_iou=0.7, iou=[0.1, 0.3, 0.5, 0.7]),
}
OFFICIAL_NMS = {  # TEST.NMS_THRESH differs between the pool and conv files of two datasets
    "charades_sta/2dtan_pool": 0.45, "charades_sta/2dtan_conv": 0.5,
    "activitynet_captions/2dtan_pool": 0.5, "activitynet_captions/2dtan_conv": 0.5,
    "tacos/2dtan_pool": 0.4, "tacos/2dtan_conv": 0.5,
}
BENCHMARK_CONFIGS = {*OFFICIAL_NMS, "charades_sta/man"}
VOCAB = ["<pad>", "<unk>", "a", "person", "opens", "the", "door"]


def grounding_configs() -> list[str]:
    """`<benchmark>/<name>` of every configs/*/*.yaml of a grounding head (files named _* are bases)."""
    found = []
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        if not path.name.startswith("_") and load_config(path)["model"].get("name") in GROUNDING_MODELS:
            found.append(f"{path.parent.name}/{path.stem}")
    return found


def write_glove_300d(path: Path, words: list[str]) -> Path:
    """A GloVe file in the published layout (word, then 300 numbers) for `words`."""
    rows = torch.randn(len(words), 300, generator=torch.Generator().manual_seed(0))
    path.write_text("".join(f"{w} " + " ".join(f"{x:.5f}" for x in row.tolist()) + "\n" for w, row in zip(words, rows)))
    return path


@pytest.fixture(scope="module")
def glove_file(tmp_path_factory):
    from tal.datasets.synthetic import EVENT_PHRASINGS

    words = {w for phrasings in EVENT_PHRASINGS.values() for p in phrasings for w in p.split()} | set(VOCAB[2:])
    return write_glove_300d(tmp_path_factory.mktemp("glove") / "glove.6B.300d.txt", sorted(words))


def test_every_benchmark_config_is_there():
    assert BENCHMARK_CONFIGS <= set(grounding_configs())
    assert "synthetic/2dtan" in grounding_configs()


@pytest.mark.parametrize("name", grounding_configs())
def test_config_builds_its_head_without_data(name, glove_file):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    reads_glove = cfg["model"]["text"]["word_vectors"] != "learned"
    if reads_glove:
        cfg = load_config(CONFIGS / f"{name}.yaml", [f"model.text.word_vectors={glove_file}"])
    model_cfg = cfg["model"]
    num_clips = model_cfg["num_clips"]
    input_dim = OFFICIAL.get(name.split("/")[0], {}).get("input_dim", 16)
    task = build_task(cfg, meta={"input_dim": input_dim, "vocab": VOCAB})
    model = task.build_model()

    assert task.num_steps == num_clips * model_cfg.get("frame_stride", 1)
    text = model.text
    assert text.lstm.input_size == model_cfg["text"]["embed_dim"]
    assert text.lstm.hidden_size == model_cfg["text"]["hidden_dim"]
    assert text.lstm.num_layers == model_cfg["text"]["num_layers"]
    if reads_glove:  # 2D-TAN's input: the whole GloVe table, frozen, no embedding parameters
        assert text.embedding is None and len(text.table) == len(glove_file.read_text().splitlines())
    else:
        assert text.embedding.num_words == len(VOCAB) and text.embedding.learned is not None
    if model_cfg["name"] == "man":
        assert model.candidates.shape == (VALID_CELLS[num_clips], 2)
        assert model.frame.conv.in_channels == input_dim
        return
    assert int(model.mask.sum()) == VALID_CELLS[num_clips]
    assert model.frame.conv.in_channels == input_dim and model.frame.conv.out_channels == model_cfg["hidden_dim"]
    assert len(model.map_conv.convs) == model_cfg["map_layers"]
    assert {c.kernel_size for c in model.map_conv.convs} == {(model_cfg["map_kernel"],) * 2}
    # 2D-TAN's (K-1)L/2 padding lives in MaskedMapConv's canvas, equal to the official stack (test_tan2d.py)
    assert all(c.padding == (0, 0) for c in model.map_conv.convs)
    assert model.map_conv.map_size == (num_clips, num_clips)
    assert isinstance(model.prop, {"pool": SparsePropPool, "conv": SparsePropConv}[model_cfg["prop"]])
    assert (model.min_iou, model.max_iou) == (model_cfg["loss"]["min_iou"], model_cfg["loss"]["max_iou"])


@pytest.mark.parametrize("name", sorted(BENCHMARK_CONFIGS))
def test_benchmark_config_has_the_official_numbers(name):
    benchmark, head = name.split("/")
    cfg = load_config(CONFIGS / f"{name}.yaml")
    official = OFFICIAL[benchmark]
    model, text = cfg["model"], cfg["model"]["text"]
    assert model["num_clips"] * model["frame_stride"] == 256  # NUM_SAMPLE_CLIPS
    assert (model["num_clips"], model["frame_stride"]) == (official["num_clips"], official["frame_stride"])
    assert model["hidden_dim"] == 512 and text["embed_dim"] == 300
    # 2D-TAN's text input: GloVe 6B 300-d for every GloVe word, sentence.split() lowercased
    assert text["word_vectors"] == "data/glove/glove.6B.300d.txt"
    assert (text["vocabulary"], text["tokenizer"], text["missing_words"]) == ("glove", "split", "zeros")
    assert cfg["train"]["lr"] == 1e-4 and isinstance(cfg["train"]["lr"], float)
    assert (cfg["train"]["batch_size"], cfg["train"]["optimizer"], cfg["train"]["weight_decay"]) == (32, "adam", 0.0)
    assert (cfg["train"]["epochs"], cfg["train"]["clip_grad_norm"]) == (100, 10.0)
    assert cfg["eval"]["recall"] == [1, 5] and cfg["eval"]["iou"] == official["iou"]
    assert cfg["eval"]["top_k"] == 5 and not cfg["eval"].get("iou_ge", False)
    assert cfg["dataset"]["normalize"] is True
    # NO_VAL: True only for Charades-STA; ActivityNet Captions (val_1) and TACoS select on their val split
    assert cfg["dataset"]["val"] == (None if benchmark == "charades_sta" else f"data/{benchmark}/val.jsonl")
    # ReduceLROnPlateau(0.8, 20) on the val loss wherever 2D-TAN loads a val split (not TACoS conv: NO_VAL)
    if benchmark == "charades_sta" or name == "tacos/2dtan_conv":
        assert cfg["train"]["schedule"] == "constant"
    else:
        assert (cfg["train"]["schedule"], cfg["train"]["plateau_watch"]) == ("plateau", "val_loss")
        assert (cfg["train"]["plateau_factor"], cfg["train"]["plateau_patience"]) == (0.8, 20)
    assert cfg["dataset"]["features"].startswith(f"data/{benchmark}/")
    if head == "man":
        assert text["num_layers"] == 1  # the paper's single-layer LSTM; the rest of MAN is tal's choice
        return
    assert (model["map_kernel"], model["map_layers"]) == (official["map_kernel"], official["map_layers"])
    assert (model["loss"]["min_iou"], model["loss"]["max_iou"]) == (official["min_iou"], official["max_iou"])
    assert text["num_layers"] == 3 and text["hidden_dim"] == 512 and text["bidirectional"] is False
    assert model["prop"] == head.split("_")[1]
    assert cfg["eval"]["nms"] == OFFICIAL_NMS[name]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return make_grounding_set(tmp_path_factory.mktemp("grounding"), num_videos=12, feature_dim=16, seed=3, val=True)


@pytest.mark.parametrize("name", ["charades_sta/2dtan_pool", "charades_sta/man", "activitynet_captions/2dtan_conv",
                                  "tacos/2dtan_pool"])
def test_config_trains_on_another_set_with_set_alone(name, tiny_set, glove_file, tmp_path):
    overrides = [f"dataset.features={tiny_set.features}", f"dataset.train={tiny_set.train}",
                 f"dataset.test={tiny_set.test}", "train.epochs=1", "model.hidden_dim=8", "model.text.hidden_dim=8",
                 f"model.text.word_vectors={glove_file}"]
    if not name.startswith("charades_sta"):
        overrides.append(f"dataset.val={tiny_set.val}")
    cfg = load_config(CONFIGS / f"{name}.yaml", overrides)
    metrics = train(cfg, tmp_path, progress=False)

    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    ious = cfg["eval"]["iou"]
    selected = {"selected_on"} if name.startswith("charades_sta") else set()  # Charades-STA: no val split
    assert set(written) == {f"R@{n},IoU={m:g}" for n in (1, 5) for m in ious} | {"mIoU"} | selected
    assert written.pop("selected_on", "test") == "test"
    log = (tmp_path / "train.log").read_text()
    assert "frozen GloVe vectors" in log and "NO GloVe" not in log
    assert all(0.0 <= v <= 1.0 for v in written.values())
    for m in ious:  # more chances can only help
        assert written[f"R@5,IoU={m:g}"] >= written[f"R@1,IoU={m:g}"]

    test_queries = [json.loads(line) for line in tiny_set.test.read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [(r["video"], r["query"]) for r in rows] == [(q["video"], q["query"]) for q in test_queries]
    num_clips = cfg["model"]["num_clips"]
    bounds = []
    for row, query in zip(rows, test_queries):
        moments = torch.tensor(row["moments"], dtype=torch.float64)  # [K, 3]
        assert 1 <= len(moments) <= 5
        assert (moments[:-1, 2] >= moments[1:, 2]).all()  # best first
        clips = moments[:, :2] * num_clips / query["duration"]  # moments lie on the config's N-clip grid
        assert torch.allclose(clips, clips.round(), atol=1e-6) and (clips >= 0).all() and (clips <= num_clips).all()
        bounds.append(clips.round().long().flatten())
    assert (torch.cat(bounds) % 2 == 1).any()  # ... and not on a coarser one: N itself was used
    resolved = load_config(tmp_path / "config.yaml")
    assert resolved["dataset"]["features"] == str(tiny_set.features) and resolved["model"]["hidden_dim"] == 8
