"""Parts shared by the Panoptic-DeepLab and Panoptic-BiFPN models: heads and output contract."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub

from empanada_core.validation import check_int

from ._blocks import PanopticDeepLabHead
from ._pointrend import PointRendSemSegHead

__all__: list[str] = []


def upsample4(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x4 upsampling with ``align_corners=True`` (the original's output resize)."""
    return F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=True)


def _check_encoder(encoder: object) -> None:
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"`encoder` must be an nn.Module, got {type(encoder).__name__}")
    widths = getattr(encoder, "widths", None)
    if not isinstance(widths, list) or len(widths) != 4:
        raise TypeError(
            "`encoder` must have a `widths` attribute listing its 4 stage channel counts "
            "(see register_encoder)"
        )


class PanopticModel(nn.Module):
    """Base of the panoptic models: the three heads, optional PointRend and the outputs.

    Subclasses build ``encoder`` and the decoders, then call :meth:`_outputs` from
    ``forward(x, render_steps, interpolate_ins)``.

    Output contract (a ``Dict[str, Tensor]``):

    * ``sem_logits`` ``(N, C, H, W)``: with PointRend in eval mode, rendered from 1/4
      resolution by ``render_steps`` x2 steps (full resolution for the default 2);
      otherwise the 1/4 logits upsampled x4.
    * ``ctr_hmp`` ``(N, 1, ., .)`` and ``offsets`` ``(N, 2, ., .)`` (dy, dx in input pixels):
      1/4 resolution, upsampled x4 when ``interpolate_ins``.
    * in training mode with PointRend also ``sem_points`` ``(N, C, P)`` and
      ``point_coords`` ``(N, P, 2)``.

    Eager-mode quantization: ``quant`` converts the input, ``dequant`` marks where the
    quantized part ends; :meth:`quantizable_submodules` names the parts to give a qconfig.
    """

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        _check_encoder(encoder)
        self.encoder = encoder
        self.in_channels = int(getattr(encoder, "in_channels", 1))
        self.arch = "PanopticModel"  # set by subclasses to the original arch name
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.quant = QuantStub()
        self.dequant = DeQuantStub()

    def _add_heads(self, head_channels: int, point_rend: PointRendSemSegHead | None) -> None:
        # called after the decoders are built, so parameters come in the original's order
        # (which optimizer states saved by the original rely on)
        if point_rend is not None and not isinstance(point_rend, PointRendSemSegHead):
            raise TypeError(
                f"`point_rend` must be a PointRendSemSegHead or None, got {type(point_rend)}"
            )
        self.semantic_head = PanopticDeepLabHead(head_channels, self.num_classes)
        self.ins_center = PanopticDeepLabHead(head_channels, 1)
        self.ins_xy = PanopticDeepLabHead(head_channels, 2)
        self.semantic_pr = point_rend

    def _check_input(self, x: torch.Tensor, multiple: int, render_steps: int) -> None:
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(
                "expected an input of shape (N, "
                + str(self.in_channels)
                + ", H, W), got "
                + str(list(x.shape))
            )
        if x.size(2) % multiple != 0 or x.size(3) % multiple != 0:
            raise ValueError(
                "input height and width must be multiples of "
                + str(multiple)
                + " for this architecture, got "
                + str(list(x.shape[2:]))
                + "; pad the image first"
            )
        if render_steps < 0:
            raise ValueError("`render_steps` must be >= 0, got " + str(render_steps))

    def _outputs(
        self,
        sem: torch.Tensor,
        ctr_hmp: torch.Tensor,
        offsets: torch.Tensor,
        semantic_x: torch.Tensor,
        render_steps: int,
        interpolate_ins: bool,
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.semantic_pr is None:
            out["sem_logits"] = upsample4(sem)
        elif self.training:
            point_logits, point_coords = self.semantic_pr.forward_train(sem, semantic_x)
            out["sem_logits"] = upsample4(sem)
            out["sem_points"] = point_logits
            out["point_coords"] = point_coords
        else:
            out["sem_logits"] = self.semantic_pr.render(sem, semantic_x, render_steps)
        if interpolate_ins:
            ctr_hmp = upsample4(ctr_hmp)
            offsets = upsample4(offsets)
        out["ctr_hmp"] = ctr_hmp
        out["offsets"] = offsets
        return out

    def quantizable_submodules(self) -> list[str]:
        """Names of the submodules that eager-mode int8 quantization should convert."""
        raise NotImplementedError

    def _fuse_heads(self) -> None:
        self.semantic_head.fuse_model()
        self.ins_center.fuse_model()
        self.ins_xy.fuse_model()
        if self.semantic_pr is not None:
            self.semantic_pr.fuse_model()
