"""The architecture catalogue: one table that every package reads.

Each entry names an architecture a config's ``arch`` / ``MODEL.arch`` may give,
the builder that makes it, the multiple that input heights and widths need,
and the defaults the original's training configs fill in for ``MODEL`` keys a
config leaves out. The builders, the config checks, the registry's model info,
training, finetuning and the CLIs all take their lists from here. This module
does not import torch: builders are looked up when first called.

Examples
--------
>>> from empanada_models import ARCHITECTURES, get_architecture
>>> list(ARCHITECTURES)
['PanopticDeepLab', 'PanopticDeepLabPR', 'PanopticBiFPN', 'PanopticBiFPNPR']
>>> get_architecture("PanopticBiFPNPR").input_multiple()
128
>>> get_architecture("PanopticDeepLabPR").input_multiple({"stage4_stride": 16})
16
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["ARCHITECTURES", "Architecture", "config_architecture", "get_architecture", "patch_multiple",
           "POINT_REND_DEFAULTS"]

#: PointRend head arguments and the original's defaults (its training configs).
POINT_REND_DEFAULTS = MappingProxyType({
    "num_fc": 3, "train_num_points": 1024, "oversample_ratio": 3,
    "importance_sample_ratio": 0.75, "subdivision_steps": 2, "subdivision_num_points": 8192,
})

_DEEPLAB_DEFAULTS = {  # the original's pdl_model.yaml (the MitoNet layout)
    "encoder": "resnet50", "num_classes": None, "stage4_stride": 16,
    "decoder_channels": 256, "low_level_stages": [1], "low_level_channels_project": [32],
    "atrous_rates": [2, 4, 6], "aspp_channels": None, "aspp_dropout": 0.5,
    "ins_decoder": True, "ins_ratio": 0.5,
}
_BIFPN_DEFAULTS = {  # the original's bifpn_model.yaml (the MitoNet mini layout)
    "encoder": "resnet50", "num_classes": None, "fpn_dim": 128, "fpn_layers": 3,
    "ins_decoder": True, "depthwise": True,
}


@dataclass(frozen=True)
class Architecture:
    """One entry of :data:`ARCHITECTURES`.

    Attributes
    ----------
    name : str
        The name configs use (``arch`` / ``MODEL.arch``).
    family : {'PanopticDeepLab', 'PanopticBiFPN'}
        The model class it builds.
    point_rend : bool
        Whether it has a PointRend semantic head.
    builder_name : str
        Name of the builder function in :mod:`empanada_models`.
    fixed_multiple : int or None
        Input multiple independent of the arguments (128 for BiFPN: its P7 is at
        1/128); None where the encoder stride decides.
    training_defaults : Mapping
        ``MODEL`` keys and the original's defaults for them (PointRend keys
        included where it has the head).
    """

    name: str
    family: str
    point_rend: bool
    builder_name: str
    fixed_multiple: int | None
    training_defaults: Mapping[str, Any] = field(repr=False)

    @property
    def builder(self) -> Callable[..., Any]:
        """The builder function (imports torch on first use)."""
        from . import _builders

        return getattr(_builders, self.builder_name)

    def keyword_names(self) -> tuple[str, ...]:
        """The builder's keyword arguments (the ``MODEL`` keys it accepts)."""
        return tuple(inspect.signature(self.builder).parameters)

    def input_multiple(self, model_kwargs: Mapping[str, Any] | None = None) -> int:
        """The multiple that input heights and widths need for these arguments.

        Panoptic-DeepLab needs its encoder stride (``stage4_stride``, default 16);
        BiFPN needs 128.
        """
        if self.fixed_multiple is not None:
            return self.fixed_multiple
        stride = (model_kwargs or {}).get("stage4_stride") or self.training_defaults.get(
            "stage4_stride", 16)
        return int(stride)


def _entry(name, family, point_rend, builder_name, fixed_multiple, defaults):
    if point_rend:
        defaults = {**defaults, **POINT_REND_DEFAULTS}
    return Architecture(name, family, point_rend, builder_name, fixed_multiple,
                        MappingProxyType(defaults))


#: Every architecture, by name, in a fixed order.
ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType({
    a.name: a for a in (
        _entry("PanopticDeepLab", "PanopticDeepLab", False, "panoptic_deeplab", None,
               _DEEPLAB_DEFAULTS),
        _entry("PanopticDeepLabPR", "PanopticDeepLab", True, "panoptic_deeplab_pr", None,
               _DEEPLAB_DEFAULTS),
        _entry("PanopticBiFPN", "PanopticBiFPN", False, "panoptic_bifpn", 128,
               _BIFPN_DEFAULTS),
        _entry("PanopticBiFPNPR", "PanopticBiFPN", True, "panoptic_bifpn_pr", 128,
               _BIFPN_DEFAULTS),
    )
})


def get_architecture(name: str) -> Architecture:
    """The catalogue entry for ``name``.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    """
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown arch {name!r}; supported: {', '.join(ARCHITECTURES)}") from None


def config_architecture(config) -> str | None:
    """The architecture a :class:`ModelConfig` names (``arch`` or ``MODEL.arch``), or None."""
    arch = config.arch or (config.arch_params or {}).get("arch")
    return arch if arch in ARCHITECTURES else None


def patch_multiple(config) -> int:
    """The multiple that training patch sizes need for a model config.

    The least common multiple of the config's ``padding_factor`` and its
    architecture's input multiple (for an architecture the config names).
    """
    multiple = int(config.padding_factor)
    arch = config_architecture(config)
    if arch is not None:
        kwargs = {k: v for k, v in (config.arch_params or {}).items() if k != "arch"}
        multiple = math.lcm(multiple, ARCHITECTURES[arch].input_multiple(kwargs))
    return multiple
