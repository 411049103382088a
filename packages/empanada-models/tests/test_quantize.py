"""Eager-mode int8 quantization: conversion, agreement with float, export and registry."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized import Conv2d as QuantizedConv2d
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization.observer import ObserverBase

import empanada_models as em
import empanada_models as reg
from empanada_core.testing import data_path
from empanada_models import _quantize
from empanada_models._export import export_torchscript
from empanada_models._quantize import (
    calibration_batches_from_images,
    export_quantized_torchscript,
    quantize_model,
)

MEAN, STD = 0.57571, 0.12765  # MitoNet's norms

def small_model(arch, **overrides):
    """A small model of a catalogue architecture (both families' keys; the other's ignored)."""
    kwargs = {"encoder": "resnet18", "decoder_channels": 32, "low_level_stages": [1],
              "low_level_channels_project": [16], "ins_decoder": True, "fpn_dim": 32,
              "fpn_layers": 2, **overrides}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ignoring MODEL keys", UserWarning)
        return em.build_model(arch, **kwargs)


def input_size(arch):
    return 128 if "BiFPN" in arch else 64  # BiFPN pads to multiples of 128


# A RegNet encoder for plain Panoptic-DeepLab, so both encoder families are quantized.
VARIANTS = {"PanopticDeepLab": {"encoder": "regnety_200mf", "ins_decoder": False}}
# Every architecture of the catalogue: a new one is tested without editing this file.
BUILDERS = {arch: (lambda arch=arch: small_model(arch, **VARIANTS.get(arch, {})),
                   input_size(arch))
            for arch in em.ARCHITECTURES}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module's many small ops on one thread.

    On a shared 2-core machine, two OpenMP threads wait for each other at every op
    whenever another process takes a core: these tests then ran 4x slower (200 s)
    than on one thread. Results do not depend on the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def restore_engine():
    """quantize_model sets the process-wide quantized engine; put it back after each test."""
    engine = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = engine


def build(name, seed=0):
    torch.manual_seed(seed)
    factory, size = BUILDERS[name]
    return factory().eval(), size


def noise_batches(size, n=2, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 1, size, size, generator=generator) for _ in range(n)]


def run(model, x, *args):
    with torch.no_grad(), warnings.catch_warnings():
        # quantizing the input tensor warns about quantized tensors' deprecation
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        return model(x, *args)


def script(model):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.script.* is deprecated", DeprecationWarning)
        return torch.jit.script(model)


def is_quantized(module):
    where = type(module).__module__
    return where.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")) and (
        not isinstance(module, FloatFunctional)
    )


# --------------------------------------------------------------------------------------
# conversion


@pytest.mark.parametrize("name", list(BUILDERS))
def test_quantized_model_runs_scripts_and_keeps_the_contract(name):
    model, size = build(name)
    before = copy.deepcopy(model.state_dict())
    int8 = quantize_model(model, noise_batches(size))
    x = torch.randn(2, 1, size, size)
    expected = run(model, x, 2, True)
    out = run(int8, x, 2, True)
    assert list(out) == list(expected)
    for key, value in expected.items():
        assert out[key].shape == value.shape, key
        assert out[key].dtype == torch.float32, key
        assert torch.isfinite(out[key]).all(), key
    quarter = run(int8, x, 1, False)
    assert quarter["offsets"].shape[-1] == size // 4
    assert quarter["sem_logits"].shape[-1] == size // (2 if name.endswith("PR") else 1)
    # scripting keeps forward(x, render_steps: int, interpolate_ins: bool)
    scripted = script(int8)
    schema = str(scripted.forward.schema)
    assert "Tensor x, int render_steps=2, bool interpolate_ins=True" in schema, schema
    for args in [(2, True), (1, False)]:
        got = run(scripted, x, *args)
        for key, value in run(int8, x, *args).items():
            torch.testing.assert_close(got[key], value)
    # the float model is untouched (not fused, no observers, same weights)
    assert not any(is_quantized(m) for m in model.modules())
    assert not any(isinstance(m, ObserverBase) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["PanopticDeepLabPR", "PanopticBiFPNPR"])
def test_offsets_head_and_point_rend_stay_float(name):
    model, size = build(name)
    int8 = quantize_model(model, noise_batches(size, n=1))
    assert not any(is_quantized(m) for m in int8.ins_xy.modules())
    assert not any(is_quantized(m) for m in int8.semantic_pr.modules())
    assert type(int8.ins_xy.head[1]) is nn.Conv2d
    assert type(int8.semantic_pr.point_head.predictor) is nn.Conv1d
    assert is_quantized(int8.encoder.layer1[0].conv1)
    assert is_quantized(int8.quant)
    if "DeepLab" in name:
        assert isinstance(int8.semantic_head.head[1], QuantizedConv2d)
        assert isinstance(int8.ins_center.head[1], QuantizedConv2d)
        assert is_quantized(int8.semantic_decoder.aspp.project[0])
    else:  # Panoptic-BiFPN: only the encoder, as in the original
        assert not any(is_quantized(m) for m in int8.semantic_fpn.modules())
        assert type(int8.semantic_head.head[1]) is nn.Conv2d
    assert not any(isinstance(m, ObserverBase) for m in int8.modules())  # none left behind


def test_inplace_converts_the_model_itself():
    model, size = build("PanopticDeepLabPR")
    int8 = quantize_model(model, noise_batches(size, n=1), inplace=True)
    assert int8 is model
    assert is_quantized(model.encoder.layer1[0].conv1)


def test_generator_of_numpy_batches_and_already_fused_model():
    from empanada_models._export import fuse_model

    model, size = build("PanopticDeepLabPR")
    fused = fuse_model(model)
    batches = (b.numpy() for b in noise_batches(size, n=2))
    int8 = quantize_model(fused, batches)
    assert run(int8, torch.randn(1, 1, size, size))["sem_logits"].shape[-1] == size


def test_qnnpack_backend():
    assert "qnnpack" in torch.backends.quantized.supported_engines
    model, size = build("PanopticDeepLabPR")
    int8 = quantize_model(model, noise_batches(size), backend="qnnpack")
    assert torch.backends.quantized.engine == "qnnpack"
    out = run(int8, torch.randn(1, 1, size, size), 2, True)
    assert all(torch.isfinite(v).all() for v in out.values())
    # qnnpack's default qconfig quantizes weights per tensor, x86's per channel
    weight = int8.encoder.layer1[0].conv1.weight()
    assert weight.qscheme() == torch.per_tensor_affine
    x86 = quantize_model(model, noise_batches(size), backend="x86")
    assert torch.backends.quantized.engine == "x86"
    assert x86.encoder.layer1[0].conv1.weight().qscheme() == torch.per_channel_affine


def test_no_quantization_warnings_and_filters_unchanged():
    model, size = build("PanopticDeepLabPR")
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inner = list(warnings.filters)
        quantize_model(model, noise_batches(size, n=1))
        assert warnings.filters == inner
    assert warnings.filters == filters
    messages = [str(w.message) for w in caught]
    assert not any("torch.ao.quantization" in m or "quant_min" in m or "quantize_per" in m
                   for m in messages), messages


# --------------------------------------------------------------------------------------
# errors


def test_empty_calibration_is_refused_before_the_model_changes():
    model, _ = build("PanopticDeepLabPR")
    with pytest.raises(ValueError, match="`calibration` yielded no batches"):
        quantize_model(model, [], inplace=True)
    with pytest.raises(ValueError, match="no batches"):
        quantize_model(model, iter(()))
    assert not any(is_quantized(m) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # not even fused


def test_unknown_or_unavailable_backend(monkeypatch):
    model, size = build("PanopticDeepLabPR")
    with pytest.raises(ValueError, match=r"`backend` must be one of .*'qnnpack' for ARM"):
        quantize_model(model, noise_batches(size), backend="tensorrt")
    monkeypatch.setattr(_quantize, "_supported_engines", lambda: ["x86", "fbgemm"])
    with pytest.raises(ValueError, match="'qnnpack' is not available in this PyTorch build"):
        quantize_model(model, noise_batches(size), backend="qnnpack")


def test_bad_calibration_batches():
    model, size = build("PanopticDeepLabPR")
    with pytest.raises(TypeError, match="iterable of"):
        quantize_model(model, torch.zeros(1, 1, size, size))
    with pytest.raises(TypeError, match="batch 0 must be a torch.Tensor"):
        quantize_model(model, ["image"])
    with pytest.raises(TypeError, match="batch 0 must hold normalised floats"):
        quantize_model(model, [torch.zeros(1, 1, size, size, dtype=torch.uint8)])
    with pytest.raises(ValueError, match=r"batch 0 must have shape \(N, 1, H, W\)"):
        quantize_model(model, [torch.zeros(1, size, size)])
    with pytest.raises(ValueError, match="calibration batch 1: input height and width must be"):
        quantize_model(model, [torch.zeros(1, 1, size, size), torch.zeros(1, 1, 66, 66)])
    bifpn, _ = build("PanopticBiFPNPR")
    with pytest.raises(ValueError, match="batch 0: .*multiples of 128"):
        quantize_model(bifpn, [torch.zeros(1, 1, 64, 64)])


def test_not_a_model_and_already_quantized():
    with pytest.raises(TypeError, match="built by empanada_models"):
        quantize_model(nn.Conv2d(1, 1, 1), noise_batches(8))
    model, size = build("PanopticDeepLabPR")
    int8 = quantize_model(model, noise_batches(size, n=1))
    with pytest.raises(ValueError, match="already prepared for or converted to int8"):
        quantize_model(int8, noise_batches(size, n=1))


# --------------------------------------------------------------------------------------
# export and registry


def test_export_quantized_torchscript(tmp_path):
    model, size = build("PanopticDeepLabPR")
    path = tmp_path / "tiny_quantized.pth"
    scripted = export_quantized_torchscript(model, path, noise_batches(size))
    assert [p.name for p in tmp_path.iterdir()] == ["tiny_quantized.pth"]  # no temporaries
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.load.* is deprecated", DeprecationWarning)
        loaded = torch.jit.load(str(path))
    x = torch.randn(1, 1, size, size)
    for args in [(2, True), (0, False)]:
        expected = run(scripted, x, *args)
        got = run(loaded, x, *args)
        assert list(got) == ["sem_logits", "ctr_hmp", "offsets"]
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_quantized_torchscript(model, tmp_path / "missing" / "q.pth", noise_batches(size))


def test_registered_quantized_pair_loads_the_int8_model(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    model, size = build("PanopticDeepLabPR")
    float_file = tmp_path / "tiny.pth"
    int8_file = tmp_path / "tiny_quantized.pth"
    export_torchscript(model, float_file)
    export_quantized_torchscript(model, int8_file, noise_batches(size), backend="x86")
    config = {
        "model": "tiny.pth", "model_quantized": "tiny_quantized.pth",
        "norms": {"mean": MEAN, "std": STD}, "padding_factor": 16, "thing_list": [1],
        "labels": [1], "class_names": {1: "mito"}, "description": "tiny int8 test model",
    }
    cfg = reg.register_model("TinyQ", config, model_file=float_file, quantized_file=int8_file)
    assert cfg.sha256_quantized == reg.file_sha256(int8_file)
    int8 = reg.load_model("TinyQ", quantized=True)
    fp32 = reg.load_model("TinyQ")
    names = {m.original_name for m in int8.modules()}
    assert {"Quantize", "ConvReLU2d", "Conv1d"} <= names
    assert "Quantize" not in {m.original_name for m in fp32.modules()}
    x = torch.randn(1, 1, size, size)
    out, expected = run(int8, x, 2, True), run(fp32, x, 2, True)
    for key, value in expected.items():
        assert out[key].shape == value.shape
        assert torch.isfinite(out[key]).all()


# --------------------------------------------------------------------------------------
# calibration data


def test_calibration_batches_shapes_normalisation_and_determinism():
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 256, (5, 90, 70), dtype=np.uint8)
    image = np.full((80, 80), 51, np.uint8)
    batches = calibration_batches_from_images([volume, image], mean=0.5, std=0.25,
                                              patch_size=64, n_batches=3, batch_size=5)
    assert len(batches) == 3
    assert all(b.shape == (5, 1, 64, 64) and b.dtype == torch.float32 for b in batches)
    again = calibration_batches_from_images([volume, image], mean=0.5, std=0.25,
                                            patch_size=64, n_batches=3, batch_size=5)
    for a, b in zip(batches, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = calibration_batches_from_images([volume, image], mean=0.5, std=0.25,
                                            patch_size=64, n_batches=3, batch_size=5, seed=1)
    assert not torch.equal(torch.cat(batches), torch.cat(other))
    # uint8: (x / 255 - mean) / std, as the original; the constant image gives -1.2
    values = torch.cat(batches)
    assert torch.isclose(values, torch.tensor(-1.2)).all(dim=(1, 2, 3)).any()
    assert -2.0 - 1e-6 <= float(values.min()) <= float(values.max()) <= 2.0 + 1e-6
    # every crop is a window of one of the images
    windows = np.lib.stride_tricks.sliding_window_view(volume, (64, 64), axis=(1, 2))
    windows = windows.reshape(-1, 64, 64)
    for crop in values[:, 0].numpy():
        pixels = np.rint((crop * 0.25 + 0.5) * 255).astype(np.uint8)
        assert (pixels == 51).all() or (windows == pixels).all(axis=(1, 2)).any()


def test_calibration_batches_uint16_percentiles_and_dtype_mode():
    ramp = np.tile(np.arange(1000, 2000, dtype=np.uint16), (64, 1))[:, :1000]
    auto = calibration_batches_from_images(ramp, mean=0.5, std=0.5, patch_size=64,
                                           n_batches=2, batch_size=8)
    values = torch.cat(auto)
    # (0.5, 99.5) percentiles map to 0 and 1, clipped: values span about [-1, 1]
    assert -1.0 <= float(values.min()) <= float(values.max()) <= 1.0
    assert float(values.max()) - float(values.min()) > 0.1
    dtype = calibration_batches_from_images(ramp, mean=0.0, std=1.0, patch_size=64,
                                            n_batches=1, batch_size=4, mode="dtype")[0]
    assert 1000 / 65535 - 1e-6 <= float(dtype.min()) <= float(dtype.max()) <= 2000 / 65535 + 1e-6


@pytest.mark.parametrize(
    ("images", "kwargs", "error", "match"),
    [
        (np.zeros((64, 64), np.float32), {}, TypeError, "uint8 or uint16"),
        (np.zeros((2, 2, 64, 64), np.uint8), {}, ValueError, r"2D \(H, W\) or 3D"),
        ([], {}, ValueError, "`images` is empty"),
        ("image.tif", {}, TypeError, "`images` must be"),
        (np.zeros((64, 40), np.uint8), {}, ValueError, "smaller than `patch_size` 64"),
        (np.zeros((64, 64), np.uint8), {"n_batches": 0}, ValueError, "`n_batches`"),
        (np.zeros((64, 64), np.uint8), {"std": 0.0}, ValueError, "`std`"),
        (np.zeros((64, 64), np.uint8), {"mode": "minmax"}, ValueError, "`mode`"),
    ],
)
def test_calibration_batch_errors(images, kwargs, error, match):
    args = {"mean": 0.5, "std": 0.2, "patch_size": 64, **kwargs}
    with pytest.raises(error, match=match):
        calibration_batches_from_images(images, **args)


# --------------------------------------------------------------------------------------
# agreement with float on real EM


def realistic(name, images, masks, seed=0):
    """A model with realistic activations and a meaningful semantic head, without training.

    Untrained weights are random noise, so their outputs say nothing about quantization
    error on a real model. Without training we get closer in three steps:

    1. the decoders and heads get He-normal convs (their N(0, 0.001) init leaves
       BatchNorm inputs below its eps), and BatchNorm statistics are re-estimated on
       real EM crops (``images``), so every channel of every layer has the scale it
       would have on data (fused into the convs);
    2. the semantic head's last conv is a class-balanced least-squares probe that maps
       the features to the mitochondria masks (``masks``, at 1/4 resolution), so the
       logits are structured by image content with a realistic foreground fraction; the
       centre and offsets heads get unit-variance random projections;
    3. PointRend's predictor passes the coarse logit through, so refinement reproduces
       (float) bilinear upsampling instead of adding noise of its own.
    """
    torch.manual_seed(seed)
    model = small_model({"pdl": "PanopticDeepLabPR", "bifpn": "PanopticBiFPNPR"}[name])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # the decoders' and heads' N(0, 0.001) init would leave their BatchNorm inputs
        # below BatchNorm's eps; give them the gain of trained convs instead
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("encoder."):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (2.0 / fan_in) ** 0.5, generator=generator)
    # batch statistics in BatchNorm only (dropout stays off), averaged over all batches
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    with torch.no_grad():
        for batch in images.split(8):
            model(batch, 0, False)
    model.eval()
    features = []
    hook = model.semantic_head.head[1].register_forward_hook(
        lambda mod, args, out: features.append(args[0]))
    with torch.no_grad():
        model(images, 0, False)
    hook.remove()
    f = torch.cat(features).permute(0, 2, 3, 1).reshape(-1, features[0].shape[1])
    a = torch.cat([f, torch.ones(len(f), 1)], 1).double()
    target = (F.avg_pool2d(masks, 4).reshape(-1, 1) > 0.5).double()
    positive = float(target.mean())
    weight = torch.where(target > 0, 0.5 / positive, 0.5 / (1 - positive)).sqrt()
    solution = torch.linalg.lstsq(a * weight, (8 * target - 4) * weight).solution.float()
    with torch.no_grad():
        conv = model.semantic_head.head[1]
        conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape))
        conv.bias.copy_(solution[-1])
        for head in (model.ins_center, model.ins_xy):
            conv = head.head[1]
            conv.weight.normal_(0, conv.in_channels**-0.5, generator=generator)
            conv.bias.zero_()
        predictor = model.semantic_pr.point_head.predictor
        predictor.weight.zero_()
        predictor.bias.zero_()
        predictor.weight[:, -1, 0] = 1.0  # the last input channel is the coarse logit
    return model


@pytest.fixture(scope="module")
def lucchi():
    """Lucchi FIB-SEM: slices 0-31 shape the model, 32-47 calibrate, 48-63 evaluate."""
    tifffile = pytest.importorskip("tifffile")
    folder = data_path("lucchi_epfl_hippocampus")
    volume = tifffile.imread(folder / "images.tif")
    masks = tifffile.imread(folder / "mito_semantic.tif")
    rng = np.random.default_rng(0)

    def crops(first, last, n, size=128):
        x, y = [], []
        for _ in range(n):
            z = int(rng.integers(first, last))
            r, c = (int(rng.integers(s - size + 1)) for s in volume.shape[1:])
            x.append(volume[z, r : r + size, c : c + size])
            y.append(masks[z, r : r + size, c : c + size])
        x = (np.stack(x).astype(np.float32) / 255 - MEAN) / STD
        return torch.from_numpy(x[:, None]), torch.from_numpy(np.stack(y)[:, None] > 0).float()

    shape_x, shape_y = crops(0, 32, 24)
    test_x, _ = crops(48, 64, 12)
    calibration = calibration_batches_from_images(
        volume[32:48], mean=MEAN, std=STD, patch_size=128, n_batches=4, batch_size=4)
    return shape_x, shape_y, calibration, test_x


def agreement(float_out, int8_out):
    """Mask IoU of ``sigmoid(sem_logits) > 0.5`` and relative RMS errors of all outputs."""
    a, b = float_out["sem_logits"] > 0, int8_out["sem_logits"] > 0
    iou = float((a & b).sum()) / max(1.0, float((a | b).sum()))
    rel = {k: float((int8_out[k] - v).pow(2).mean().sqrt() / v.std()) for k, v in float_out.items()}
    return iou, rel


# Minimum mask IoU and maximum relative RMS error (rms(int8 - float) / std(float)) per
# output. Measured with this split on 5 model seeds (0-4; the test uses seed 0):
#
#                      mask IoU      sem_logits   ctr_hmp      offsets
#   PDL-PR   x86       0.776-0.824   0.24-0.28    0.29-0.36    0.24-0.34
#   PDL-PR   qnnpack   0.778-0.839   0.21-0.28    0.28-0.32    0.23-0.31
#   BiFPN-PR x86       0.826-0.860   0.16-0.23    0.18-0.24    0.12-0.21
#   BiFPN-PR qnnpack   0.843-0.869   0.16-0.21    0.16-0.23    0.11-0.19
#
# Negative controls on the seed-0 models (x86), which fail the thresholds: calibrating
# on un-normalised [0, 1] crops gives IoU 0.18 (PDL) / 0.29 (BiFPN) and errors of
# 0.97-1.18; on crops at half their scale IoU 0.58 / 0.57 and errors of 0.56-0.80.
# Calibrating on Gaussian noise instead of EM is borderline: PDL fails (offsets 0.43),
# BiFPN passes (IoU 0.79, errors up to 0.28).
THRESHOLDS = {
    "pdl": {"iou": 0.70, "sem_logits": 0.36, "ctr_hmp": 0.45, "offsets": 0.42},
    "bifpn": {"iou": 0.75, "sem_logits": 0.30, "ctr_hmp": 0.32, "offsets": 0.30},
}


@pytest.mark.realdata
@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
@pytest.mark.parametrize("name", ["pdl", "bifpn"])
def test_int8_agrees_with_float_on_real_em(lucchi, name, backend):
    """int8 vs float on held-out Lucchi crops, after calibrating on other Lucchi slices.

    The model is :func:`realistic` (random weights made data-shaped, see there): 12 crops
    of 128 x 128 from slices 48-63 are compared after calibrating on 4 batches of 4 crops
    from slices 32-47. The tolerances (``THRESHOLDS``, measured values next to them) are
    loose because the encoder weights are still random: a random deep network amplifies
    the int8 rounding of each layer, so the error grows from about 2 % after the stem to
    about 18 % after ResNet-18's last stage, where trained networks (smooth, redundant
    features) typically keep a few per cent. They still catch calibration on wrongly
    normalised data, missing calibration and a quantized offsets head or PointRend
    reading garbage. The agreement of a trained MitoNet must be measured when its
    weights exist (``benchmarks/models.py`` prints it).
    """
    shape_x, shape_y, calibration, test_x = lucchi
    model = realistic(name, shape_x, shape_y)
    int8 = quantize_model(model, calibration, backend=backend)
    iou, rel = agreement(run(model, test_x, 2, True), run(int8, test_x, 2, True))
    limits = THRESHOLDS[name]
    assert iou >= limits["iou"], (iou, rel)
    for key, value in rel.items():
        assert value <= limits[key], (key, iou, rel)
