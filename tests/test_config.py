import pytest

from tal.config import apply_override, get, load_config, merge, save_config
from tal.errors import TalInputError
from tal.registry import Registry


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def configs(tmp_path):
    write(tmp_path / "base.yaml", "seed: 1\ndataset: {features: a.h5, num_clips: 16}\n"
                                  "model: {name: m, hidden: 64, layers: [1, 2]}\ntrain: {epochs: 5, lr: 0.001}\n")
    write(tmp_path / "child.yaml", "_base_: base.yaml\nmodel: {hidden: 128}\ntrain: {epochs: 2}\n")
    return tmp_path


def test_base_is_merged_deeply_and_child_wins(configs):
    cfg = load_config(configs / "child.yaml")
    assert cfg["model"] == {"name": "m", "hidden": 128, "layers": [1, 2]}
    assert cfg["train"] == {"epochs": 2, "lr": 0.001}
    assert cfg["dataset"]["features"] == "a.h5" and cfg["seed"] == 1
    assert cfg["eval"] == {}


def test_overrides_are_parsed_as_yaml(configs):
    cfg = load_config(configs / "child.yaml", ["train.lr=1e-4", "model.layers=[3, 4]", "seed=7",
                                               "dataset.features=/x/y.h5", "+model.extra.flag=true"])
    assert cfg["train"]["lr"] == 1e-4 and cfg["model"]["layers"] == [3, 4] and cfg["seed"] == 7
    assert cfg["dataset"]["features"] == "/x/y.h5"
    assert cfg["model"]["extra"] == {"flag": True}


def test_unknown_override_key_suggests_close_matches(configs):
    with pytest.raises(TalInputError, match=r"no key 'train.epoch'; did you mean train.epochs\?"):
        load_config(configs / "child.yaml", ["train.epoch=3"])
    with pytest.raises(TalInputError, match="expected key=value"):
        load_config(configs / "child.yaml", ["train.epochs"])


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(TalInputError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    write(tmp_path / "bad.yaml", "model: [unclosed\n")
    with pytest.raises(TalInputError, match=r"bad.yaml:2:1: malformed YAML: expected ',' or '\]'"):
        load_config(tmp_path / "bad.yaml")
    write(tmp_path / "typo.yaml", "modle: {}\n")
    with pytest.raises(TalInputError, match=r"unknown top-level keys \['modle'\]"):
        load_config(tmp_path / "typo.yaml")
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(TalInputError, match="_base_ cycle"):
        load_config(tmp_path / "a.yaml")


def test_save_round_trip(configs, tmp_path):
    cfg = load_config(configs / "child.yaml", ["train.lr=0.5"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert not (tmp_path / "resolved.yaml.tmp").exists()


def test_merge_and_get():
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}
    assert get({"a": {"b": 1}}, "a.b") == 1 and get({"a": {"b": 1}}, "a.x", 9) == 9
    cfg = {"a": 1}
    with pytest.raises(TalInputError, match="'a' is not a section"):
        apply_override(cfg, "a.b=2")


def test_registry_builds_by_name_and_lists_known_names():
    reg = Registry("model")

    @reg.register("double")
    def build(section, scale=1):
        return section["x"] * 2 * scale

    assert reg.build({"name": "double", "x": 3}, scale=2) == 12
    assert reg.names() == ["double"] and "double" in reg
    with pytest.raises(TalInputError, match=r"unknown model 'triple'; known: double"):
        reg.build({"name": "triple"})
    with pytest.raises(TalInputError, match="has no 'name' key"):
        reg.build({})
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("double")(build)


def test_heads_are_registered_by_name():
    import tal.models  # noqa: F401
    from tal.registry import MODELS

    assert {"2dtan", "a2net", "tcn"} <= set(MODELS.names())
    model = MODELS.build({"name": "a2net", "input_dim": 8, "num_classes": 3})
    assert type(model).__name__ == "A2Net"
