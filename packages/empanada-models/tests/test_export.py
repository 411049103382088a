"""BatchNorm folding, TorchScript export and eager-mode int8 quantization readiness."""

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import empanada_models as em
from empanada_models import _export
from empanada_models._builders import mitonet_v1, panoptic_deeplab
from empanada_models._export import export_torchscript, fuse_model


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and head weights, so that BN folding is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.1, 0.1, generator=generator)
        for name, p in model.named_parameters():
            if p.dim() > 1 and ("head" in name or "predictor" in name or "decoder" in name):
                p.normal_(0, (2.0 / p[0].numel()) ** 0.5, generator=generator)
    return model.eval()


def script(model: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(model)


def assert_outputs_close(actual, expected):
    assert list(actual) == list(expected)
    for key, value in expected.items():
        scale = float(value.abs().max())
        torch.testing.assert_close(actual[key], value, atol=1e-4 * scale, rtol=1e-4)


def small_model(arch, **overrides):
    """A small model of a catalogue architecture (both families' keys; the other's ignored)."""
    kwargs = {"encoder": "resnet18", "num_classes": 3, "decoder_channels": 64,
              "low_level_stages": [1], "low_level_channels_project": [32], "ins_decoder": True,
              "aspp_dropout": 0.5, "fpn_dim": 32, "fpn_layers": 2, **overrides}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ignoring MODEL keys", UserWarning)
        return em.build_model(arch, **kwargs)


def input_size(arch):
    return 128 if "BiFPN" in arch else 64  # BiFPN pads to multiples of 128


# Other encoders and options for some architectures, so both encoder families and
# dense BiFPN convs are exported too.
VARIANTS = {
    "PanopticDeepLab": {"encoder": "regnety_200mf", "decoder_channels": 32},
    "PanopticBiFPN": {"encoder": "regnety_200mf", "fpn_dim": 16, "depthwise": False},
}
# Every architecture of the catalogue: a new one is tested without editing this file.
BUILDERS = {arch: (lambda arch=arch: small_model(arch, **VARIANTS.get(arch, {})),
                   input_size(arch))
            for arch in em.ARCHITECTURES}


@pytest.fixture(scope="module", params=list(BUILDERS))
def triple(request):
    """(eager, scripted, fused and scripted) versions of one small model, and an input."""
    build, size = BUILDERS[request.param]
    torch.manual_seed(0)
    eager = randomise(build())
    x = torch.randn(2, 1, size, size)
    return eager, script(eager), script(fuse_model(eager)), x


@pytest.mark.parametrize("render_steps", [2, 3])
def test_scripted_and_fused_match_eager(triple, render_steps):
    eager, scripted, fused, x = triple
    with torch.no_grad():
        expected = eager(x, render_steps, True)
        assert_outputs_close(scripted(x, render_steps, True), expected)
        assert_outputs_close(fused(x, render_steps, True), expected)


def test_scripted_interpolate_ins_switch(triple):
    eager, _, fused, x = triple
    size = x.shape[-1]
    with torch.no_grad():
        full = fused(x, 2, True)
        quarter = fused(x, 2, False)
        expected = eager(x, 2, False)
    assert full["ctr_hmp"].shape[-2:] == (size, size)
    assert quarter["ctr_hmp"].shape[-2:] == (size // 4, size // 4)
    assert quarter["offsets"].shape == (2, 2, size // 4, size // 4)
    assert_outputs_close(quarter, expected)


def test_mitonet_v1_fused_script_matches_eager():
    torch.manual_seed(0)
    eager = randomise(mitonet_v1())
    fused = script(fuse_model(eager))
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert_outputs_close(fused(x, 2, True), eager(x, 2, True))


def test_fuse_model_folds_every_batchnorm_and_leaves_the_input_alone():
    model = BUILDERS["PanopticBiFPNPR"][0]().train()
    fused = fuse_model(model)
    assert not fused.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert model.training
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # the BiFPN fusion nodes still share one (now fused) block
    top_down = fused.semantic_fpn.bifpns[1].top_down_fpn
    assert all(block is top_down.after_combines[0] for block in top_down.after_combines)
    assert fuse_model(fused) is not fused  # fusing again is harmless


def test_fuse_model_rejects_foreign_modules():
    with pytest.raises(TypeError, match="fuse_model"):
        fuse_model(nn.Conv2d(1, 1, 3))


def test_fuse_method_refuses_training_mode():
    model = panoptic_deeplab(
        encoder="resnet18", low_level_stages=[1], low_level_channels_project=[8]
    )
    with pytest.raises(RuntimeError, match="model.eval"):
        model.fuse_model()


LOADER = textwrap.dedent(
    """
    import sys

    class NoEmpanada:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "empanada_models":
                raise ImportError("the exported file must not need empanada_models")

    sys.meta_path.insert(0, NoEmpanada())
    import warnings
    import torch

    warnings.simplefilter("ignore", DeprecationWarning)
    model = torch.jit.load(sys.argv[1], map_location="cpu")
    reference = torch.load(sys.argv[2])
    with torch.no_grad():
        out = model(reference["x"], 2, True)
        quarter = model(reference["x"], 2, False)
    for key in ("sem_logits", "ctr_hmp", "offsets"):
        torch.testing.assert_close(out[key], reference[key], atol=1e-5, rtol=1e-4)
    assert quarter["offsets"].shape[-1] * 4 == out["offsets"].shape[-1]
    assert "empanada_models" not in sys.modules
    print("ok")
    """
)


def test_exported_file_runs_with_plain_torch(tmp_path):
    build, size = BUILDERS["PanopticDeepLabPR"]
    torch.manual_seed(0)
    model = randomise(build())
    x = torch.randn(1, 1, size, size)
    with torch.no_grad():
        reference = dict(model(x, 2, True), x=x)
    path = tmp_path / "PanopticDeepLabPR_test.pth"
    scripted = export_torchscript(model, path)
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    torch.save(reference, tmp_path / "reference.pt")
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(path), str(tmp_path / "reference.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_export_replaces_atomically_and_cleans_up_on_failure(tmp_path, monkeypatch):
    model = BUILDERS["PanopticDeepLab"][0]()
    path = tmp_path / "model.pth"
    path.write_bytes(b"previous")

    def broken_save(module, target):
        with open(target, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(_export.torch.jit, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_torchscript(model, path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]
    monkeypatch.undo()

    export_torchscript(model, path, fuse=False)
    assert path.read_bytes() != b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_export_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="`model` must be an nn.Module"):
        export_torchscript("model", tmp_path / "m.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_torchscript(nn.Identity(), tmp_path / "missing" / "m.pth")


@pytest.mark.parametrize("name", [a for a in em.ARCHITECTURES if a.endswith("PR")])
def test_eager_int8_quantization_prepares_and_converts(name):
    # The int8 CPU model of the original: static post-training quantization of the
    # encoder/decoders/semantic+centre heads (PDL) or the encoder (BiFPN); offsets and
    # PointRend stay in float.
    from torch.ao.nn.quantized import Conv2d as QuantizedConv2d
    from torch.ao.quantization import convert, get_default_qconfig, prepare

    build, size = BUILDERS[name]
    torch.manual_seed(0)
    model = fuse_model(randomise(build()))
    for part in model.quantizable_submodules():
        getattr(model, part).qconfig = get_default_qconfig("x86")
    x = torch.randn(2, 1, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prepare(model, inplace=True)
        model(x)  # calibration
        convert(model, inplace=True)
        out = model(x, 2, False)
        scripted = script(model)
        scripted_out = scripted(x, 2, False)
    assert out["sem_logits"].shape[-1] == size
    assert out["offsets"].shape[-1] == size // 4
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
    assert_outputs_close(scripted_out, out)
    assert type(model.ins_xy.head[1]) is nn.Conv2d  # float
    assert type(model.semantic_pr.point_head.predictor) is nn.Conv1d  # float
    conv1 = model.encoder.layer1[0].conv1
    assert "quantized" in type(conv1).__module__
    if "DeepLab" in name:
        assert isinstance(model.semantic_head.head[1], QuantizedConv2d)


@pytest.mark.parametrize("fused", [True, False], ids=["exported", "original-style-unfused"])
def test_registry_loads_exported_files_unchanged(tmp_path, monkeypatch, fused):
    """Files from export_torchscript, and plain scripted modules as the original shipped
    them (same forward(x, render_steps, interpolate_ins) contract), load through the
    registry and give the eager model's outputs."""
    import empanada_models as em

    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    model = em.panoptic_deeplab_pr(encoder="resnet18").eval()
    path = tmp_path / "net.pth"
    em.export_torchscript(model, path, fuse=fused)
    config = {
        "model": str(path), "norms": {"mean": 0.57571, "std": 0.12765},
        "padding_factor": 16, "thing_list": [1], "labels": [1], "class_names": {1: "mito"},
    }
    em.register_model("Exported", config)
    loaded = em.load_model("Exported")
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ref = model(x, 2, True)
        got = loaded(x, 2, True)
    for key in ("sem_logits", "ctr_hmp", "offsets"):
        torch.testing.assert_close(got[key], ref[key], atol=1e-4, rtol=1e-4)
    info = em.model_info("Exported")
    assert info["num_params"] == em.count_parameters(em.fuse_model(model) if fused else model)
