"""Architectures: encoders, Panoptic-DeepLab / Panoptic-BiFPN (+ PointRend), builders, weights."""

import gzip
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from empanada_models._builders import (
    build_model,
    count_parameters,
    load_encoder_weights,
    load_model_weights,
    mitonet_v1,
    mitonet_v1_mini,
    panoptic_bifpn,
    panoptic_bifpn_pr,
    panoptic_deeplab,
    panoptic_deeplab_pr,
)
from empanada_models._encoders import (
    _ENCODERS,
    BasicBlock,
    ResNet,
    build_encoder,
    list_encoders,
    register_encoder,
    regnet_widths,
)
from empanada_models._pointrend import (
    PointRendSemSegHead,
    most_uncertain_cells,
    point_sample,
    uncertainty,
)

DATA = Path(__file__).parent / "data"


def small_pdl_pr(**kwargs):
    options = dict(
        encoder="resnet18",
        low_level_stages=[1],
        low_level_channels_project=[32],
        decoder_channels=64,
        ins_decoder=True,
    )
    options.update(kwargs)
    return panoptic_deeplab_pr(**options)


def small_bifpn_pr(**kwargs):
    options = dict(encoder="resnet18", fpn_dim=32, fpn_layers=2, ins_decoder=True)
    options.update(kwargs)
    return panoptic_bifpn_pr(**options)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN statistics and heads non-trivial values, so comparisons are meaningful."""
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
    return model


# --------------------------------------------------------------------------------------
# encoders


def test_registry_lists_resnets_and_regnets():
    names = list_encoders()
    for name in ("resnet18", "resnet34", "resnet50", "regnety_200mf", "regnety_800mf"):
        assert name in names
    assert names == sorted(names)


def test_registering_a_duplicate_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("resnet50")(lambda **kw: None)


def test_registered_encoder_is_buildable():
    @register_encoder("tiny_test_resnet")
    def tiny(*, output_stride=32, in_channels=1):
        return ResNet(BasicBlock, [1, 1, 1, 1], output_stride=output_stride)

    try:
        model = panoptic_deeplab(
            encoder="tiny_test_resnet", low_level_stages=[1], low_level_channels_project=[8]
        )
        assert model.encoder.widths == [64, 128, 256, 512]
    finally:
        _ENCODERS.pop("tiny_test_resnet")


def test_unknown_encoder_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered encoders: .*resnet50"):
        build_encoder("resnet51")


@pytest.mark.parametrize("stride", [8, 64])
def test_output_stride_must_be_16_or_32(stride):
    with pytest.raises(ValueError, match="`output_stride` must be 16 or 32"):
        build_encoder("resnet18", output_stride=stride)


@pytest.mark.parametrize(
    ("name", "stride", "channels", "sizes"),
    [
        ("resnet18", 32, [64, 64, 128, 256, 512], [16, 16, 8, 4, 2]),
        ("resnet18", 16, [64, 64, 128, 256, 512], [16, 16, 8, 4, 4]),
        ("regnety_200mf", 32, [32, 24, 56, 152, 368], [32, 16, 8, 4, 2]),
        ("regnety_200mf", 16, [32, 24, 56, 152, 368], [32, 16, 8, 4, 4]),
    ],
)
def test_encoder_pyramid(name, stride, channels, sizes):
    encoder = build_encoder(name, output_stride=stride).eval()
    with torch.no_grad():
        pyramid = encoder(torch.zeros(1, 1, 64, 64))
    assert [p.shape[1] for p in pyramid] == channels
    assert [p.shape[-1] for p in pyramid] == sizes
    assert encoder.widths == channels[1:]


def test_os16_dilates_every_layer4_block_including_the_first():
    encoder = build_encoder("resnet50", output_stride=16)
    for block in encoder.layer4:
        assert block.conv2.dilation == (2, 2)
        assert block.conv2.stride == (1, 1)
    assert encoder.layer4[0].downsample[0].stride == (1, 1)


def test_regnet_design_equations():
    # regnety_6p4gf as derived in the research notes
    assert regnet_widths(25, 112, 33.22, 2.27, 72) == (
        [144, 288, 576, 1296],
        [2, 7, 14, 2],
        [2, 4, 8, 18],
    )


def test_regnet_squeeze_excite_is_a_per_pixel_gate():
    encoder = build_encoder("regnety_6p4gf")
    se = encoder.stage1.block1.bottleneck.se
    x = torch.randn(1, se.se[0].in_channels, 3, 3)
    with torch.no_grad():
        out = se(x)
        # each pixel is gated by its own features: changing one leaves the others alone
        x2 = x.clone()
        x2[..., 0, 0] += 5
        out2 = se(x2)
    assert torch.equal(out[..., 1:, :], out2[..., 1:, :])


# --------------------------------------------------------------------------------------
# parameter counts and original layouts


def test_mitonet_v1_parameter_count():
    assert count_parameters(mitonet_v1()) == 55_158_486


def test_mitonet_v1_mini_parameter_count_counts_shared_blocks_once():
    model = mitonet_v1_mini()
    assert count_parameters(model) == 27_350_786
    top_down = model.semantic_fpn.bifpns[0].top_down_fpn
    assert all(block is top_down.after_combines[0] for block in top_down.after_combines)


def _original_shapes():
    with gzip.open(DATA / "original_state_dict_shapes.json.gz", "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("builder", [mitonet_v1, mitonet_v1_mini])
def test_state_dict_layout_matches_the_original(builder):
    # key names and shapes of the original empanada modules, recorded from empanada 1.2.4
    # (in the same order, which optimizer states saved by the original rely on)
    expected = [(key, shape) for key, shape in _original_shapes()[builder.__name__]]
    ours = [(key, list(t.shape)) for key, t in builder().state_dict().items()]
    assert ours == expected


# --------------------------------------------------------------------------------------
# forward contract


@pytest.mark.parametrize("num_classes", [1, 3])
def test_pdl_pr_eval_outputs(num_classes):
    model = small_pdl_pr(num_classes=num_classes).eval()
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        out = model(x)
        quarter = model(x, 2, False)
        coarse = model(x, render_steps=0)
        fine = model(x, render_steps=3)
    assert list(out) == ["sem_logits", "ctr_hmp", "offsets"]
    assert out["sem_logits"].shape == (2, num_classes, 64, 96)
    assert out["ctr_hmp"].shape == (2, 1, 64, 96)
    assert out["offsets"].shape == (2, 2, 64, 96)
    assert quarter["ctr_hmp"].shape == (2, 1, 16, 24)
    assert quarter["offsets"].shape == (2, 2, 16, 24)
    assert torch.equal(quarter["sem_logits"], out["sem_logits"])
    assert coarse["sem_logits"].shape == (2, num_classes, 16, 24)
    assert fine["sem_logits"].shape == (2, num_classes, 128, 192)


def test_pdl_pr_train_outputs_include_point_predictions():
    model = small_pdl_pr(num_classes=3, train_num_points=100).train()
    out = model(torch.randn(2, 1, 64, 64))
    assert out["sem_logits"].shape == (2, 3, 64, 64)
    assert out["sem_points"].shape == (2, 3, 100)
    assert out["point_coords"].shape == (2, 100, 2)
    assert 0 <= out["point_coords"].min()
    assert out["point_coords"].max() <= 1
    sum(v.sum() for k, v in out.items() if k != "point_coords").backward()
    assert model.semantic_pr.point_head.predictor.weight.grad is not None


def test_bifpn_pr_outputs():
    model = small_bifpn_pr(num_classes=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 128, 256))
        quarter = model(torch.randn(1, 1, 128, 256), 1, False)
    assert out["sem_logits"].shape == (1, 2, 128, 256)
    assert out["offsets"].shape == (1, 2, 128, 256)
    assert quarter["sem_logits"].shape == (1, 2, 64, 128)
    assert quarter["ctr_hmp"].shape == (1, 1, 32, 64)


@pytest.mark.parametrize(
    "build",
    [
        lambda: panoptic_deeplab(encoder="regnety_200mf", decoder_channels=32),
        lambda: panoptic_bifpn(encoder="regnety_200mf", fpn_dim=16, depthwise=False),
    ],
)
def test_models_without_point_rend_upsample_coarse_logits(build):
    model = build().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 128, 128))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "sem_logits": (1, 1, 128, 128),
        "ctr_hmp": (1, 1, 128, 128),
        "offsets": (1, 2, 128, 128),
    }
    assert model.semantic_pr is None


@pytest.mark.parametrize(
    ("shape", "match"),
    [((1, 3, 64, 64), r"shape \(N, 1, H, W\)"), ((1, 1, 62, 64), "multiples of 4")],
)
def test_pdl_rejects_bad_inputs(shape, match):
    with pytest.raises(ValueError, match=match):
        small_pdl_pr().eval()(torch.zeros(shape))


def test_bifpn_needs_multiples_of_128():
    with pytest.raises(ValueError, match="multiples of 128"):
        small_bifpn_pr().eval()(torch.zeros(1, 1, 64, 64))


def test_negative_render_steps_are_rejected():
    with pytest.raises(ValueError, match="`render_steps` must be >= 0"):
        small_pdl_pr().eval()(torch.zeros(1, 1, 64, 64), -1)


def _relative_error(actual, expected):
    return float((actual.float() - expected).abs().mean() / expected.abs().mean())


@pytest.mark.parametrize(
    ("build", "size"), [(small_pdl_pr, 64), (lambda: small_bifpn_pr(num_classes=3), 128)]
)
def test_bfloat16_autocast_matches_float32(build, size):
    model = randomise(build()).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        reference = model(x, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, 3)
    for key, expected in reference.items():
        assert low[key].shape == expected.shape
        assert _relative_error(low[key], expected) < 0.05, key


def test_point_rend_scatters_reduced_precision_points_into_float_logits():
    # the original's "scatter(): Expected self.dtype to be equal to src.dtype" case: the
    # MLP runs in bf16 under autocast while upsampled float32 logits stay float32
    head = PointRendSemSegHead(8, 2).eval()
    coarse = torch.randn(1, 2, 8, 8)
    features = torch.randn(1, 8, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head.render(coarse, features, 2)
    assert logits.shape == (1, 2, 32, 32)


@pytest.mark.parametrize(("build", "size"), [(small_pdl_pr, 64), (small_bifpn_pr, 128)])
def test_channels_last_matches_contiguous(build, size):
    # Refine every point: with fewer points than pixels, PointRend's top-k choice of
    # uncertain points can flip on last-bit differences between memory layouts.
    model = randomise(build(subdivision_num_points=(size * 2) ** 2)).eval()
    x = torch.randn(1, 1, size, size)
    with torch.no_grad():
        reference = model(x, 3)
        model = model.to(memory_format=torch.channels_last)
        result = model(x.to(memory_format=torch.channels_last), 3)
    for key, expected in reference.items():
        torch.testing.assert_close(result[key], expected, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------
# PointRend pieces


def test_uncertainty_binary_and_multiclass():
    binary = torch.tensor([[[[-2.0, 0.5]]]])
    assert torch.equal(uncertainty(binary), torch.tensor([[[[-2.0, -0.5]]]]))
    multi = torch.tensor([[[3.0], [1.0], [2.5]]])  # (N=1, C=3, P=1)
    assert torch.allclose(uncertainty(multi), torch.tensor([[[-0.5]]]))


def test_most_uncertain_cells_are_cell_centres():
    scores = torch.zeros(1, 1, 2, 4)
    scores[0, 0, 1, 2] = 1.0
    indices, coords = most_uncertain_cells(scores, 1)
    assert indices.tolist() == [[6]]
    assert torch.allclose(coords, torch.tensor([[[2.5 / 4, 1.5 / 2]]]))
    _, everything = most_uncertain_cells(scores, 100)
    assert everything.shape == (1, 8, 2)


def test_point_sample_reads_pixel_centres():
    features = torch.arange(12.0).reshape(1, 1, 3, 4)
    coords = torch.tensor([[[0.5 / 4, 0.5 / 3], [3.5 / 4, 2.5 / 3]]])
    torch.testing.assert_close(point_sample(features, coords), torch.tensor([[[0.0, 11.0]]]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"train_num_points": 0}, ValueError, "`train_num_points` must be >= 1"),
        ({"importance_sample_ratio": 1.5}, ValueError, "`importance_sample_ratio`"),
        ({"oversample_ratio": 2.5}, TypeError, "`oversample_ratio` must be an int"),
    ],
)
def test_point_rend_settings_are_validated(kwargs, error, match):
    with pytest.raises(error, match=match):
        PointRendSemSegHead(8, 1, **kwargs)


# --------------------------------------------------------------------------------------
# builders and build_model


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 0}, ValueError, "`num_classes` must be >= 1"),
        ({"num_classes": None}, TypeError, "`num_classes` must be an int"),
        ({"stage4_stride": 8}, ValueError, "`output_stride` must be 16 or 32"),
        ({"low_level_stages": [5]}, ValueError, "`low_level_stages` must lie in 1..4"),
        ({"low_level_channels_project": [32, 16]}, ValueError, "one entry per"),
        ({"aspp_dropout": "high"}, TypeError, "`aspp_dropout`"),
        ({"aspp_dropout": 1.5}, ValueError, "`aspp_dropout` must be in"),
        ({"ins_ratio": 0.01}, ValueError, "`ins_ratio`"),
        ({"encoder": "vgg16"}, ValueError, "unknown encoder 'vgg16'"),
    ],
)
def test_pdl_builder_validates_arguments(kwargs, error, match):
    options = dict(encoder="resnet18", low_level_stages=[1], low_level_channels_project=[32])
    options.update(ins_decoder=True)
    options.update(kwargs)
    with pytest.raises(error, match=match):
        panoptic_deeplab_pr(**options)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fpn_dim": 0}, ValueError, "`fpn_dim` must be >= 1"),
        ({"fpn_layers": 0}, ValueError, "`fpn_layers` must be >= 1"),
        ({"depthwise": "yes"}, TypeError, "`depthwise` must be a bool"),
    ],
)
def test_bifpn_builder_validates_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        panoptic_bifpn(encoder="resnet18", **kwargs)


def test_build_model_from_original_config_block():
    block = {
        "arch": "PanopticDeepLabPR",
        "encoder": "resnet18",
        "num_classes": 3,
        "stage4_stride": 16,
        "decoder_channels": 32,
        "low_level_stages": [1],
        "low_level_channels_project": [32],
        "atrous_rates": [2, 4, 6],
        "aspp_channels": None,
        "aspp_dropout": 0.5,
        "ins_decoder": True,
        "ins_ratio": 0.5,
        "num_fc": 3,
        "train_num_points": 1024,
        "oversample_ratio": 3,
        "importance_sample_ratio": 0.75,
        "subdivision_steps": 2,
        "subdivision_num_points": 8192,
    }
    model = build_model(**block)
    assert model.arch == "PanopticDeepLabPR"
    assert model.num_classes == 3
    assert model.instance_decoder is not None
    assert model.semantic_decoder.aspp.project[3].p == 0.5


def test_build_model_rejects_unknown_keys_listing_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown MODEL keys .*\['fpn_size'\].*accepted keys"):
        build_model("PanopticBiFPN", encoder="resnet18", fpn_size=3)


def test_build_model_rejects_unknown_arch():
    with pytest.raises(ValueError, match="supported: .*PanopticBiFPNPR"):
        build_model("PanopticDeepLabBC")


def test_build_model_ignores_stale_and_other_family_keys_with_a_warning():
    # MitoNet mini's original config carries stale keys and inherits PDL keys
    with pytest.warns(UserWarning, match="confidence_bins.*confidence_head.*stage4_stride"):
        model = build_model(
            "PanopticBiFPNPR",
            encoder="resnet18",
            fpn_dim=16,
            confidence_head=False,
            confidence_bins=5,
            stage4_stride=16,
        )
    assert model.arch == "PanopticBiFPNPR"


def test_count_parameters_trainable_only():
    model = panoptic_deeplab(
        encoder="resnet18", low_level_stages=[1], low_level_channels_project=[8]
    )
    frozen = count_parameters(model.encoder)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - frozen
    with pytest.raises(TypeError, match="`model` must be an nn.Module"):
        count_parameters("resnet18")


# --------------------------------------------------------------------------------------
# weights


def test_load_encoder_weights_from_a_swav_style_checkpoint(tmp_path):
    source = build_encoder("resnet18")
    state = {
        f"module.{k}": torch.randn_like(v.float()).to(v.dtype)
        for k, v in source.state_dict().items()
    }
    state["module.fc.weight"] = torch.zeros(10, 512)
    state["module.fc.bias"] = torch.zeros(10)
    state["module.prototypes.weight"] = torch.zeros(3, 4)
    del state["module.layer4.1.bn2.running_var"]
    path = tmp_path / "swav.pth.tar"
    torch.save({"state_dict": state, "norms": [0.5, 0.1]}, path)

    model = panoptic_deeplab_pr(
        encoder="resnet18", low_level_stages=[1], low_level_channels_project=[8]
    )
    loaded = torch.load(path, weights_only=True)["state_dict"]
    report = load_encoder_weights(model, loaded)
    assert report.missing_keys == ["encoder.layer4.1.bn2.running_var"]
    assert report.unexpected_keys == ["prototypes.weight"]
    assert torch.equal(model.encoder.conv1.weight, loaded["module.conv1.weight"])
    assert torch.equal(
        model.encoder.layer3[1].bn1.running_mean, loaded["module.layer3.1.bn1.running_mean"]
    )


def test_load_encoder_weights_rejects_wrong_shapes_and_types():
    model = panoptic_deeplab(
        encoder="resnet18", low_level_stages=[1], low_level_channels_project=[8]
    )
    with pytest.raises(ValueError, match=r"conv1.weight: given \(64, 3, 7, 7\)"):
        load_encoder_weights(model, {"conv1.weight": torch.zeros(64, 3, 7, 7)})
    with pytest.raises(TypeError, match=r"pass checkpoint\['state_dict'\]"):
        load_encoder_weights(model, {"state_dict": {}, "norms": [0.5, 0.1]})
    with pytest.raises(TypeError, match="`model` must have an `encoder`"):
        load_encoder_weights(nn.Linear(2, 2), {})


def test_load_model_weights_strips_data_parallel_prefix():
    source = small_bifpn_pr()
    target = small_bifpn_pr()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    report = load_model_weights(target, state)
    assert report.missing_keys == []
    assert report.unexpected_keys == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)
