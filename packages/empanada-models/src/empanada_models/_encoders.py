"""Encoders (ResNet family and RegNet) and the encoder registry.

Every encoder takes a ``(N, in_channels, H, W)`` image and returns five feature maps
``[stem, stage1, stage2, stage3, stage4]``; ``widths`` holds the channel counts of the four
stages (the stem is left out) and ``stage_names`` their attribute names. Attribute names
mirror the original empanada (``conv1``, ``layer1`` ... for ResNet; ``stem.cbr``,
``stage1.block1.bottleneck.a`` ... for RegNet), so original and CEM checkpoints load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.ao.nn.quantized import FloatFunctional

from empanada_core.validation import check_int

from ._blocks import Resample2d, conv_bn_act, fuse_conv_bn_act, fuse_in_place

__all__ = ["build_encoder", "list_encoders", "register_encoder"]

EncoderFactory = Callable[..., nn.Module]
_F = TypeVar("_F", bound=EncoderFactory)

_ENCODERS: dict[str, EncoderFactory] = {}


def register_encoder(name: str | None = None) -> Callable[[_F], _F]:
    """Register an encoder factory under ``name`` (default: the function's name).

    Parameters
    ----------
    name : str, optional
        Registry key, e.g. ``"resnet50"``. Defaults to the factory's ``__name__``.

    Returns
    -------
    decorator : callable
        Registers the factory and returns it unchanged.

    Raises
    ------
    ValueError
        If ``name`` is already registered.

    Notes
    -----
    A factory is called as ``factory(output_stride=16 | 32, in_channels=1)`` and must
    return an ``nn.Module`` whose ``forward`` maps ``(N, C, H, W)`` to a list of five
    feature maps ``[stem, stage1 (/4), stage2 (/8), stage3 (/16), stage4 (/16 or /32)]``,
    with attributes ``widths`` (the four stage channel counts), ``stage_names`` and a
    ``fuse_model()`` method that folds BatchNorm in eval mode.

    Examples
    --------
    >>> from empanada_models._encoders import register_encoder, list_encoders
    >>> @register_encoder("tiny_resnet_example")
    ... def tiny(*, output_stride=32, in_channels=1):
    ...     return ResNet(BasicBlock, [1, 1, 1, 1], output_stride=output_stride,
    ...                   in_channels=in_channels)
    >>> "tiny_resnet_example" in list_encoders()
    True
    >>> _ = _ENCODERS.pop("tiny_resnet_example")
    """

    def decorator(factory: _F) -> _F:
        key = name if name is not None else factory.__name__
        if key in _ENCODERS:
            raise ValueError(f"an encoder named {key!r} is already registered")
        _ENCODERS[key] = factory
        return factory

    return decorator


def list_encoders() -> list[str]:
    """Return the sorted names of all registered encoders.

    Examples
    --------
    >>> from empanada_models._encoders import list_encoders
    >>> "resnet50" in list_encoders() and "regnety_200mf" in list_encoders()
    True
    """
    return sorted(_ENCODERS)


def build_encoder(name: str, *, output_stride: int = 32, in_channels: int = 1) -> nn.Module:
    """Build the registered encoder ``name``.

    Parameters
    ----------
    name : str
        A name from :func:`list_encoders`.
    output_stride : {16, 32}
        Stride of the last stage. With 16 the last stage keeps the resolution of the
        third and uses dilation 2 instead.
    in_channels : int
        Image channels (1 for electron microscopy).

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the registered names) or
        ``output_stride`` is not 16 or 32.
    """
    if not isinstance(name, str):
        raise TypeError(f"`encoder` must be a str, got {name!r}")
    if name not in _ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; registered encoders: {list_encoders()}")
    return _ENCODERS[name](output_stride=output_stride, in_channels=in_channels)


def _check_output_stride(output_stride: object) -> int:
    output_stride = check_int(output_stride, "output_stride", None)
    if output_stride not in (16, 32):
        raise ValueError(f"`output_stride` must be 16 or 32, got {output_stride}")
    return output_stride


# --------------------------------------------------------------------------------------
# ResNet


def _conv3x3(nin: int, nout: int, stride: int = 1, groups: int = 1, dilation: int = 1):
    return nn.Conv2d(
        nin,
        nout,
        3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        groups=groups,
        bias=False,
    )


def _conv1x1(nin: int, nout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(nin, nout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two ``3 x 3`` convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        nin: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        # Unlike the original (and torchvision), dilation is allowed, so that ResNet-18/34
        # work at output stride 16 in Panoptic-DeepLab.
        self.conv1 = _conv3x3(nin, planes, stride, dilation=dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        # a FloatFunctional so that eager-mode quantization can observe the residual sum
        self.skip_add_relu = FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.skip_add_relu.add_relu(out, identity)

    def fuse_model(self) -> None:
        fuse_in_place(self, ["conv1", "bn1", "relu1"])
        fuse_in_place(self, ["conv2", "bn2"])
        if self.downsample is not None:
            fuse_in_place(self.downsample, ["0", "1"])


class Bottleneck(nn.Module):
    """``1 x 1`` -> ``3 x 3`` (stride, dilation, groups) -> ``1 x 1`` with a residual (v1.5)."""

    expansion = 4

    def __init__(
        self,
        nin: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(nin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width, stride, groups, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample
        self.skip_add_relu = FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.skip_add_relu.add_relu(out, identity)

    def fuse_model(self) -> None:
        fuse_in_place(self, ["conv1", "bn1", "relu1"])
        fuse_in_place(self, ["conv2", "bn2", "relu2"])
        fuse_in_place(self, ["conv3", "bn3"])
        if self.downsample is not None:
            fuse_in_place(self.downsample, ["0", "1"])


class ResNet(nn.Module):
    """ResNet encoder (torchvision layout, no classifier) returning a five-level pyramid.

    Parameters
    ----------
    block : BasicBlock or Bottleneck
    layers : list of int
        Blocks per stage.
    output_stride : {16, 32}
        With 16, ``layer4`` has stride 1 and dilation 2 on **every** block, including the
        first (the original's choice; torchvision would keep dilation 1 there).
    in_channels : int
    groups, width_per_group : int
        ResNeXt / wide ResNet settings.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        *,
        output_stride: int = 32,
        in_channels: int = 1,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        self.output_stride = output_stride = _check_output_stride(output_stride)
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self._groups = groups
        self._base_width = width_per_group
        self._inplanes = 64
        self.widths: list[int] = []
        self.stage_names: list[str] = ["layer1", "layer2", "layer3", "layer4"]

        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        if output_stride == 16:
            self.layer4 = self._make_layer(block, 512, layers[3], stride=1, dilation=2)
        else:
            self.layer4 = self._make_layer(block, 512, layers[3], stride=2)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        num_blocks: int,
        stride: int = 1,
        dilation: int = 1,
    ) -> nn.Sequential:
        nout = planes * block.expansion
        downsample = None
        if stride != 1 or self._inplanes != nout:
            downsample = nn.Sequential(_conv1x1(self._inplanes, nout, stride), nn.BatchNorm2d(nout))
        blocks = [
            block(
                self._inplanes, planes, stride, downsample, self._groups, self._base_width, dilation
            )
        ]
        self._inplanes = nout
        for _ in range(1, num_blocks):
            blocks.append(
                block(
                    nout,
                    planes,
                    groups=self._groups,
                    base_width=self._base_width,
                    dilation=dilation,
                )
            )
        self.widths.append(nout)
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p1 = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        p2 = self.layer1(p1)
        p3 = self.layer2(p2)
        p4 = self.layer3(p3)
        p5 = self.layer4(p4)
        return [p1, p2, p3, p4, p5]

    def fuse_model(self) -> None:
        """Fold every BatchNorm into its conv (eval mode), in place."""
        fuse_in_place(self, ["conv1", "bn1", "relu"])
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                m.fuse_model()


