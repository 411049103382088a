"""Panoptic-BiFPN: a BiFPN (Tan et al., 2020) neck with a transposed-conv decoder.

The fusion layout follows the original empanada, which differs from EfficientDet in two
ways that matter for its checkpoints: every direction of a BiFPN layer has **one** conv
block shared by its four fusion nodes, and one 5-vector of fast-fusion weights per
direction, normalised globally and then again over the inputs of each node.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from empanada_core.validation import check_int

from ._blocks import (
    Resample2d,
    check_bool,
    conv_bn_act,
    conv_transpose_bn_act,
    fuse_conv_bn_act,
    fuse_separable,
    init_efficientdet,
    separable_conv_bn_act,
)
from ._panoptic_model import PanopticModel
from ._pointrend import PointRendSemSegHead

__all__ = ["PanopticBiFPN"]


def _fusion_block(fpn_dim: int, depthwise: bool) -> nn.Sequential:
    if depthwise:
        return separable_conv_bn_act(fpn_dim, fpn_dim, 3, activation=nn.SiLU(inplace=True))
    return conv_bn_act(fpn_dim, fpn_dim, 3)


def _fuse_fusion_block(block: nn.Sequential) -> None:
    if isinstance(block[0], nn.Conv2d):
        fuse_conv_bn_act(block)
    else:
        fuse_separable(block)


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class TopDownFPN(nn.Module):
    """Top-down pass over ``[P7, P6, P5, P4, P3]``; returns ``[P7, P6td, P5td, P4td, P3td]``."""

    def __init__(self, lateral_channels: Sequence[int], fpn_dim: int, depthwise: bool) -> None:
        super().__init__()
        self.resamplings = nn.ModuleList(Resample2d(c, fpn_dim) for c in lateral_channels)
        shared = _fusion_block(fpn_dim, depthwise)  # one block for all nodes: see module doc
        self.after_combines = nn.ModuleList(shared for _ in lateral_channels)
        self.weights = nn.Parameter(torch.ones(len(lateral_channels) + 1))
        self.eps = 1e-4

    def forward(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        w = F.relu(self.weights)
        w = w / (w.sum() + self.eps)
        features = [pyramid[0]]
        for i, (resample, combine) in enumerate(zip(self.resamplings, self.after_combines)):
            lateral = resample(pyramid[i + 1])
            fused = w[i] * _upsample(features[-1]) + w[i + 1] * lateral
            features.append(combine(fused / (w[i] + w[i + 1] + self.eps)))
        return features

    def fuse_model(self) -> None:
        for resample in self.resamplings:
            resample.fuse_model()
        _fuse_fusion_block(self.after_combines[0])


class BottomUpFPN(nn.Module):
    """Bottom-up pass from P3td; returns ``[P3out, P4out, P5out, P6out, P7out]``."""

    def __init__(self, lateral_channels: Sequence[int], fpn_dim: int, depthwise: bool) -> None:
        super().__init__()
        self.resamplings = nn.ModuleList(Resample2d(c, fpn_dim) for c in lateral_channels)
        shared = _fusion_block(fpn_dim, depthwise)
        self.after_combines = nn.ModuleList(shared for _ in lateral_channels)
        self.weights = nn.Parameter(torch.ones(len(lateral_channels) + 1))
        self.eps = 1e-4

    def forward(
        self, pyramid: list[torch.Tensor], top_down: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        # pyramid: inputs [P4, P5, P6, P7]; top_down: [P3td, P4td, P5td, P6td, P7]
        w = F.relu(self.weights)
        w = w / (w.sum() + self.eps)
        last = len(self.resamplings) - 1
        features = [top_down[0]]
        for i, (resample, combine) in enumerate(zip(self.resamplings, self.after_combines)):
            lateral = resample(pyramid[i])
            below = _downsample(features[-1])
            if i < last:
                fused = w[i] * below + w[i + 1] * lateral + w[i + 2] * top_down[i + 1]
                fused = fused / (w[i] + w[i + 1] + w[i + 2] + self.eps)
            else:
                fused = (w[i] * below + w[i + 1] * lateral) / (w[i] + w[i + 1] + self.eps)
            features.append(combine(fused))
        return features

    def fuse_model(self) -> None:
        for resample in self.resamplings:
            resample.fuse_model()
        _fuse_fusion_block(self.after_combines[0])


class BiFPNLayer(nn.Module):
    """One top-down then bottom-up pass over five levels ``[P3 .. P7]``."""

    def __init__(self, level_channels: Sequence[int], fpn_dim: int, depthwise: bool) -> None:
        super().__init__()
        level_channels = list(level_channels)
        self.top_down_fpn = TopDownFPN(level_channels[::-1][1:], fpn_dim, depthwise)
        self.bottom_up_fpn = BottomUpFPN(level_channels[1:], fpn_dim, depthwise)

    def forward(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        top_down = self.top_down_fpn(pyramid[::-1])
        return self.bottom_up_fpn(pyramid[1:], top_down[::-1])

    def fuse_model(self) -> None:
        self.top_down_fpn.fuse_model()
        self.bottom_up_fpn.fuse_model()


class BiFPN(nn.Module):
    """Adds P6 and P7 (max-pooled from P5) to ``[P3, P4, P5]`` and runs ``num_layers`` layers."""

    def __init__(
        self, pyramid_channels: Sequence[int], fpn_dim: int, num_layers: int, depthwise: bool
    ) -> None:
        super().__init__()
        self.p6_resample = Resample2d(pyramid_channels[-1], fpn_dim)
        first = [*pyramid_channels, fpn_dim, fpn_dim]
        self.bifpns = nn.ModuleList(
            BiFPNLayer(first if i == 0 else [fpn_dim] * len(first), fpn_dim, depthwise)
            for i in range(num_layers)
        )

    def forward(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        p6 = _downsample(self.p6_resample(pyramid[-1]))
        p7 = _downsample(p6)
        features = pyramid + [p6, p7]
        for layer in self.bifpns:
            features = layer(features)
        return features

    def fuse_model(self) -> None:
        self.p6_resample.fuse_model()
        for layer in self.bifpns:
            layer.fuse_model()


class BiFPNDecoder(nn.Module):
    """Decode ``[P7, P6, P5, P4, P3, P2]`` to 1/4 resolution.

    Starting from P7, each step doubles the resolution with a ``2 x 2`` transposed conv and
    concatenates the next skip; a separable ``5 x 5`` conv fuses the result.
    """

    def __init__(self, fpn_dim: int, n_fpn_scales: int = 5) -> None:
        super().__init__()
        self.upsamplings = nn.ModuleList(
            conv_transpose_bn_act(fpn_dim if i == 0 else 2 * fpn_dim, fpn_dim, 2)
            for i in range(n_fpn_scales)
        )
        self.fusion = separable_conv_bn_act(2 * fpn_dim, fpn_dim, 5)
        init_efficientdet(self)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[0]
        for i, upsample in enumerate(self.upsamplings):
            x = torch.cat([upsample(x), features[i + 1]], dim=1)
        return self.fusion(x)

    def fuse_model(self) -> None:
        for upsample in self.upsamplings:
            fuse_conv_bn_act(upsample)
        fuse_separable(self.fusion)


class PanopticBiFPN(PanopticModel):
    """Panoptic-BiFPN with optional PointRend on the semantic branch.

    Parameters
    ----------
    encoder : nn.Module
        A registered encoder at output stride 32.
    num_classes : int
        Semantic logit channels: 1 (sigmoid) or ``n_classes + 1`` (softmax).
    fpn_dim : int
        Channels of the BiFPN and decoder.
    fpn_layers : int
        Number of BiFPN layers.
    ins_decoder : bool
        Give the instance heads their own BiFPN and decoder.
    depthwise : bool
        Depthwise separable fusion convs with SiLU (else dense convs with ReLU).
    point_rend : PointRendSemSegHead, optional

    Notes
    -----
    ``forward(x, render_steps=2, interpolate_ins=True)`` takes ``(N, 1, H, W)`` with H and
    W multiples of 128 (P7 is at 1/128) and returns the dictionary described in
    :class:`PanopticModel`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        num_classes: int = 1,
        fpn_dim: int = 160,
        fpn_layers: int = 3,
        ins_decoder: bool = False,
        depthwise: bool = True,
        point_rend: PointRendSemSegHead | None = None,
    ) -> None:
        fpn_dim = check_int(fpn_dim, "fpn_dim", 1)
        super().__init__(encoder, num_classes)
        fpn_layers = check_int(fpn_layers, "fpn_layers", 1)
        ins_decoder = check_bool("ins_decoder", ins_decoder)
        depthwise = check_bool("depthwise", depthwise)
        if getattr(encoder, "output_stride", 32) != 32:
            raise ValueError("PanopticBiFPN needs an encoder at output stride 32")
        widths = [int(w) for w in encoder.widths]

        self.arch = "PanopticBiFPN" if point_rend is None else "PanopticBiFPNPR"
        self.p2_resample = Resample2d(widths[0], fpn_dim)
        self.semantic_fpn = BiFPN(widths[1:], fpn_dim, fpn_layers, depthwise)
        self.semantic_decoder = BiFPNDecoder(fpn_dim)
        self.instance_fpn: BiFPN | None = None
        self.instance_decoder: BiFPNDecoder | None = None
        if ins_decoder:
            self.instance_fpn = BiFPN(widths[1:], fpn_dim, fpn_layers, depthwise)
            self.instance_decoder = BiFPNDecoder(fpn_dim)
        self._add_heads(fpn_dim, point_rend)

    def forward(
        self, x: torch.Tensor, render_steps: int = 2, interpolate_ins: bool = True
    ) -> dict[str, torch.Tensor]:
        self._check_input(x, 128, render_steps)
        # only the encoder may be quantized; everything after it runs in float
        pyramid = [self.dequant(p) for p in self.encoder(self.quant(x))]
        p2 = self.p2_resample(pyramid[1])
        semantic_x = self.semantic_decoder(([p2] + self.semantic_fpn(pyramid[2:]))[::-1])
        if self.instance_fpn is None or self.instance_decoder is None:
            instance_x = semantic_x
        else:
            instance_x = self.instance_decoder(([p2] + self.instance_fpn(pyramid[2:]))[::-1])
        sem = self.semantic_head(semantic_x)
        ctr_hmp = self.ins_center(instance_x)
        offsets = self.ins_xy(instance_x)
        return self._outputs(sem, ctr_hmp, offsets, semantic_x, render_steps, interpolate_ins)

    def fuse_model(self) -> None:
        """Fold BatchNorm into the preceding convs (eval mode), in place."""
        self.encoder.fuse_model()
        self.p2_resample.fuse_model()
        self.semantic_fpn.fuse_model()
        self.semantic_decoder.fuse_model()
        if self.instance_fpn is not None and self.instance_decoder is not None:
            self.instance_fpn.fuse_model()
            self.instance_decoder.fuse_model()
        self._fuse_heads()

    def quantizable_submodules(self) -> list[str]:
        """Only the encoder and the stubs, as in the original int8 model."""
        return ["quant", "encoder", "dequant"]
