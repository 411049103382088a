"""Small building blocks shared by the encoders, decoders and heads.

Module attribute names (``sepconv``, ``conv``, ``head`` and the positions inside the
``nn.Sequential`` containers) follow the original empanada layout, so that state dicts of
original checkpoints load into these modules unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.ao.nn.intrinsic import _FusedModule
from torch.ao.quantization import fuse_modules

__all__: list[str] = []


# --------------------------------------------------------------------------------------
# argument validation


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {value!r} ({type(value).__name__})")
    return value


# --------------------------------------------------------------------------------------
# convolution blocks


class SeparableConv2d(nn.Module):
    """Depthwise ``k x k`` convolution followed by a pointwise ``1 x 1`` convolution."""

    def __init__(
        self, nin: int, nout: int, kernel_size: int = 3, stride: int = 1, bias: bool = True
    ) -> None:
        super().__init__()
        self.sepconv = nn.Sequential(
            nn.Conv2d(
                nin,
                nin,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                groups=nin,
                bias=bias,
            ),
            nn.Conv2d(nin, nout, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sepconv(x)


def conv_bn_act(
    nin: int,
    nout: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    activation: nn.Module | None = None,
    relu: bool = True,
) -> nn.Sequential:
    """``Conv2d`` (no bias, "same" padding) -> ``BatchNorm2d`` -> optional activation.

    The activation is ``activation`` when given, else a ReLU when ``relu`` is true.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(
            nin,
            nout,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(nout),
    ]
    if activation is not None:
        layers.append(activation)
    elif relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def separable_conv_bn_act(
    nin: int, nout: int, kernel_size: int, activation: nn.Module | None = None
) -> nn.Sequential:
    """``SeparableConv2d`` (no bias) -> ``BatchNorm2d`` -> activation (ReLU by default)."""
    return nn.Sequential(
        SeparableConv2d(nin, nout, kernel_size, bias=False),
        nn.BatchNorm2d(nout),
        activation if activation is not None else nn.ReLU(inplace=True),
    )


def conv_transpose_bn_act(nin: int, nout: int, kernel_size: int) -> nn.Sequential:
    """``ConvTranspose2d`` with stride equal to its kernel -> ``BatchNorm2d`` -> ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(nin, nout, kernel_size, stride=kernel_size, bias=False),
        nn.BatchNorm2d(nout),
        nn.ReLU(inplace=True),
    )


class Resample2d(nn.Module):
    """``1 x 1`` conv + BN (no activation) when channels or stride change, else identity."""

    def __init__(self, nin: int, nout: int, stride: int = 1) -> None:
        super().__init__()
        if nin != nout or stride > 1:
            self.conv: nn.Module = conv_bn_act(nin, nout, 1, stride=stride, relu=False)
        else:
            self.conv = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def fuse_model(self) -> None:
        if isinstance(self.conv, nn.Sequential):
            fuse_in_place(self.conv, ["0", "1"])


class PanopticDeepLabHead(nn.Module):
    """Prediction head: separable ``5 x 5`` conv + BN + ReLU, then a ``1 x 1`` conv with bias."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.head = nn.Sequential(separable_conv_bn_act(nin, nin, 5), nn.Conv2d(nin, nout, 1))
        init_small_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def fuse_model(self) -> None:
        fuse_separable(self.head[0])


# --------------------------------------------------------------------------------------
# initialisation


def init_small_normal(module: nn.Module, std: float = 0.001) -> None:
    """Panoptic-DeepLab decoder/head init: conv weights ~ N(0, std), BN weight 1 and bias 0.

    Conv biases keep their PyTorch default, as in the original.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _glorot_uniform_fan_avg(weight: torch.Tensor, groups: int = 1) -> None:
    # EfficientDet-style variance scaling: uniform with limit sqrt(3 / fan_avg).
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    fan_in = weight.size(1) * receptive
    fan_out = weight.size(0) * receptive // groups
    limit = math.sqrt(3.0 / max(1.0, (fan_in + fan_out) / 2.0))
    with torch.no_grad():
        weight.uniform_(-limit, limit)


def init_efficientdet(module: nn.Module) -> None:
    """BiFPN decoder init: fan-average uniform for convs (depthwise aware), BN 1/0.

    Transposed convolutions keep their PyTorch default init, as in the original.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            _glorot_uniform_fan_avg(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # the depthwise half of a separable conv counts its fan-out per group
    for m in module.modules():
        if isinstance(m, SeparableConv2d):
            depthwise = m.sepconv[0]
            _glorot_uniform_fan_avg(depthwise.weight, groups=depthwise.groups)


# --------------------------------------------------------------------------------------
# BatchNorm folding (eval mode) for export and eager-mode quantization


def fuse_in_place(parent: nn.Module, names: Sequence[str]) -> None:
    """Fuse ``parent``'s submodules ``names`` (conv, BN[, ReLU] or conv, ReLU) in place.

    Already fused groups are skipped, so that calling ``fuse_model`` twice, or on a module
    that is shared by several parents (the BiFPN fusion nodes), is harmless.
    """
    modules = [parent.get_submodule(name) for name in names]
    if isinstance(modules[0], _FusedModule) or any(isinstance(m, nn.Identity) for m in modules):
        return
    if any(m.training for m in modules):
        raise RuntimeError(
            "BatchNorm folding needs eval mode: call model.eval() before fuse_model()"
        )
    fuse_modules(parent, list(names), inplace=True)


def fuse_conv_bn_act(block: nn.Sequential) -> None:
    """Fuse a ``conv_bn_act`` / ``conv_transpose_bn_act`` sequence (conv, BN[, ReLU])."""
    names = ["0", "1"]
    if isinstance(block[0], nn.Conv2d) and len(block) > 2 and isinstance(block[2], nn.ReLU):
        names.append("2")
    fuse_in_place(block, names)


def fuse_separable(block: nn.Sequential) -> None:
    """Fold the BN of a ``separable_conv_bn_act`` sequence into its pointwise conv."""
    names = ["0.sepconv.1", "1"]
    if isinstance(block[2], nn.ReLU):
        names.append("2")
    fuse_in_place(block, names)