def _resnet_factory(
    name: str,
    block: type[BasicBlock] | type[Bottleneck],
    layers: list[int],
    groups: int = 1,
    width_per_group: int = 64,
) -> EncoderFactory:
    def factory(*, output_stride: int = 32, in_channels: int = 1) -> ResNet:
        return ResNet(
            block,
            layers,
            output_stride=output_stride,
            in_channels=in_channels,
            groups=groups,
            width_per_group=width_per_group,
        )

    factory.__name__ = name
    factory.__doc__ = f"{name} encoder (1-channel stem by default)."
    return register_encoder(name)(factory)


resnet18 = _resnet_factory("resnet18", BasicBlock, [2, 2, 2, 2])
resnet34 = _resnet_factory("resnet34", BasicBlock, [3, 4, 6, 3])
resnet50 = _resnet_factory("resnet50", Bottleneck, [3, 4, 6, 3])
resnet101 = _resnet_factory("resnet101", Bottleneck, [3, 4, 23, 3])
resnet152 = _resnet_factory("resnet152", Bottleneck, [3, 8, 36, 3])
resnext50_32x4d = _resnet_factory("resnext50_32x4d", Bottleneck, [3, 4, 6, 3], 32, 4)
resnext101_32x8d = _resnet_factory("resnext101_32x8d", Bottleneck, [3, 4, 23, 3], 32, 8)
wide_resnet50_2 = _resnet_factory("wide_resnet50_2", Bottleneck, [3, 4, 6, 3], 1, 128)
wide_resnet101_2 = _resnet_factory("wide_resnet101_2", Bottleneck, [3, 4, 23, 3], 1, 128)


