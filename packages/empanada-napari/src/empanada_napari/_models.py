"""Model handling shared by the widgets: the live model list, devices and a model cache.

Nothing here imports torch at module import; the first call that needs a
device or a model does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from psygnal import Signal

__all__ = ["model_events", "model_names", "default_model", "gpu_count", "device_for",
           "get_segmenter", "clear_cache", "cache_info", "has_quantized"]


class _ModelEvents:
    """``changed(name)`` is emitted after a model is registered, imported or archived."""

    changed = Signal(str)


#: Connect to ``model_events.changed`` to refresh model lists.
model_events = _ModelEvents()


def model_names(*_args):
    """Registered model names, re-read from the registry folders on every call.

    Used as the ``choices`` callable of model combo boxes, so every
    ``reset_choices`` shows the registry as it is now.
    """
    import empanada_models as em

    return em.list_models()


def default_model():
    import empanada_models as em

    return em.get_default_model()


def has_quantized(name):
    """Whether a registered model has int8 weights (False for unknown names)."""
    import empanada_models as em

    try:
        return em.get_model_config(name).model_quantized is not None
    except (LookupError, ValueError, OSError):
        return False


def gpu_count():
    """Number of CUDA devices torch sees (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of empanada-infer
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_for(use_gpu):
    """'cuda' when asked for and present, else 'cpu'."""
    return "cuda" if use_gpu and gpu_count() > 0 else "cpu"


_CACHE_SIZE = 2  # loaded models kept (each holds its weights in memory)
_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()
_stats = {"loads": 0, "hits": 0}


def _config_key(config):
    source = config.source
    try:
        stamp = source.stat().st_mtime_ns if source is not None else None
    except OSError:
        stamp = None
    return (config.name, None if source is None else str(source), stamp)


def get_segmenter(model, params, *, device="cpu", quantized=False):
    """A :class:`empanada_infer.Segmenter` for ``model`` with ``params``.

    The loaded model is kept for the next call with the same model (same
    config file, unchanged), device, quantisation and precision, so changing
    thresholds between runs does not reload it. At most two models are kept.
    """
    import empanada_infer as ei
    from empanada_models import resolve_model_config

    config = resolve_model_config(model)
    key = (_config_key(config), str(device), bool(quantized), params.precision,
           params.channels_last)
    with _lock:
        seg = _cache.get(key)
        if seg is not None:
            _cache.move_to_end(key)
            _stats["hits"] += 1
            return seg.with_params(params)
        seg = ei.Segmenter.from_registry(config, params, device=device, quantized=quantized)
        _stats["loads"] += 1
        _cache[key] = seg
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return seg


def clear_cache():
    """Forget all loaded models."""
    with _lock:
        _cache.clear()


def cache_info():
    """``{'loads': n, 'hits': n, 'cached': n}`` since the process started."""
    with _lock:
        return {**_stats, "cached": len(_cache)}
