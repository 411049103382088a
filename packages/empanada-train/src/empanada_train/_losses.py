"""Panoptic-DeepLab training losses: bootstrapped cross-entropy, heatmap MSE,
offset L1 and the PointRend point loss, and their weighted sum.

Every loss is computed in float32, also when the model runs under bf16
autocast.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BootstrapCE", "HeatmapMSE", "OffsetL1", "PointRendLoss", "PanopticLoss"]


def _check_weight(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0; got {value!r}")
    return float(value)


def _as_class_map(labels, logits, name):
    """``labels`` as (N, H, W), checked against ``logits`` (N, C, H, W)."""
    if labels.dim() == 4 and labels.size(1) == 1:
        labels = labels[:, 0]
    if labels.dim() != 3 or labels.shape[0] != logits.shape[0] \
            or labels.shape[-2:] != logits.shape[-2:]:
        raise ValueError(
            f"`{name}` must have shape (N, H, W) matching the logits {tuple(logits.shape)}; "
            f"got {tuple(labels.shape)}"
        )
    return labels


def _pixel_ce(logits, labels):
    """Per-pixel loss: BCE-with-logits for one channel, cross-entropy otherwise."""
    logits = logits.float()
    if logits.size(1) == 1:
        return F.binary_cross_entropy_with_logits(
            logits[:, 0], labels.float(), reduction="none")
    return F.cross_entropy(logits, labels.long(), reduction="none")


class BootstrapCE(nn.Module):
    """Cross-entropy averaged over the hardest pixels of the whole batch.

    Parameters
    ----------
    top_k_percent_pixels : float, optional
        Fraction of pixels (of the batch, not of each image) with the largest
        loss that are averaged; 1 averages all of them.

    Notes
    -----
    ``forward(logits, labels)`` takes ``(N, C, H, W)`` logits and ``(N, H, W)``
    labels: floats in {0, 1} for one channel (binary cross-entropy with
    logits), class ids for several channels (cross-entropy). At least one
    pixel is kept.

    Examples
    --------
    >>> loss = BootstrapCE(0.5)
    >>> logits = torch.tensor([[[[0.0, 0.0], [10.0, -10.0]]]])
    >>> labels = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    >>> round(float(loss(logits, labels)), 4)  # the two pixels at logit 0 (log 2 each)
    0.6931
    """

    def __init__(self, top_k_percent_pixels=0.2):
        super().__init__()
        k = top_k_percent_pixels
        if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0 < k <= 1:
            raise ValueError(f"`top_k_percent_pixels` must be in (0, 1]; got {k!r}")
        self.top_k_percent_pixels = float(k)

    def forward(self, logits, labels):
        labels = _as_class_map(labels, logits, "labels")
        pixel = _pixel_ce(logits, labels).reshape(-1)
        if self.top_k_percent_pixels >= 1.0:
            return pixel.mean()
        k = max(1, int(self.top_k_percent_pixels * pixel.numel()))
        return torch.topk(pixel, k, sorted=False).values.mean()


class HeatmapMSE(nn.Module):
    """Mean squared error between the raw centre heatmap and its target.

    Examples
    --------
    >>> float(HeatmapMSE()(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)))
    1.0
    """

    def forward(self, output, target):
        if output.shape != target.shape:
            raise ValueError(
                f"heatmap output {tuple(output.shape)} and target {tuple(target.shape)} "
                f"differ in shape"
            )
        return F.mse_loss(output.float(), target.float())


class OffsetL1(nn.Module):
    """L1 error of the (dy, dx) offsets, averaged over the foreground pixels.

    Notes
    -----
    ``forward(output, target, foreground)``: ``output`` and ``target`` are
    ``(N, 2, H, W)``, ``foreground`` ``(N, H, W)`` (any non-zero value counts).
    The sum of ``|output - target|`` over both channels of the foreground
    pixels is divided by the number of foreground pixels (each counted once,
    not once per channel, as in the original). Without foreground the loss is
    0 (and still part of the graph).

    Examples
    --------
    >>> out = torch.zeros(1, 2, 2, 2)
    >>> tgt = torch.zeros(1, 2, 2, 2); tgt[0, :, 0, 0] = torch.tensor([3.0, 1.0])
    >>> fg = torch.tensor([[[1, 1], [0, 0]]])
    >>> float(OffsetL1()(out, tgt, fg))  # (3 + 1) / 2 foreground pixels
    2.0
    """

    def forward(self, output, target, foreground):
        if output.shape != target.shape or output.dim() != 4 or output.size(1) != 2:
            raise ValueError(
                f"offsets must be (N, 2, H, W) with equal shapes; got output "
                f"{tuple(output.shape)} and target {tuple(target.shape)}"
            )
        weight = _as_class_map(foreground, output, "foreground")
        weight = (weight != 0).unsqueeze(1).float()
        l1 = (output.float() - target.float()).abs() * weight
        # no foreground: the numerator is 0 too, so the loss is 0
        return l1.sum() / weight.sum().clamp_min(1.0)


class PointRendLoss(nn.Module):
    """Loss of PointRend's point logits against the target at the same points.

    Notes
    -----
    ``forward(point_logits, point_coords, labels)``: ``point_logits`` are
    ``(N, C, P)``, ``point_coords`` ``(N, P, 2)`` as ``(x, y)`` in [0, 1]
    (pixel centres at ``(i + 0.5) / size``), ``labels`` the full-resolution
    ``(N, H, W)`` target, sampled at the points with nearest neighbours.
    Binary cross-entropy with logits for one channel, cross-entropy
    otherwise; mean over all points.

    Examples
    --------
    >>> labels = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    >>> coords = torch.tensor([[[0.75, 0.25]]])  # the centre of pixel (0, 1)
    >>> logits = torch.tensor([[[20.0]]])
    >>> float(PointRendLoss()(logits, coords, labels)) < 1e-6
    True
    """

    def forward(self, point_logits, point_coords, labels):
        if point_logits.dim() != 3 or point_coords.dim() != 3 or point_coords.size(2) != 2 \
                or point_coords.shape[:2] != (point_logits.size(0), point_logits.size(2)):
            raise ValueError(
                f"point logits must be (N, C, P) and coordinates (N, P, 2); got "
                f"{tuple(point_logits.shape)} and {tuple(point_coords.shape)}"
            )
        if labels.dim() == 4 and labels.size(1) == 1:
            labels = labels[:, 0]
        if labels.dim() != 3 or labels.size(0) != point_logits.size(0):
            raise ValueError(f"`labels` must be (N, H, W); got {tuple(labels.shape)}")
        grid = (2.0 * point_coords.float() - 1.0).unsqueeze(2)
        sampled = F.grid_sample(labels[:, None].float(), grid, mode="nearest",
                                align_corners=False)[:, 0, :, 0]  # (N, P)
        logits = point_logits.float()
        if logits.size(1) == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0], sampled)
        return F.cross_entropy(logits, sampled.long())


class PanopticLoss(nn.Module):
    """The Panoptic-DeepLab (+ PointRend) training loss of empanada.

    ``total = ce_weight * BootstrapCE(sem_logits, sem)
    + mse_weight * MSE(ctr_hmp) + l1_weight * OffsetL1(offsets, on sem > 0)
    + pr_weight * PointRendLoss(sem_points, point_coords, sem)``; the last term
    only when the output holds ``sem_points`` (PointRend models in training
    mode).

    Parameters
    ----------
    ce_weight, mse_weight, l1_weight, pr_weight : float, optional
        Term weights (the original's defaults).
    top_k_percent : float, optional
        Fraction of the hardest pixels averaged by the bootstrapped
        cross-entropy.

    Notes
    -----
    ``forward(output, target)`` takes the model's output dict and a target
    dict with ``sem`` (N, H, W), ``ctr_hmp`` (N, 1, H, W) and ``offsets``
    (N, 2, H, W), as the datasets make them, and returns ``(total, parts)``:
    the total as a tensor and ``parts``, a dict of floats with ``ce``,
    ``mse``, ``l1``, ``pointrend_ce`` (PointRend only) and ``total_loss``.

    Examples
    --------
    >>> out = {"sem_logits": torch.zeros(1, 1, 4, 4), "ctr_hmp": torch.zeros(1, 1, 4, 4),
    ...        "offsets": torch.zeros(1, 2, 4, 4)}
    >>> tgt = {"sem": torch.zeros(1, 4, 4), "ctr_hmp": torch.zeros(1, 1, 4, 4),
    ...        "offsets": torch.zeros(1, 2, 4, 4)}
    >>> total, parts = PanopticLoss()(out, tgt)
    >>> sorted(parts), round(parts["ce"], 4)
    (['ce', 'l1', 'mse', 'total_loss'], 0.6931)
    """

    def __init__(self, ce_weight=1.0, mse_weight=200.0, l1_weight=0.01, pr_weight=1.0,
                 top_k_percent=0.2):
        super().__init__()
        self.ce_weight = _check_weight(ce_weight, "ce_weight")
        self.mse_weight = _check_weight(mse_weight, "mse_weight")
        self.l1_weight = _check_weight(l1_weight, "l1_weight")
        self.pr_weight = _check_weight(pr_weight, "pr_weight")
        self.ce = BootstrapCE(top_k_percent)
        self.mse = HeatmapMSE()
        self.l1 = OffsetL1()
        self.point = PointRendLoss()

    def forward(self, output, target):
        for key in ("sem_logits", "ctr_hmp", "offsets"):
            if key not in output:
                raise KeyError(f"the model output has no {key!r}; got keys {sorted(output)}")
        for key in ("sem", "ctr_hmp", "offsets"):
            if key not in target:
                raise KeyError(f"the target has no {key!r}; got keys {sorted(target)}")
        sem = target["sem"]
        names = ["ce", "mse", "l1"]
        terms = [
            self.ce(output["sem_logits"], sem),
            self.mse(output["ctr_hmp"], target["ctr_hmp"]),
            self.l1(output["offsets"], target["offsets"], sem),
        ]
        weights = [self.ce_weight, self.mse_weight, self.l1_weight]
        if "sem_points" in output:
            if "point_coords" not in output:
                raise KeyError("the model output has 'sem_points' but no 'point_coords'")
            names.append("pointrend_ce")
            terms.append(self.point(output["sem_points"], output["point_coords"], sem))
            weights.append(self.pr_weight)
        total = sum(w * t for w, t in zip(weights, terms))
        values = torch.stack([t.detach() for t in terms] + [total.detach()]).tolist()
        parts = dict(zip(names + ["total_loss"], values))
        return total, parts
