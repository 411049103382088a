"""Small models for tests and examples: the real model contract, no training needed.

:class:`BlobModel` is a TorchScript-able module with the original empanada model
contract, ``forward(x, render_steps, interpolate_ins)`` returning ``sem_logits``,
``ctr_hmp`` and ``offsets``. It segments dark blobs on a bright background (as
mitochondria appear in most EM) by thresholding, and puts a smooth centre peak
in each blob, so postprocessing finds one object per round blob. Tests of the
inference engines use it where a trained network would be too slow or too big.

:func:`write_test_model` saves it as TorchScript with a registry config, so it
loads through the registry like any other model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._torchscript import quiet_torchscript

__all__ = ["BlobModel", "write_test_model"]


class BlobModel(nn.Module):
    """Threshold segmentation with the Panoptic-DeepLab + PointRend output contract.

    Parameters
    ----------
    threshold : float
        Normalised intensity below which a pixel is foreground. Below 0, so
        that zero padding (mean grey after normalisation) stays background.
    sharpness : float
        Logit slope around the threshold.
    sigma : float
        Width (input pixels) of the Gaussian blur that makes the centre heatmap.
    num_classes : int
        Semantic channels (1: binary). With more, channel 1 is the blob class.
    """

    def __init__(self, threshold=-0.5, sharpness=8.0, sigma=6.0, num_classes=1):
        super().__init__()
        self.threshold = float(threshold)
        self.sharpness = float(sharpness)
        self.num_classes = int(num_classes)
        radius = int(3 * sigma)
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        self.register_buffer("kernel", (kernel / kernel.sum()).reshape(1, 1, 1, -1))
        self.radius = radius

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel
        x = F.conv2d(F.pad(x, (self.radius, self.radius, 0, 0), mode="replicate"), k)
        x = F.conv2d(F.pad(x, (0, 0, self.radius, self.radius), mode="replicate"),
                     k.transpose(2, 3))
        return x

    def forward(self, x: torch.Tensor, render_steps: int = 2, interpolate_ins: bool = True):
        fg = self.sharpness * (self.threshold - x)
        mask = torch.sigmoid(fg)
        heat = self._blur(mask)  # peaks of about 0.2 (small blobs) to 1 (large ones)
        # PointRend renders 2 steps from 1/4 to full size, each extra step doubles it.
        scale = 2 ** (render_steps - 2)
        if scale != 1:
            fg = F.interpolate(fg, scale_factor=float(scale), mode="bilinear",
                               align_corners=False)
        if self.num_classes > 1:
            background = torch.zeros_like(fg)
            extra = [torch.full_like(fg, -20.0) for _ in range(self.num_classes - 2)]
            sem = torch.cat([background, fg] + extra, dim=1)
        else:
            sem = fg
        ctr = heat
        if not interpolate_ins:
            ctr = F.avg_pool2d(heat, 4)
        offsets = torch.zeros(ctr.shape[0], 2, ctr.shape[2], ctr.shape[3], device=x.device)
        return {"sem_logits": sem, "ctr_hmp": ctr, "offsets": offsets}


def write_test_model(folder, name="BlobNet_test", *, padding_factor=16, num_classes=1,
                     threshold=-0.5, sigma=6.0, description=None):
    """Save a :class:`BlobModel` as TorchScript plus a registry config in ``folder``.

    Returns
    -------
    config_path : Path
        ``<folder>/<name>.yaml``; pass it to ``load_model`` or ``register_model``.
    """
    from ._config import ModelConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.pth"
    with quiet_torchscript():
        model = torch.jit.script(BlobModel(threshold=threshold, sigma=sigma,
                                           num_classes=num_classes).eval())
        torch.jit.save(model, str(weights))
    labels = [1] if num_classes == 1 else list(range(1, num_classes))
    config = ModelConfig.from_dict(
        {
            "model": weights.name,
            "model_quantized": None,
            "norms": {"mean": 0.5, "std": 0.25},
            "padding_factor": padding_factor,
            "thing_list": [1],
            "labels": labels,
            "class_names": {c: ("blob" if c == 1 else f"class{c}") for c in labels},
            "description": description or "Threshold 'model' for tests: dark round blobs.",
        },
        name=name,
    )
    return config.to_yaml(folder / f"{name}.yaml")
