"""Which torch device a run uses: one rule for inference, training and the plugin."""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(device="auto", arg_name="device"):
    """The ``torch.device`` for ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or a device.

    ``'auto'`` (or None) is the first CUDA GPU when torch sees one, else the CPU.

    Raises
    ------
    ValueError
        Not a device, or a GPU asked for where torch sees none; the message names
        ``arg_name`` (a keyword, a config key or a CLI flag).

    Examples
    --------
    >>> from empanada_models import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"`{arg_name}` must be 'auto', 'cpu', 'cuda' or 'cuda:N'; "
                         f"got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`{arg_name}` {device!r} asks for a GPU, but torch sees no CUDA device")
    return dev
