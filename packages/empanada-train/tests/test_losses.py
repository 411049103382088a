import math

import pytest
import torch
import torch.nn.functional as F

from empanada_train._losses import (
    BootstrapCE,
    HeatmapMSE,
    OffsetL1,
    PanopticLoss,
    PointRendLoss,
)


def softplus(x):
    return math.log1p(math.exp(x))


# ---------------------------------------------------------------- bootstrap CE


def test_bootstrap_top_k_is_taken_over_the_whole_batch():
    # 10 pixels, all foreground; the 2 hardest (20 %) are both in image 0
    logits = torch.tensor([[-4.0, -3.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    logits = logits.reshape(2, 1, 1, 5)
    labels = torch.ones(2, 1, 5)
    loss = BootstrapCE(0.2)(logits, labels)
    # BCE with logits of a positive pixel is softplus(-logit)
    assert float(loss) == pytest.approx((softplus(4) + softplus(3)) / 2, rel=1e-6)
    # per image, the top 20 % would have been softplus(4) and softplus(-5)
    per_image = (softplus(4) + softplus(-5)) / 2
    assert float(loss) != pytest.approx(per_image, rel=1e-3)


def test_bootstrap_k_one_is_the_plain_mean_and_at_least_one_pixel_is_kept():
    logits = torch.randn(2, 1, 3, 3)
    labels = (torch.rand(2, 3, 3) > 0.5).float()
    plain = F.binary_cross_entropy_with_logits(logits[:, 0], labels)
    assert float(BootstrapCE(1.0)(logits, labels)) == pytest.approx(float(plain), rel=1e-6)
    pixel = F.binary_cross_entropy_with_logits(logits[:, 0], labels, reduction="none")
    assert float(BootstrapCE(0.001)(logits, labels)) == pytest.approx(float(pixel.max()))


def test_bootstrap_multiclass_uses_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    labels = torch.randint(0, 4, (2, 5, 5))
    pixel = F.cross_entropy(logits, labels, reduction="none").flatten()
    k = int(0.2 * pixel.numel())
    expected = pixel.sort(descending=True).values[:k].mean()
    assert float(BootstrapCE(0.2)(logits, labels)) == pytest.approx(float(expected), rel=1e-6)


def test_bootstrap_bf16_logits_give_a_float32_loss():
    logits = torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16)
    loss = BootstrapCE()(logits, torch.zeros(1, 4, 4))
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("k", [0, 1.5, -0.1, True])
def test_bootstrap_rejects_bad_fractions(k):
    with pytest.raises(ValueError, match="top_k_percent_pixels"):
        BootstrapCE(k)


def test_bootstrap_rejects_mismatched_labels():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        BootstrapCE()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, 4))


# ------------------------------------------------------------------ MSE / L1


def test_heatmap_mse_is_the_plain_mean():
    out = torch.zeros(1, 1, 2, 2)
    tgt = torch.tensor([[[[1.0, 0.0], [0.0, 3.0]]]])
    assert float(HeatmapMSE()(out, tgt)) == pytest.approx(10 / 4)
    with pytest.raises(ValueError, match="differ in shape"):
        HeatmapMSE()(out, torch.zeros(1, 1, 2, 3))


def test_offset_l1_counts_each_foreground_pixel_once():
    out = torch.zeros(1, 2, 3, 3)
    tgt = torch.zeros(1, 2, 3, 3)
    fg = torch.zeros(1, 3, 3)
    fg[0, 0, :] = 1  # three foreground pixels
    tgt[0, 0, 0, :] = torch.tensor([1.0, 2.0, 3.0])  # dy
    tgt[0, 1, 0, :] = torch.tensor([-1.0, 0.0, 1.0])  # dx
    tgt[0, :, 2, 2] = 100.0  # background error is ignored
    loss = OffsetL1()(out, tgt, fg)
    assert float(loss) == pytest.approx((1 + 2 + 3 + 1 + 0 + 1) / 3)  # not / 6


def test_offset_l1_is_zero_without_foreground_and_keeps_the_graph():
    out = torch.randn(2, 2, 4, 4, requires_grad=True)
    loss = OffsetL1()(out, torch.randn(2, 2, 4, 4), torch.zeros(2, 4, 4))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert out.grad is not None
    assert not out.grad.any()


def test_offset_l1_treats_any_class_id_as_foreground():
    out = torch.zeros(1, 2, 1, 2)
    tgt = torch.ones(1, 2, 1, 2)
    assert float(OffsetL1()(out, tgt, torch.tensor([[[0, 3]]]))) == pytest.approx(2.0)


