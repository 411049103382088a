"""Model config schema: validation, round trips, compatibility with the original files."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from empanada_models._config import ConfigError, ModelConfig, Norms

BUILTIN = Path(__file__).resolve().parents[1] / "src" / "empanada_models" / "configs"

# A config as the original empanada-napari writes it after training (keys and types).
ORIGINAL = {
    "model": "/data/models/PanopticBiFPNPR_mine.pth",
    "model_quantized": None,
    "norms": {"mean": 0.57571, "std": 0.12765},
    "padding_factor": 128,
    "thing_list": [1],
    "labels": [1, 2],
    "class_names": {1: "mito", 2: "er"},
    "description": "trained in the GUI\n",
    "FINETUNE": {
        "criterion": "PanopticLoss",
        "criterion_params": {"ce_weight": 1, "l1_weight": 0.01, "mse_weight": 200,
                             "pr_weight": 1, "top_k_percent": 0.2},
        "dataset_class": "PanopticDataset",
        "dataset_params": {"labels": [1, 2], "thing_list": [1], "label_divisor": 1000,
                           "weight_gamma": 0.7},
        "engine": "PanopticDeepLabEngine",
        "engine_params": {"confidence_thr": 0.5, "label_divisor": 1000, "nms_kernel": 7,
                          "nms_threshold": 0.1, "stuff_area": 64, "thing_list": [1],
                          "void_label": 0},
    },
}


def minimal(**changes):
    d = {"model": "m.pth", "norms": {"mean": 0.5, "std": 0.1}, "padding_factor": 16,
         "thing_list": [1], "labels": [1], "class_names": {1: "mito"}}
    d.update(changes)
    return d


def write(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("name", "padding"), [("MitoNet_v1", 16), ("MitoNet_v1_mini", 128)])
def test_builtin_configs_parse(name, padding):
    cfg = ModelConfig.from_yaml(BUILTIN / f"{name}.yaml")
    assert cfg.name == name
    assert cfg.padding_factor == padding
    assert cfg.norms == Norms(0.57571, 0.12765)
    assert cfg.model == f"https://zenodo.org/record/6861565/files/{name}.pth?download=1"
    assert cfg.model_quantized.endswith(f"/{name}_quantized.pth?download=1")
    assert cfg.thing_list == (1,)
    assert dict(cfg.class_names) == {1: "mito"}
    assert cfg.label_divisor == 1000
    assert cfg.finetune["dataset_class"] == "SingleClassInstanceDataset"


def test_original_config_round_trips_unchanged(tmp_path):
    cfg = ModelConfig.from_yaml(write(tmp_path, ORIGINAL))
    assert cfg.to_dict() == ORIGINAL
    out = cfg.to_yaml(tmp_path / "out.yaml")
    back = yaml.safe_load(out.read_text())
    assert back == ORIGINAL
    # the same keys and types the original reads
    assert isinstance(back["norms"]["mean"], float)
    assert all(isinstance(k, int) for k in back["class_names"])
    assert ModelConfig.from_yaml(out, name=cfg.name) == cfg


def test_unknown_keys_are_kept_and_written_back(tmp_path):
    data = minimal(custom_key={"a": [1, 2]}, another="x")
    cfg = ModelConfig.from_yaml(write(tmp_path, data))
    assert dict(cfg.extra) == {"custom_key": {"a": [1, 2]}, "another": "x"}
    back = yaml.safe_load(cfg.to_yaml(tmp_path / "o.yaml").read_text())
    assert back["custom_key"] == {"a": [1, 2]}
    assert back["another"] == "x"


def test_optional_fields_and_arch(tmp_path):
    digest = "AB" * 32
    cfg = ModelConfig.from_dict(minimal(sha256=digest, arch="PanopticBiFPNPR",
                                        MODEL={"arch": "PanopticBiFPNPR", "fpn_dim": 128}),
                                name="x")
    assert cfg.sha256 == digest.lower()
    assert cfg.arch == "PanopticBiFPNPR"
    assert cfg.arch_params["fpn_dim"] == 128
    d = cfg.to_dict()
    assert d["MODEL"] == {"arch": "PanopticBiFPNPR", "fpn_dim": 128}
    assert d["model_quantized"] is None
    assert d["description"] == ""
    assert "FINETUNE" not in d


def test_old_list_form_of_class_names_is_converted():
    cfg = ModelConfig.from_dict(minimal(labels=[2, 1], thing_list=[1],
                                        class_names=["mito", "er"]), name="x")
    assert dict(cfg.class_names) == {1: "mito", 2: "er"}
    assert cfg.to_dict()["class_names"] == {1: "mito", 2: "er"}


def test_string_class_ids_are_converted():
    cfg = ModelConfig.from_dict(minimal(class_names={"1": "mito"}), name="x")
    assert dict(cfg.class_names) == {1: "mito"}


def test_integral_norms_become_floats():
    cfg = ModelConfig.from_dict(minimal(norms={"mean": 0, "std": 1}), name="x")
    assert cfg.norms == Norms(0.0, 1.0)
    assert isinstance(cfg.to_dict()["norms"]["std"], float)


def test_label_divisor_sources():
    ft = {"engine_params": {"label_divisor": 20000}}
    assert ModelConfig.from_dict(minimal(FINETUNE=ft), name="x").label_divisor == 20000
    ft = {"dataset_params": {"label_divisor": 500}}
    assert ModelConfig.from_dict(minimal(FINETUNE=ft), name="x").label_divisor == 500
    assert ModelConfig.from_dict(minimal(), name="x").label_divisor == 1000


def test_config_is_frozen_and_hashable():
    cfg = ModelConfig.from_dict(minimal(), name="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model = "other.pth"
    with pytest.raises(TypeError):
        cfg.class_names[2] = "er"
    assert hash(cfg) == hash(ModelConfig.from_dict(minimal(), name="x"))


def test_to_yaml_is_atomic_and_leaves_no_temporary_files(tmp_path):
    cfg = ModelConfig.from_dict(minimal(), name="x")
    target = tmp_path / "x.yaml"
    target.write_text("old")
    cfg.to_yaml(target)
    assert [p.name for p in tmp_path.iterdir()] == ["x.yaml"]
    assert yaml.safe_load(target.read_text())["model"] == "m.pth"


def test_to_yaml_failure_keeps_the_old_file(tmp_path, monkeypatch):
    cfg = ModelConfig.from_dict(minimal(), name="x")
    target = tmp_path / "x.yaml"
    target.write_text("old")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(yaml, "safe_dump", lambda *a, **k: "new: 1\n")
    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        cfg.to_yaml(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.yaml"]


BAD = [
    ({"model": None}, "`model`"),
    ({"model": ""}, "`model`"),
    ({"model_quantized": 3}, "`model_quantized`"),
    ({"norms": {"mean": 0.5}}, "`norms`"),
    ({"norms": {"mean": "a", "std": 0.1}}, "`norms.mean`"),
    ({"norms": {"mean": 0.5, "std": 0.0}}, "`norms.std`"),
    ({"norms": [0.5, 0.1]}, "`norms`"),
    ({"padding_factor": 0}, "`padding_factor`"),
    ({"padding_factor": 16.0}, "`padding_factor`"),
    ({"padding_factor": True}, "`padding_factor`"),
    ({"labels": 1}, "`labels`"),
    ({"labels": [1, 1]}, "`labels`"),
    ({"labels": [0], "thing_list": [], "class_names": {0: "bg"}}, r"`labels\[0\]`"),
    ({"thing_list": [2]}, "`thing_list`"),
    ({"thing_list": ["1"]}, r"`thing_list\[0\]`"),
    ({"class_names": {1: "mito", 2: "er"}}, "`class_names`"),
    ({"class_names": {1: 5}}, r"`class_names\[1\]`"),
    ({"class_names": "mito"}, "`class_names`"),
    ({"class_names": ["a", "b"]}, "`class_names`"),
    ({"description": 5}, "`description`"),
    ({"FINETUNE": [1]}, "`FINETUNE`"),
    ({"MODEL": "x"}, "`MODEL`"),
    ({"arch": 3}, "`arch`"),
    ({"sha256": "abc"}, "`sha256`"),
    ({"sha256_quantized": "z" * 64}, "`sha256_quantized`"),
]


@pytest.mark.parametrize(("change", "key"), BAD)
def test_wrong_values_name_the_file_and_key(tmp_path, change, key):
    path = write(tmp_path, minimal(**change))
    with pytest.raises(ConfigError, match=key) as info:
        ModelConfig.from_yaml(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("key", ["model", "norms", "padding_factor", "thing_list", "labels",
                                 "class_names"])
def test_missing_required_key(tmp_path, key):
    data = minimal()
    del data[key]
    path = write(tmp_path, data)
    with pytest.raises(ConfigError, match=f"missing required key.*`{key}`") as info:
        ModelConfig.from_yaml(path)
    assert str(path) in str(info.value)


def test_from_dict_error_names_the_model():
    with pytest.raises(ConfigError, match="model config 'mine'.*`padding_factor`"):
        ModelConfig.from_dict(minimal(padding_factor=-1), name="mine")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        ModelConfig.from_yaml(path)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not a valid YAML file"):
        ModelConfig.from_yaml(path)


def test_python_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not a valid YAML file"):
        ModelConfig.from_yaml(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ModelConfig.from_yaml(tmp_path / "nope.yaml")


def test_non_plain_values_are_refused():
    with pytest.raises(ConfigError, match="plain YAML types"):
        ModelConfig.from_dict(minimal(FINETUNE={"x": object()}), name="x")


def test_extra_must_not_repeat_schema_keys():
    cfg = ModelConfig.from_dict(minimal(), name="x")
    with pytest.raises(ConfigError, match="schema keys"):
        dataclasses.replace(cfg, extra={"model": "y"})


def test_importing_config_does_not_import_torch():
    code = ("import sys, empanada_models; before = 'torch' in sys.modules; "
            "import empanada_models._config, empanada_models._registry, "
            "empanada_models._catalogue, empanada_models._home, empanada_models._download, "
            "empanada_models._info, empanada_models._torchscript, "
            "empanada_models._bundle, empanada_models.cli; "
            "print(before, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    # a regression in either place fails (it used to skip when `import empanada_models`
    # itself imported torch, which is the regression this test is for)
    assert out[0] == "False", "`import empanada_models` imports torch"
    assert out[1] == "False", "the config, registry, bundle or cli modules import torch"


ids = st.lists(st.integers(1, 50), min_size=1, max_size=5, unique=True)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@st.composite
def configs(draw):
    labels = draw(ids)
    things = draw(st.lists(st.sampled_from(labels), unique=True))
    return {
        "model": draw(st.sampled_from(["a.pth", "/abs/b.pth", "https://x.org/c.pth?d=1"])),
        "model_quantized": draw(st.none() | st.just("q.pth")),
        "norms": {"mean": draw(st.floats(-1, 1)), "std": draw(st.floats(0.001, 1))},
        "padding_factor": draw(st.integers(1, 1024)),
        "thing_list": things,
        "labels": labels,
        "class_names": {k: draw(text) for k in labels},
        "description": draw(text),
        "FINETUNE": {"engine_params": {"label_divisor": draw(st.integers(1, 10**6))}},
        "free": draw(st.dictionaries(st.text("abc", min_size=1, max_size=3),
                                     st.integers() | text, max_size=3)),
    }


@settings(max_examples=40, deadline=None)
@given(configs())
def test_yaml_round_trip_property(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("rt") / "c.yaml"
    cfg = ModelConfig.from_dict(data, name="c")
    cfg.to_yaml(path)
    back = ModelConfig.from_yaml(path)
    assert back == cfg
    assert yaml.safe_load(path.read_text()) == data
