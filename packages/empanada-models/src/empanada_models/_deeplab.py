"""Panoptic-DeepLab (Cheng et al., 2020): ASPP, the low-level decoder and the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized import FloatFunctional

from empanada_core.validation import check_float, check_int, check_int_list

from ._blocks import (
    check_bool,
    conv_bn_act,
    fuse_conv_bn_act,
    fuse_in_place,
    fuse_separable,
    init_small_normal,
    separable_conv_bn_act,
)
from ._panoptic_model import PanopticModel
from ._pointrend import PointRendSemSegHead

__all__ = ["PanopticDeepLab"]


class ASPPPooling(nn.Module):
    """Image pooling branch: global average -> ``1 x 1`` conv -> ReLU (no BN) -> broadcast."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.aspp_pooling = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(nin, nout, 1, bias=False), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.aspp_pooling(x)
        return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=True)

    def fuse_model(self) -> None:
        fuse_in_place(self.aspp_pooling, ["1", "2"])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling.

    Branches: a ``1 x 1`` conv, one dilated ``3 x 3`` conv per rate and image pooling; their
    concatenation is projected back to ``nout`` channels (conv, BN, ReLU, dropout).
    """

    def __init__(self, nin: int, nout: int, atrous_rates: Sequence[int], dropout: float) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(nin, nout, 1, bias=False), nn.BatchNorm2d(nout), nn.ReLU())
        ]
        for rate in atrous_rates:
            branches.append(conv_bn_act(nin, nout, 3, dilation=rate, activation=nn.ReLU()))
        branches.append(ASPPPooling(nin, nout))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * nout, nout, 1, bias=False),
            nn.BatchNorm2d(nout),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.concat = FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches: list[torch.Tensor] = []
        for conv in self.convs:
            branches.append(conv(x))
        return self.project(self.concat.cat(branches, dim=1))

    def fuse_model(self) -> None:
        for branch in self.convs:
            if isinstance(branch, ASPPPooling):
                branch.fuse_model()
            else:
                fuse_conv_bn_act(branch)
        fuse_in_place(self.project, ["0", "1", "2"])


class PanopticDeepLabDecoder(nn.Module):
    """ASPP on the deepest features, then top-down fusion with projected low-level features.

    At each low-level stage the running features are resized (bilinear, corners aligned) to
    the stage's size, concatenated with its ``1 x 1`` projection and fused by a separable
    ``5 x 5`` conv.
    """

    def __init__(
        self,
        nin: int,
        decoder_channels: int,
        low_level_stages: Sequence[int],
        low_level_channels: Sequence[int],
        low_level_channels_project: Sequence[int],
        atrous_rates: Sequence[int],
        aspp_channels: int,
        aspp_dropout: float,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(nin, aspp_channels, atrous_rates, aspp_dropout)
        self.low_level_stages: list[int] = list(low_level_stages)
        self.project = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.concats = nn.ModuleList()
        running = aspp_channels
        for channels, projected in zip(low_level_channels, low_level_channels_project):
            self.project.append(conv_bn_act(channels, projected, 1))
            self.fuse.append(separable_conv_bn_act(running + projected, decoder_channels, 5))
            self.concats.append(FloatFunctional())
            running = decoder_channels
        init_small_normal(self)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        x = self.aspp(pyramid[-1])
        for i, (project, fuse, concat) in enumerate(zip(self.project, self.fuse, self.concats)):
            low_level = project(pyramid[self.low_level_stages[i]])
            x = F.interpolate(x, size=low_level.shape[-2:], mode="bilinear", align_corners=True)
            x = fuse(concat.cat([x, low_level], dim=1))
        return x

    def fuse_model(self) -> None:
        self.aspp.fuse_model()
        for project in self.project:
            fuse_conv_bn_act(project)
        for fuse in self.fuse:
            fuse_separable(fuse)


def _dropout_pair(aspp_dropout: object) -> tuple[float, float]:
    if isinstance(aspp_dropout, (int, float)) and not isinstance(aspp_dropout, bool):
        p = check_float(aspp_dropout, "aspp_dropout", 0.0, 1.0)
        return p, p
    if isinstance(aspp_dropout, Sequence) and len(aspp_dropout) == 2:
        return (
            check_float(aspp_dropout[0], "aspp_dropout[0]", 0.0, 1.0),
            check_float(aspp_dropout[1], "aspp_dropout[1]", 0.0, 1.0),
        )
    raise TypeError(
        "`aspp_dropout` must be a probability or a (semantic, instance) pair of "
        f"probabilities, got {aspp_dropout!r}"
    )


class PanopticDeepLab(PanopticModel):
    """Panoptic-DeepLab with optional PointRend on the semantic branch.

    Parameters
    ----------
    encoder : nn.Module
        A registered encoder (see :func:`build_encoder`); its output stride is the one the
        ASPP works at (16 for MitoNet).
    num_classes : int
        Semantic logit channels: 1 (sigmoid) or ``n_classes + 1`` (softmax).
    decoder_channels : int
    low_level_stages : sequence of int
        Encoder stages (1-4, deepest first) fused by the decoder.
    low_level_channels_project : sequence of int
        Projection width for each low-level stage (semantic decoder).
    atrous_rates : sequence of int
    aspp_channels : int, optional
        Defaults to ``decoder_channels``.
    aspp_dropout : float or (float, float)
        Dropout after the ASPP projection (semantic, instance).
    ins_decoder : bool
        Give the instance heads their own decoder (projections ``ins_ratio`` as wide).
    ins_ratio : float
    point_rend : PointRendSemSegHead, optional

    Notes
    -----
    ``forward(x, render_steps=2, interpolate_ins=True)`` takes ``(N, 1, H, W)`` with H and
    W multiples of 4 and returns the dictionary described in :class:`PanopticModel`.
    The semantic head runs once per forward (the original ran it twice).
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        num_classes: int = 1,
        decoder_channels: int = 256,
        low_level_stages: Sequence[int] = (3, 2, 1),
        low_level_channels_project: Sequence[int] = (128, 64, 32),
        atrous_rates: Sequence[int] = (2, 4, 6),
        aspp_channels: int | None = None,
        aspp_dropout: float | Sequence[float] = 0.1,
        ins_decoder: bool = False,
        ins_ratio: float = 0.5,
        point_rend: PointRendSemSegHead | None = None,
    ) -> None:
        decoder_channels = check_int(decoder_channels, "decoder_channels", 1)
        super().__init__(encoder, num_classes)
        stages = check_int_list(low_level_stages, "low_level_stages", 1, allow_empty=False)
        if max(stages) > 4:
            raise ValueError(f"`low_level_stages` must lie in 1..4, got {stages}")
        projected = check_int_list(low_level_channels_project, "low_level_channels_project", 1,
                                   allow_empty=False)
        if len(projected) != len(stages):
            raise ValueError(
                f"`low_level_channels_project` ({projected}) needs one entry per "
                f"`low_level_stages` entry ({stages})"
            )
        rates = check_int_list(atrous_rates, "atrous_rates", 1, allow_empty=False)
        aspp_channels = (
            decoder_channels
            if aspp_channels is None
            else check_int(aspp_channels, "aspp_channels", 1)
        )
        semantic_dropout, instance_dropout = _dropout_pair(aspp_dropout)
        ins_decoder = check_bool("ins_decoder", ins_decoder)
        ins_ratio = check_float(ins_ratio, "ins_ratio", 0.0, float("inf"))
        widths = [int(w) for w in encoder.widths]
        low_level_channels = [widths[stage - 1] for stage in stages]

        self.arch = "PanopticDeepLab" if point_rend is None else "PanopticDeepLabPR"
        self.semantic_decoder = PanopticDeepLabDecoder(
            widths[-1],
            decoder_channels,
            stages,
            low_level_channels,
            projected,
            rates,
            aspp_channels,
            semantic_dropout,
        )
        self.instance_decoder: PanopticDeepLabDecoder | None = None
        if ins_decoder:
            instance_projected = [int(c * ins_ratio) for c in projected]
            if min(instance_projected) < 1:
                raise ValueError(
                    f"`ins_ratio` {ins_ratio} leaves an instance projection without channels "
                    f"({instance_projected})"
                )
            self.instance_decoder = PanopticDeepLabDecoder(
                widths[-1],
                decoder_channels,
                stages,
                low_level_channels,
                instance_projected,
                rates,
                aspp_channels,
                instance_dropout,
            )
        self._add_heads(decoder_channels, point_rend)

    def forward(
        self, x: torch.Tensor, render_steps: int = 2, interpolate_ins: bool = True
    ) -> dict[str, torch.Tensor]:
        self._check_input(x, 4, render_steps)
        pyramid = self.encoder(self.quant(x))
        semantic_x = self.semantic_decoder(pyramid)
        if self.instance_decoder is None:
            instance_x = semantic_x
        else:
            instance_x = self.instance_decoder(pyramid)
        sem = self.dequant(self.semantic_head(semantic_x))
        ctr_hmp = self.dequant(self.ins_center(instance_x))
        # offsets regress pixel distances: that head and PointRend always run in float
        offsets = self.ins_xy(self.dequant(instance_x))
        semantic_x = self.dequant(semantic_x)
        return self._outputs(sem, ctr_hmp, offsets, semantic_x, render_steps, interpolate_ins)

    def fuse_model(self) -> None:
        """Fold BatchNorm into the preceding convs (eval mode), in place."""
        self.encoder.fuse_model()
        self.semantic_decoder.fuse_model()
        if self.instance_decoder is not None:
            self.instance_decoder.fuse_model()
        self._fuse_heads()

    def quantizable_submodules(self) -> list[str]:
        """Encoder, decoders, semantic and centre heads, and the stubs.

        ``ins_xy`` and ``semantic_pr`` stay in float, as in the original int8 models.
        """
        names = ["quant", "encoder", "semantic_decoder", "instance_decoder"]
        names += ["semantic_head", "ins_center", "dequant"]
        return [name for name in names if getattr(self, name) is not None]
