import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import empanada_models as em
from empanada_train._config import FINETUNE_LAYERS, TrainConfigError
from empanada_train._finetune import finetune, trainable_model
from empanada_train._loop import set_trainable_layers

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
STAGES = {"resnet18": ["layer1", "layer2", "layer3", "layer4"],
          "regnety_200mf": ["stage1", "stage2", "stage3", "stage4"]}
TINY = {"encoder": "regnety_200mf", "num_classes": 1, "stage4_stride": 32,
        "decoder_channels": 32, "low_level_stages": [1], "low_level_channels_project": [16],
        "ins_decoder": True, "train_num_points": 128, "subdivision_num_points": 512}


def write_blob_dataset(root, n=4, size=64, seed=0):
    rng = np.random.default_rng(seed)
    (root / "src" / "images").mkdir(parents=True)
    (root / "src" / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = rng.normal(190, 10, (size, size))
        mask = np.zeros((size, size), np.uint32)
        for k in range(3):
            cy, cx = rng.integers(14, size - 14, 2)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(25, 80)
            mask[blob & (mask == 0)] = k + 1
            image[blob] -= 110
        tifffile.imwrite(root / "src" / "images" / f"im{i}.tif",
                         np.clip(image, 0, 255).astype(np.uint8))
        tifffile.imwrite(root / "src" / "masks" / f"im{i}.tif", mask)
    return root


def register_tiny(folder, name, *, model_block=True):
    """A small PDL-PR model exported as TorchScript and registered (like a user model)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = em.build_model("PanopticDeepLabPR", **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        em.export_torchscript(model, folder / f"{name}.pth")
    config = {"model": f"{name}.pth", "norms": {"mean": 0.5, "std": 0.2}, "padding_factor": 32,
              "thing_list": [1], "labels": [1], "class_names": {1: "blob"},
              "description": "tiny test model",
              "FINETUNE": {"criterion": "PanopticLoss",
                           "criterion_params": {"ce_weight": 1, "mse_weight": 200,
                                                "l1_weight": 0.01, "pr_weight": 1,
                                                "top_k_percent": 0.2},
                           "dataset_class": "SingleClassInstanceDataset",
                           "dataset_params": {"weight_gamma": 0.7},
                           "engine": "PanopticDeepLabEngine",
                           "engine_params": {"label_divisor": 1000, "nms_kernel": 7,
                                             "nms_threshold": 0.1, "stuff_area": 64,
                                             "thing_list": [1], "confidence_thr": 0.5}}}
    if model_block:
        config["arch"] = "PanopticDeepLabPR"
        config["MODEL"] = {"arch": "PanopticDeepLabPR", **TINY}
    path = folder / f"{name}.yaml"
    em.ModelConfig.from_dict(config, name=name).to_yaml(path)
    return em.register_model(name, path)


def _expected_trainable(names, encoder, layers):
    stages = STAGES[encoder]
    if layers == "all":
        open_stages = None
    elif layers == "none":
        open_stages = []
    else:
        open_stages = stages[int(layers[-1]) - 1:]
    out = set()
    for n in names:
        if not n.startswith("encoder."):
            out.add(n)
        elif open_stages is None or any(n.startswith(f"encoder.{s}.") for s in open_stages):
            out.add(n)
    return out


def _grads(model, layers):
    info = set_trainable_layers(model, layers)
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(2, 1, 64, 64), 2, True)
    sum(v.float().sum() for v in out.values()).backward()
    return info, {n for n, p in model.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------- freezing


@pytest.mark.parametrize("encoder", ["resnet18", "regnety_200mf"])
def test_finetunable_layers_freeze_what_they_name(encoder):
    torch.manual_seed(0)
    model = em.build_model("PanopticDeepLab", encoder=encoder, stage4_stride=32,
                           decoder_channels=16, low_level_stages=[1],
                           low_level_channels_project=[8])
    names = [n for n, _ in model.named_parameters()]
    for layers in FINETUNE_LAYERS:
        info, with_grad = _grads(model, layers)
        expected = _expected_trainable(names, encoder, layers)
        assert with_grad == expected, layers
        assert set(info["trainable_names"]) == expected
        # the stem and the stages before N never train unless 'all'
        stem = [n for n in names if n.startswith("encoder.")
                and not any(n.startswith(f"encoder.{s}.") for s in STAGES[encoder])]
        assert stem
        assert (layers == "all") == all(n in with_grad for n in stem)
    # 'stage4' of a ResNet trains layer4 (the original's stage names froze everything)
    _, with_grad = _grads(model, "stage4")
    assert any(n.startswith(f"encoder.{STAGES[encoder][3]}.") for n in with_grad)
    assert not any(n.startswith(f"encoder.{STAGES[encoder][2]}.") for n in with_grad)


def test_frozen_batchnorm_keeps_its_statistics():
    from empanada_train._loop import train_mode

    model = em.build_model("PanopticDeepLab", encoder="resnet18", stage4_stride=32,
                           decoder_channels=16, low_level_stages=[1],
                           low_level_channels_project=[8])
    set_trainable_layers(model, "stage4")
    train_mode(model)
    assert not model.encoder.layer1[0].bn1.training
    assert model.encoder.layer4[0].bn1.training
    assert model.semantic_decoder.training
    before = model.encoder.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 1, 64, 64))
    assert torch.equal(before, model.encoder.layer1[0].bn1.running_mean)


def test_torchscript_modules_train_and_freeze(tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        em.export_torchscript(em.build_model("PanopticDeepLabPR", **TINY), tmp_path / "m.pth")
        script = torch.jit.load(str(tmp_path / "m.pth"))
    script.train()
    out = script(torch.randn(2, 1, 64, 64), 2, True)
    assert {"sem_points", "point_coords"} <= set(out)  # training outputs of PointRend
    names = [n for n, _ in script.named_parameters()]
    # BatchNorm folding leaves conv biases with requires_grad=False; they train too
    assert any(not p.requires_grad for p in script.parameters())
    for layers in ("none", "stage2", "all"):
        _, with_grad = _grads(script, layers)
        assert with_grad == _expected_trainable(names, "regnety_200mf", layers), layers
    assert with_grad == set(names)


# ------------------------------------------------------------------ finetuning


def _state(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path)).state_dict()


def test_finetune_a_registered_model_with_the_example_config(tmp_path, home):
    base = register_tiny(tmp_path / "base", "Tiny")
    data = write_blob_dataset(tmp_path / "data")
    model, kind = trainable_model(base)
    assert kind == "eager"
    result = finetune("Tiny", data, config=CONFIGS / "finetune_example.yaml", name="TinyFt",
                      eval_dir=data, model_dir=tmp_path / "out", iterations=3, batch_size=2,
                      patch_size=64, finetunable_layers="stage4", quantize=True)
    assert result.iterations == 3
    assert result.model_path.is_file()
    assert "eager architecture" in result.notes[0]
    assert result.best["metric"] == "f1_50"  # from the example config
    old, new = _state(em.fetch_model_file(base)), _state(result.model_path)
    assert old.keys() == new.keys()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed
    assert all(k.startswith("encoder.stage4.") or not k.startswith("encoder.")
                           for k in changed)
    assert any(k.startswith("encoder.stage4.") for k in changed)
    assert any(k.startswith("semantic_decoder.") for k in changed)
    # the new registry entry keeps the base model's classes and settings
    config = em.get_model_config("TinyFt")
    assert config.labels == (1,)
    assert config.norms == base.norms
    assert config.padding_factor == 32
    assert config.arch_params == base.arch_params
    assert config.finetune["dataset_params"]["weight_gamma"] == 0.3  # the example config's
    if result.quantized_path is not None:  # int8 export present in empanada-models
        assert config.model_quantized is not None
        q = em.load_model("TinyFt", quantized=True)(torch.zeros(1, 1, 64, 64), 2, True)
        assert q["sem_logits"].shape == (1, 1, 64, 64)
    out = em.load_model("TinyFt")(torch.zeros(1, 1, 64, 64), 2, True)
    assert out["sem_logits"].shape == (1, 1, 64, 64)


def test_finetune_a_torchscript_only_model(tmp_path, home):
    register_tiny(tmp_path / "base", "Plain", model_block=False)
    data = write_blob_dataset(tmp_path / "data")
    result = finetune("Plain", data, model_dir=tmp_path / "out", iterations=2, batch_size=2,
                      patch_size=64, quantize=True)
    assert result.model_name == "Plain_finetuned"
    assert "TorchScript module" in result.notes[0]
    assert any("no int8 model" in note for note in result.notes)
    old, new = _state(em.fetch_model_file(em.get_model_config("Plain"))), \
        _state(result.model_path)
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed
    assert not any(k.startswith("encoder.") for k in changed)
    assert em.get_model_config("Plain_finetuned").finetune["criterion"] == "PanopticLoss"


def test_finetune_errors(tmp_path, home):
    register_tiny(tmp_path / "base", "Tiny")
    data = write_blob_dataset(tmp_path / "data")
    with pytest.raises(em.ModelNotFoundError):
        finetune("NoSuchModel", data)
    with pytest.raises(TrainConfigError, match="cannot set `DATASET`"):
        finetune("Tiny", data, config={"DATASET": {"labels": [1, 2]}})
    with pytest.raises(TrainConfigError, match="patch_size` 48 must be a multiple of 32"):
        finetune("Tiny", data, patch_size=48, batch_size=2, register=False)
    with pytest.raises(ValueError, match="fewer than the batch size"):
        finetune("Tiny", data, register=False)  # 4 images, batch 16
    with pytest.raises(TrainConfigError, match="finetune_layer"):
        finetune("Tiny", data, finetunable_layers="stage5", batch_size=2, register=False)
    with pytest.raises(FileNotFoundError, match="TRAIN.train_dir"):
        finetune("Tiny", tmp_path / "nope", register=False)