# --------------------------------------------------------------------------------------
# RegNet (pycls AnyNet layout)


def regnet_widths(
    depth: int, w_0: int, w_a: float, w_m: float, group_w: int, q: int = 8
) -> tuple[list[int], list[int], list[int]]:
    """Per-stage widths, depths and group counts from the RegNet design parameters.

    Block widths follow ``w_0 + j * w_a``, snapped to the geometric grid ``w_0 * w_m**s``
    and rounded to multiples of ``q``; blocks with equal widths form a stage. Widths are
    then made divisible by the group width (bottleneck ratio 1).
    """
    linear = w_0 + np.arange(depth) * w_a
    steps = np.round(np.log(linear / w_0) / np.log(w_m))
    snapped = q * np.round(w_0 * np.power(w_m, steps) / q).astype(int)
    stage_widths, stage_depths = np.unique(snapped, return_counts=True)
    if len(stage_widths) != 4:
        raise ValueError(
            f"RegNet parameters give {len(stage_widths)} stages; only 4-stage networks "
            "are supported"
        )
    widths, groups = [], []
    for width in stage_widths.tolist():
        group_width = int(min(group_w, width))
        width = max(group_width, int(group_width * round(width / group_width)))
        widths.append(width)
        groups.append(width // group_width)
    return widths, [int(d) for d in stage_depths], groups


class SqueezeExcite(nn.Module):
    """Squeeze-excitation gate of the original RegNet-Y blocks.

    The original pools with ``AvgPool2d((1, 1))``, which is the identity, so the gate is
    computed per pixel: ``x * sigmoid(W2 relu(W1 x))``. Kept as is so that weights trained
    with it keep their meaning.
    """

    def __init__(self, nin: int) -> None:
        super().__init__()
        squeezed = nin // 4
        self.se = nn.Sequential(
            nn.Conv2d(nin, squeezed, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, nin, 1),
            nn.Sigmoid(),
        )
        self.gate_mul = FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_mul.mul(x, self.se(x))

    def fuse_model(self) -> None:
        fuse_in_place(self.se, ["0", "1"])


class RegNetBottleneck(nn.Module):
    """``a`` (1x1) -> ``b`` (3x3 grouped, strided) -> optional ``se`` -> ``c`` (1x1, no act)."""

    def __init__(
        self, nin: int, nout: int, groups: int, stride: int, dilation: int, use_se: bool
    ) -> None:
        super().__init__()
        self.a = conv_bn_act(nin, nout, 1)
        self.b = conv_bn_act(nout, nout, 3, stride=stride, groups=groups, dilation=dilation)
        self.se = SqueezeExcite(nout) if use_se else None
        self.c = conv_bn_act(nout, nout, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(self.a(x))
        if self.se is not None:
            x = self.se(x)
        return self.c(x)


class RegNetBlock(nn.Module):
    """Residual RegNet block: ``relu(downsample(x) + bottleneck(x))``."""

    def __init__(
        self, nin: int, nout: int, groups: int, stride: int, dilation: int, use_se: bool
    ) -> None:
        super().__init__()
        self.bottleneck = RegNetBottleneck(nin, nout, groups, stride, dilation, use_se)
        self.downsample = Resample2d(nin, nout, stride=stride)
        self.skip_add_relu = FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip_add_relu.add_relu(self.downsample(x), self.bottleneck(x))

    def fuse_model(self) -> None:
        fuse_conv_bn_act(self.bottleneck.a)
        fuse_conv_bn_act(self.bottleneck.b)
        if self.bottleneck.se is not None:
            self.bottleneck.se.fuse_model()
        fuse_conv_bn_act(self.bottleneck.c)
        self.downsample.fuse_model()


class _RegNetStem(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.cbr = conv_bn_act(nin, nout, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbr(x)


class RegNet(nn.Module):
    """RegNet encoder: a stride-2 ``3 x 3`` stem and four stages of residual blocks.

    Parameters
    ----------
    widths, depths, groups : list of int
        Per-stage output channels, block counts and group counts (see :func:`regnet_widths`).
    use_se : bool
        Add the (per-pixel) squeeze-excitation gate.
    output_stride : {16, 32}
        With 16, ``stage4`` has stride 1 and dilation 2.
    in_channels : int
    stem_width : int
    """

    def __init__(
        self,
        widths: list[int],
        depths: list[int],
        groups: list[int],
        *,
        use_se: bool = False,
        output_stride: int = 32,
        in_channels: int = 1,
        stem_width: int = 32,
    ) -> None:
        super().__init__()
        self.output_stride = output_stride = _check_output_stride(output_stride)
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self.widths: list[int] = list(widths)
        self.stage_names: list[str] = ["stage1", "stage2", "stage3", "stage4"]
        self.stem = _RegNetStem(in_channels, stem_width)

        nin = stem_width
        for index, (nout, depth, group_count) in enumerate(zip(widths, depths, groups)):
            last = index == 3
            stride = 1 if (last and output_stride == 16) else 2
            dilation = 2 if (last and output_stride == 16) else 1
            stage = nn.Sequential()
            for j in range(depth):
                stage.add_module(
                    f"block{j + 1}",
                    RegNetBlock(
                        nin if j == 0 else nout,
                        nout,
                        group_count,
                        stride if j == 0 else 1,
                        dilation,
                        use_se,
                    ),
                )
            self.add_module(f"stage{index + 1}", stage)
            nin = nout
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, std=(2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # each residual branch starts near zero: its last BN scale is zero
        for m in self.modules():
            if isinstance(m, RegNetBottleneck):
                nn.init.zeros_(m.c[1].weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p1 = self.stem(x)
        p2 = self.stage1(p1)
        p3 = self.stage2(p2)
        p4 = self.stage3(p3)
        p5 = self.stage4(p4)
        return [p1, p2, p3, p4, p5]

    def fuse_model(self) -> None:
        """Fold every BatchNorm into its conv (eval mode), in place."""
        fuse_conv_bn_act(self.stem.cbr)
        for m in self.modules():
            if isinstance(m, RegNetBlock):
                m.fuse_model()


def _regnet_factory(
    name: str, depth: int, w_0: int, w_a: float, w_m: float, group_w: int, use_se: bool
) -> EncoderFactory:
    widths, depths, groups = regnet_widths(depth, w_0, w_a, w_m, group_w)

    def factory(*, output_stride: int = 32, in_channels: int = 1) -> RegNet:
        return RegNet(
            widths,
            depths,
            groups,
            use_se=use_se,
            output_stride=output_stride,
            in_channels=in_channels,
        )

    factory.__name__ = name
    factory.__doc__ = (
        f"{name} encoder: widths {widths}, depths {depths}, groups {groups}, SE {use_se}."
    )
    return register_encoder(name)(factory)


# Design parameters of the original empanada factories. Its small "regnety" models carry
# no squeeze-excitation (only 6.4, 8 and 16 GF do); kept so their checkpoints load.
regnetx_6p4gf = _regnet_factory("regnetx_6p4gf", 17, 184, 60.83, 2.07, 56, False)
regnety_200mf = _regnet_factory("regnety_200mf", 13, 24, 36.44, 2.49, 8, False)
regnety_800mf = _regnet_factory("regnety_800mf", 14, 56, 38.84, 2.4, 16, False)
regnety_3p2gf = _regnet_factory("regnety_3p2gf", 21, 80, 42.63, 2.66, 24, False)
regnety_4gf = _regnet_factory("regnety_4gf", 22, 96, 31.41, 2.24, 64, False)
regnety_6p4gf = _regnet_factory("regnety_6p4gf", 25, 112, 33.22, 2.27, 72, True)
regnety_8gf = _regnet_factory("regnety_8gf", 17, 192, 76.82, 2.19, 56, True)
regnety_16gf = _regnet_factory("regnety_16gf", 18, 200, 106.23, 2.48, 112, True)