def test_offset_l1_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        OffsetL1()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2))


# ------------------------------------------------------------------- PointRend


def test_point_loss_samples_the_target_with_nearest_at_the_points():
    labels = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    # (x, y) in [0, 1]: pixel (row 0, col 1), pixel (row 1, col 0), and a point just
    # inside pixel (row 0, col 0) near its border with (row 0, col 1)
    coords = torch.tensor([[[0.75, 0.25], [0.25, 0.75], [0.49, 0.1]]])
    logits = torch.tensor([[[2.0, -1.0, 0.5]]])  # (N, C=1, P)
    expected = (softplus(-2.0) + softplus(1.0) + softplus(0.5)) / 3  # targets 1, 1, 0
    loss = PointRendLoss()(logits, coords, labels)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_point_loss_multiclass_is_cross_entropy():
    labels = torch.tensor([[[0, 2], [1, 0]]])
    coords = torch.tensor([[[0.75, 0.25], [0.25, 0.75]]])
    logits = torch.randn(1, 3, 2)
    expected = F.cross_entropy(logits, torch.tensor([[2, 1]]))
    assert float(PointRendLoss()(logits, coords, labels)) == pytest.approx(float(expected))


def test_point_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, C, P\)"):
        PointRendLoss()(torch.zeros(1, 1, 3), torch.zeros(1, 4, 2), torch.zeros(1, 2, 2))


# ---------------------------------------------------------------- PanopticLoss


def _output_and_target(points=False):
    torch.manual_seed(1)
    out = {"sem_logits": torch.randn(2, 1, 8, 8), "ctr_hmp": torch.rand(2, 1, 8, 8),
           "offsets": torch.randn(2, 2, 8, 8)}
    if points:
        out["sem_points"] = torch.randn(2, 1, 5)
        out["point_coords"] = torch.rand(2, 5, 2)
    sem = torch.zeros(2, 8, 8)
    sem[:, 2:5, 2:5] = 1
    tgt = {"sem": sem, "ctr_hmp": torch.rand(2, 1, 8, 8), "offsets": torch.randn(2, 2, 8, 8)}
    return out, tgt


def test_panoptic_loss_is_the_weighted_sum_of_its_terms():
    out, tgt = _output_and_target(points=True)
    loss = PanopticLoss(ce_weight=2, mse_weight=200, l1_weight=0.5, pr_weight=3,
                        top_k_percent=0.5)
    total, parts = loss(out, tgt)
    assert set(parts) == {"ce", "mse", "l1", "pointrend_ce", "total_loss"}
    assert all(isinstance(v, float) for v in parts.values())
    ce = float(BootstrapCE(0.5)(out["sem_logits"], tgt["sem"]))
    mse = float(HeatmapMSE()(out["ctr_hmp"], tgt["ctr_hmp"]))
    l1 = float(OffsetL1()(out["offsets"], tgt["offsets"], tgt["sem"]))
    pr = float(PointRendLoss()(out["sem_points"], out["point_coords"], tgt["sem"]))
    assert parts["ce"] == pytest.approx(ce)
    assert parts["mse"] == pytest.approx(mse)
    assert parts["l1"] == pytest.approx(l1)
    assert parts["pointrend_ce"] == pytest.approx(pr)
    expected = 2 * ce + 200 * mse + 0.5 * l1 + 3 * pr
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert parts["total_loss"] == pytest.approx(expected, rel=1e-5)


def test_panoptic_loss_defaults_are_the_originals_and_points_are_optional():
    loss = PanopticLoss()
    assert (loss.ce_weight, loss.mse_weight, loss.l1_weight, loss.pr_weight) == (1, 200, 0.01, 1)
    assert loss.ce.top_k_percent_pixels == 0.2
    out, tgt = _output_and_target(points=False)
    total, parts = loss(out, tgt)
    assert "pointrend_ce" not in parts
    assert total.requires_grad is False
    out["sem_logits"].requires_grad_(True)
    total, _ = loss(out, tgt)
    total.backward()
    assert out["sem_logits"].grad is not None


def test_panoptic_loss_errors_name_the_missing_key():
    out, tgt = _output_and_target()
    del tgt["ctr_hmp"]
    with pytest.raises(KeyError, match="ctr_hmp"):
        PanopticLoss()(out, tgt)
    out, tgt = _output_and_target(points=True)
    del out["point_coords"]
    with pytest.raises(KeyError, match="point_coords"):
        PanopticLoss()(out, tgt)
    with pytest.raises(ValueError, match="l1_weight"):
        PanopticLoss(l1_weight=-1)
