"""Model builders, the config-driven ``build_model`` and weight-loading helpers."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from empanada_core.validation import check_int

from ._bifpn import PanopticBiFPN
from ._catalogue import ARCHITECTURES, get_architecture
from ._deeplab import PanopticDeepLab
from ._encoders import build_encoder
from ._pointrend import PointRendSemSegHead

__all__ = [
    "WeightLoadReport",
    "build_model",
    "count_parameters",
    "load_encoder_weights",
    "load_model_weights",
    "mitonet_v1",
    "mitonet_v1_mini",
    "panoptic_bifpn",
    "panoptic_bifpn_pr",
    "panoptic_deeplab",
    "panoptic_deeplab_pr",
]


def _point_rend(
    nin: int,
    num_classes: int,
    num_fc: int,
    train_num_points: int,
    oversample_ratio: int,
    importance_sample_ratio: float,
    subdivision_steps: int,
    subdivision_num_points: int,
) -> PointRendSemSegHead:
    return PointRendSemSegHead(
        check_int(nin, "decoder_channels / fpn_dim", 1),
        check_int(num_classes, "num_classes", 1),
        num_fc=num_fc,
        train_num_points=train_num_points,
        oversample_ratio=oversample_ratio,
        importance_sample_ratio=importance_sample_ratio,
        subdivision_steps=subdivision_steps,
        subdivision_num_points=subdivision_num_points,
    )


def panoptic_deeplab(
    *,
    encoder: str = "resnet50",
    num_classes: int = 1,
    stage4_stride: int = 16,
    decoder_channels: int = 256,
    low_level_stages: Sequence[int] = (3, 2, 1),
    low_level_channels_project: Sequence[int] = (128, 64, 32),
    atrous_rates: Sequence[int] = (2, 4, 6),
    aspp_channels: int | None = None,
    aspp_dropout: float | Sequence[float] = 0.1,
    ins_decoder: bool = False,
    ins_ratio: float = 0.5,
) -> PanopticDeepLab:
    """Panoptic-DeepLab without PointRend.

    Parameters
    ----------
    encoder : str
        A name from :func:`list_encoders`.
    num_classes : int
        Semantic channels: 1 (sigmoid) or ``n_classes + 1`` (softmax with background).
    stage4_stride : {16, 32}
        Output stride of the encoder.
    decoder_channels : int
        Width of the decoders and heads.
    low_level_stages : sequence of int
        Encoder stages (1-4, deepest first) the decoder fuses; stage 1 is at 1/4.
    low_level_channels_project : sequence of int
        Projection width per low-level stage for the semantic decoder.
    atrous_rates : sequence of int
        ASPP dilation rates.
    aspp_channels : int, optional
        ASPP width (default ``decoder_channels``).
    aspp_dropout : float or (float, float)
        Dropout after the ASPP projection; a pair gives (semantic, instance).
    ins_decoder : bool
        Separate decoder for the instance heads.
    ins_ratio : float
        Instance decoder projections are ``int(ins_ratio * c)`` wide.

    Returns
    -------
    model : PanopticDeepLab
        ``model(x, render_steps=2, interpolate_ins=True)`` returns ``sem_logits``,
        ``ctr_hmp`` and ``offsets``; ``sem_logits`` is the 1/4 logits upsampled x4.

    Raises
    ------
    TypeError, ValueError
        For an argument of the wrong type or value; the message names it.

    Examples
    --------
    >>> import torch
    >>> from empanada_models._builders import panoptic_deeplab
    >>> model = panoptic_deeplab(encoder="resnet18", low_level_stages=[1],
    ...                          low_level_channels_project=[32]).eval()
    >>> out = model(torch.zeros(1, 1, 64, 64))
    >>> sorted(out), tuple(out["offsets"].shape)
    (['ctr_hmp', 'offsets', 'sem_logits'], (1, 2, 64, 64))
    """
    return PanopticDeepLab(
        build_encoder(encoder, output_stride=stage4_stride),
        num_classes=num_classes,
        decoder_channels=decoder_channels,
        low_level_stages=low_level_stages,
        low_level_channels_project=low_level_channels_project,
        atrous_rates=atrous_rates,
        aspp_channels=aspp_channels,
        aspp_dropout=aspp_dropout,
        ins_decoder=ins_decoder,
        ins_ratio=ins_ratio,
    )


def panoptic_deeplab_pr(
    *,
    encoder: str = "resnet50",
    num_classes: int = 1,
    stage4_stride: int = 16,
    decoder_channels: int = 256,
    low_level_stages: Sequence[int] = (3, 2, 1),
    low_level_channels_project: Sequence[int] = (128, 64, 32),
    atrous_rates: Sequence[int] = (2, 4, 6),
    aspp_channels: int | None = None,
    aspp_dropout: float | Sequence[float] = 0.1,
    ins_decoder: bool = False,
    ins_ratio: float = 0.5,
    num_fc: int = 3,
    train_num_points: int = 1024,
    oversample_ratio: int = 3,
    importance_sample_ratio: float = 0.75,
    subdivision_steps: int = 2,
    subdivision_num_points: int = 8192,
) -> PanopticDeepLab:
    """Panoptic-DeepLab with PointRend on the semantic branch (MitoNet's architecture).

    Parameters
    ----------
    encoder, num_classes, stage4_stride, decoder_channels, low_level_stages, \
low_level_channels_project, atrous_rates, aspp_channels, aspp_dropout, ins_decoder, ins_ratio
        As in :func:`panoptic_deeplab`.
    num_fc : int
        Hidden layers of the point MLP.
    train_num_points : int
        Points per image during training.
    oversample_ratio : int
        Random candidates per training point.
    importance_sample_ratio : float
        Fraction of training points picked by uncertainty.
    subdivision_steps : int
        Stored for configuration round trips; inference uses ``forward``'s
        ``render_steps``.
    subdivision_num_points : int
        Points re-predicted per rendering step.

    Returns
    -------
    model : PanopticDeepLab
        In eval mode ``sem_logits`` is rendered by PointRend from 1/4 resolution
        (``render_steps`` doublings); in train mode the outputs also hold
        ``sem_points`` and ``point_coords``.

    Raises
    ------
    TypeError, ValueError
        For an argument of the wrong type or value; the message names it.
    """
    point_rend = _point_rend(
        decoder_channels,
        num_classes,
        num_fc,
        train_num_points,
        oversample_ratio,
        importance_sample_ratio,
        subdivision_steps,
        subdivision_num_points,
    )
    return PanopticDeepLab(
        build_encoder(encoder, output_stride=stage4_stride),
        num_classes=num_classes,
        decoder_channels=decoder_channels,
        low_level_stages=low_level_stages,
        low_level_channels_project=low_level_channels_project,
        atrous_rates=atrous_rates,
        aspp_channels=aspp_channels,
        aspp_dropout=aspp_dropout,
        ins_decoder=ins_decoder,
        ins_ratio=ins_ratio,
        point_rend=point_rend,
    )


def panoptic_bifpn(
    *,
    encoder: str = "resnet50",
    num_classes: int = 1,
    fpn_dim: int = 160,
    fpn_layers: int = 3,
    ins_decoder: bool = False,
    depthwise: bool = True,
) -> PanopticBiFPN:
    """Panoptic-BiFPN without PointRend.

    Parameters
    ----------
    encoder : str
        A name from :func:`list_encoders`; it runs at output stride 32.
    num_classes : int
        Semantic channels: 1 (sigmoid) or ``n_classes + 1`` (softmax with background).
    fpn_dim : int
        Width of the BiFPN, decoders and heads.
    fpn_layers : int
        Number of BiFPN layers.
    ins_decoder : bool
        Separate BiFPN and decoder for the instance heads.
    depthwise : bool
        Depthwise separable fusion convs with SiLU (else dense convs with ReLU).

    Returns
    -------
    model : PanopticBiFPN
        Input height and width must be multiples of 128.

    Raises
    ------
    TypeError, ValueError
        For an argument of the wrong type or value; the message names it.
    """
    return PanopticBiFPN(
        build_encoder(encoder, output_stride=32),
        num_classes=num_classes,
        fpn_dim=fpn_dim,
        fpn_layers=fpn_layers,
        ins_decoder=ins_decoder,
        depthwise=depthwise,
    )


def panoptic_bifpn_pr(
    *,
    encoder: str = "resnet50",
    num_classes: int = 1,
    fpn_dim: int = 160,
    fpn_layers: int = 3,
    ins_decoder: bool = False,
    depthwise: bool = True,
    num_fc: int = 3,
    train_num_points: int = 1024,
    oversample_ratio: int = 3,
    importance_sample_ratio: float = 0.75,
    subdivision_steps: int = 2,
    subdivision_num_points: int = 8192,
) -> PanopticBiFPN:
    """Panoptic-BiFPN with PointRend on the semantic branch (MitoNet mini's architecture).

    Parameters
    ----------
    encoder, num_classes, fpn_dim, fpn_layers, ins_decoder, depthwise
        As in :func:`panoptic_bifpn`.
    num_fc, train_num_points, oversample_ratio, importance_sample_ratio, \
subdivision_steps, subdivision_num_points
        PointRend settings, as in :func:`panoptic_deeplab_pr`.

    Returns
    -------
    model : PanopticBiFPN

    Raises
    ------
    TypeError, ValueError
        For an argument of the wrong type or value; the message names it.
    """
    point_rend = _point_rend(
        fpn_dim,
        num_classes,
        num_fc,
        train_num_points,
        oversample_ratio,
        importance_sample_ratio,
        subdivision_steps,
        subdivision_num_points,
    )
    return PanopticBiFPN(
        build_encoder(encoder, output_stride=32),
        num_classes=num_classes,
        fpn_dim=fpn_dim,
        fpn_layers=fpn_layers,
        ins_decoder=ins_decoder,
        depthwise=depthwise,
        point_rend=point_rend,
    )


def mitonet_v1() -> PanopticDeepLab:
    """The MitoNet_v1 architecture (untrained): Panoptic-DeepLab + PointRend on ResNet-50.

    Output stride 16 (``layer4`` dilated by 2), ASPP rates (2, 4, 6), decoder width 256,
    one low-level stage (``layer1``, projected to 32), ASPP dropout 0.5, a separate
    instance decoder (``ins_ratio`` 0.5) and one sigmoid class; 55,158,486 parameters.

    Returns
    -------
    model : PanopticDeepLab

    Examples
    --------
    >>> from empanada_models._builders import count_parameters, mitonet_v1
    >>> count_parameters(mitonet_v1())
    55158486
    """
    return panoptic_deeplab_pr(
        encoder="resnet50",
        num_classes=1,
        stage4_stride=16,
        decoder_channels=256,
        low_level_stages=[1],
        low_level_channels_project=[32],
        atrous_rates=[2, 4, 6],
        aspp_channels=None,
        aspp_dropout=0.5,
        ins_decoder=True,
        ins_ratio=0.5,
    )


def mitonet_v1_mini() -> PanopticBiFPN:
    """The MitoNet_v1_mini architecture (untrained): Panoptic-BiFPN + PointRend on ResNet-50.

    Output stride 32, ``fpn_dim`` 128, 3 BiFPN layers with depthwise separable SiLU fusion
    convs, a separate instance BiFPN and decoder, and one sigmoid class; 27,350,786
    parameters (the shared fusion blocks count once).

    Returns
    -------
    model : PanopticBiFPN
    """
    return panoptic_bifpn_pr(
        encoder="resnet50",
        num_classes=1,
        fpn_dim=128,
        fpn_layers=3,
        ins_decoder=True,
        depthwise=True,
    )


# --------------------------------------------------------------------------------------
# config-driven construction

# Keys of old MitoNet configs that the original swallowed silently.
_STALE_KEYS = frozenset({"confidence_head", "confidence_bins"})


def build_model(arch: str, **model_kwargs: object) -> nn.Module:
    """Build a model from the ``MODEL`` block of an original empanada training config.

    Parameters
    ----------
    arch : str
        A name of :data:`empanada_models.ARCHITECTURES` (``"PanopticDeepLab"``,
        ``"PanopticDeepLabPR"``, ``"PanopticBiFPN"`` or ``"PanopticBiFPNPR"``).
    **model_kwargs
        The other ``MODEL`` keys, named as in the original configs (``encoder``,
        ``num_classes``, ``stage4_stride``, ``decoder_channels``, ``low_level_stages``,
        ``low_level_channels_project``, ``atrous_rates``, ``aspp_channels``,
        ``aspp_dropout``, ``ins_decoder``, ``ins_ratio``, ``fpn_dim``, ``fpn_layers``,
        ``depthwise``, ``num_fc``, ``train_num_points``, ``oversample_ratio``,
        ``importance_sample_ratio``, ``subdivision_steps``, ``subdivision_num_points``).
        Missing keys take the builder defaults.

    Returns
    -------
    model : nn.Module
        A :class:`PanopticDeepLab` or :class:`PanopticBiFPN`.

    Raises
    ------
    ValueError
        For an unknown ``arch`` or an unknown key (the message lists the accepted ones).

    Warns
    -----
    UserWarning
        For keys that the original accepted but that have no effect here: the stale
        ``confidence_head`` / ``confidence_bins``, and keys of the other architecture
        family (MitoNet mini's original config inherits the Panoptic-DeepLab keys).

    Examples
    --------
    >>> from empanada_models._builders import build_model
    >>> model = build_model("PanopticDeepLabPR", encoder="resnet18", num_classes=1,
    ...                     low_level_stages=[1], low_level_channels_project=[32])
    >>> model.arch
    'PanopticDeepLabPR'
    """
    entry = get_architecture(arch)
    builder = entry.builder
    accepted = entry.keyword_names()
    other_family = {
        name
        for other in ARCHITECTURES.values()
        for name in other.keyword_names()
        if name not in accepted
    }
    kwargs = {}
    ignored = []
    unknown = []
    for key, value in model_kwargs.items():
        if key in accepted:
            kwargs[key] = value
        elif key in _STALE_KEYS or key in other_family:
            ignored.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"unknown MODEL keys for arch {arch!r}: {sorted(unknown)}; accepted keys: "
            f"{list(accepted)}"
        )
    if ignored:
        warnings.warn(
            f"ignoring MODEL keys that have no effect on {arch!r}: {sorted(ignored)}",
            UserWarning,
            stacklevel=2,
        )
    return builder(**kwargs)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``model``; shared parameters count once.

    Parameters
    ----------
    model : nn.Module
    trainable_only : bool
        Count only parameters with ``requires_grad``.

    Returns
    -------
    count : int
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------
# weights


class WeightLoadReport(NamedTuple):
    """Keys that :func:`load_encoder_weights` or :func:`load_model_weights` could not match.

    ``missing_keys`` are model keys (``encoder.``-prefixed for encoder loading) absent from
    the given weights; ``unexpected_keys`` are given keys (after prefix clean-up) that the
    model or encoder lacks.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


def _check_state_dict(state_dict: object) -> Mapping[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"`state_dict` must be a mapping of names to tensors, got {type(state_dict)}"
        )
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            hint = (
                "; pass checkpoint['state_dict'], not the whole checkpoint"
                if key == "state_dict"
                else ""
            )
            raise TypeError(
                f"`state_dict` must map str to Tensor, got {key!r}: {type(value).__name__}" + hint
            )
    return state_dict


def _strip_prefix(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def load_model_weights(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True
) -> WeightLoadReport:
    """Load an original eager checkpoint's ``state_dict`` (``module.`` prefixes removed).

    Parameters
    ----------
    model : nn.Module
        A model built by one of the builders (unfused).
    state_dict : mapping of str to Tensor
        E.g. ``torch.load(path)["state_dict"]`` of an empanada ``*_checkpoint.pth.tar``.
    strict : bool
        Raise when keys do not match exactly.

    Returns
    -------
    report : WeightLoadReport
        Missing and unexpected keys (empty when ``strict``).
    """
    state_dict = _check_state_dict(state_dict)
    cleaned = {_strip_prefix(k, "module."): v for k, v in state_dict.items()}
    result = model.load_state_dict(cleaned, strict=strict)
    return WeightLoadReport(list(result.missing_keys), list(result.unexpected_keys))


def load_encoder_weights(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> WeightLoadReport:
    """Load pretrained encoder weights (e.g. the CEM1.5M SwAV ResNet-50) into ``model.encoder``.

    ``module.`` and ``encoder.`` prefixes are removed and the classifier (``fc.*``) is
    dropped; other keys the encoder does not have are reported, not loaded.

    Parameters
    ----------
    model : nn.Module
        A model with an ``encoder`` submodule.
    state_dict : mapping of str to Tensor
        Plain ResNet keys (``conv1.weight``, ``layer1.0.bn1.running_mean`` ...).

    Returns
    -------
    report : WeightLoadReport
        ``missing_keys`` (``encoder.``-prefixed model keys left at their init) and
        ``unexpected_keys``.

    Raises
    ------
    TypeError
        If ``model`` has no encoder or ``state_dict`` is not a mapping of tensors.
    ValueError
        If a matching key has a different shape (e.g. a 3-channel ImageNet ``conv1``).
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise TypeError("`model` must have an `encoder` submodule")
    state_dict = _check_state_dict(state_dict)
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = _strip_prefix(_strip_prefix(key, "module."), "encoder.")
        if key.startswith("fc."):
            continue
        cleaned[key] = value
    own = encoder.state_dict()
    mismatched = [
        f"{key}: given {tuple(value.shape)}, encoder has {tuple(own[key].shape)}"
        for key, value in cleaned.items()
        if key in own and own[key].shape != value.shape
    ]
    if mismatched:
        raise ValueError("encoder weights with the wrong shape: " + "; ".join(mismatched))
    result = encoder.load_state_dict(cleaned, strict=False)
    return WeightLoadReport(
        [f"encoder.{k}" for k in result.missing_keys], list(result.unexpected_keys)
    )
