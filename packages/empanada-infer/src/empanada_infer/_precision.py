"""Device and numeric precision of a run (fp32, or bf16 where the hardware has it)."""

from __future__ import annotations

__all__ = ["cpu_has_bf16_matrix_units"]


def _resolve_device(device):
    from empanada_models import resolve_device

    return resolve_device(device)


def cpu_has_bf16_matrix_units():
    """True where this CPU multiplies bf16 matrices in hardware (Intel AMX).

    Read from the ``amx_bf16`` flag of ``/proc/cpuinfo`` (Linux); False
    elsewhere. Without such units bf16 is emulated and no faster than fp32.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def _resolve_precision(precision, device):
    """The precision a run uses.

    'auto' is bf16 on CUDA devices with bf16 and on CPUs with bf16 matrix units
    (AMX), fp32 elsewhere.
    """
    if precision != "auto":
        return precision
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    if device.type == "cpu" and cpu_has_bf16_matrix_units():
        return "bf16"
    return "fp32"


def _to_bf16_weights(model, config):
    """Convert ``model`` in place to bf16 if it then runs; False (and fp32) if not."""
    import torch

    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params or any(p.dtype != torch.float32 for p in params):
        return False  # int8 packed weights, or nothing to convert
    factor = int(config.padding_factor)
    probe = torch.zeros((1, 1, 2 * factor, 2 * factor), dtype=torch.bfloat16)
    try:
        model.to(torch.bfloat16)
        with torch.inference_mode():
            model(probe, 2, False)
    except (RuntimeError, TypeError, ValueError):
        model.to(torch.float32)
        return False
    return True
