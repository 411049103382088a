"""PointRend for semantic segmentation (Kirillov et al., 2020), as used by empanada.

Training picks points where the coarse logits are uncertain (plus some random ones) and
predicts them with a small MLP; inference repeatedly upsamples the coarse logits by 2 and
re-predicts the most uncertain grid cells. Point coordinates are ``(x, y)`` in ``[0, 1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from empanada_core.validation import check_float, check_int

from ._blocks import fuse_in_place

__all__: list[str] = []


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of ``(N, C, ...)`` logits as ``(N, 1, ...)``; larger is less certain.

    One channel (sigmoid): ``-|logit|``. Several channels (softmax): the gap between the
    second and the first largest logit.
    """
    if logits.size(1) == 1:
        return -logits.abs()
    top2 = torch.topk(logits, k=2, dim=1)[0]
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def point_sample(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``(N, C, H, W)`` features at ``(N, P, 2)`` points -> ``(N, C, P)``.

    Coordinates are ``(x, y)`` in ``[0, 1]`` with pixel centres at ``(i + 0.5) / size``
    (``align_corners=False``).
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2)
    # Sample in the coordinates' precision: bfloat16 coordinates would be off by up to a
    # pixel on large maps, and grid_sample needs input and grid of one dtype.
    samples = F.grid_sample(
        features.to(grid.dtype), grid, mode="bilinear", align_corners=False
    ).squeeze(3)
    return samples.to(features.dtype)


def sample_training_points(
    coarse_logits: torch.Tensor,
    num_points: int,
    oversample_ratio: int,
    importance_sample_ratio: float,
) -> torch.Tensor:
    """Pick ``num_points`` training points per image, biased towards uncertain regions.

    ``num_points * oversample_ratio`` random candidates are scored; the
    ``importance_sample_ratio`` most uncertain fraction is kept and the rest is filled with
    uniform random points. Returns ``(N, num_points, 2)`` coordinates.
    """
    batch = coarse_logits.size(0)
    device = coarse_logits.device
    candidates = torch.rand(batch, num_points * oversample_ratio, 2, device=device)
    scores = uncertainty(point_sample(coarse_logits, candidates))[:, 0]
    num_uncertain = int(importance_sample_ratio * num_points)
    chosen = torch.topk(scores, k=num_uncertain, dim=1)[1]
    coords = torch.gather(candidates, 1, chosen.unsqueeze(2).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(batch, num_random, 2, device=device)], dim=1)
    return coords


def most_uncertain_cells(
    uncertainty_map: torch.Tensor, num_points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices ``(N, P)`` and centre coordinates ``(N, P, 2)`` of the most uncertain cells.

    ``P = min(num_points, H * W)`` for an ``(N, 1, H, W)`` uncertainty map.
    """
    batch, _, height, width = uncertainty_map.shape
    count = min(num_points, height * width)
    indices = torch.topk(uncertainty_map.reshape(batch, height * width), k=count, dim=1)[1]
    x = ((indices % width).to(torch.float32) + 0.5) / width
    y = (torch.div(indices, width, rounding_mode="floor").to(torch.float32) + 0.5) / height
    return indices, torch.stack([x, y], dim=2)


class StandardPointHead(nn.Module):
    """Point MLP of ``Conv1d(k=1)`` layers over fine features + coarse logits.

    The coarse logits are concatenated again after every hidden layer.
    """

    def __init__(self, nin: int, num_classes: int, fc_dim: int, num_fc: int) -> None:
        super().__init__()
        self.fc_layers = nn.ModuleList()
        width = nin + num_classes
        for _ in range(num_fc):
            fc = nn.Sequential(nn.Conv1d(width, fc_dim, 1), nn.ReLU(inplace=True))
            nn.init.kaiming_normal_(fc[0].weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(fc[0].bias)
            self.fc_layers.append(fc)
            width = fc_dim + num_classes
        self.predictor = nn.Conv1d(width, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, fine_features: torch.Tensor, coarse_logits: torch.Tensor) -> torch.Tensor:
        x = torch.cat([fine_features, coarse_logits], dim=1)
        for layer in self.fc_layers:
            x = torch.cat([layer(x), coarse_logits], dim=1)
        return self.predictor(x)

    def fuse_model(self) -> None:
        for layer in self.fc_layers:
            fuse_in_place(layer, ["0", "1"])


class PointRendSemSegHead(nn.Module):
    """PointRend refinement of coarse (1/4 resolution) semantic logits.

    Parameters
    ----------
    nin : int
        Channels of the fine features (the decoder output).
    num_classes : int
        Logit channels.
    num_fc : int
        Hidden layers of the point MLP (width ``nin``).
    train_num_points : int
        Points per image in training.
    oversample_ratio : int
        Candidates per training point.
    importance_sample_ratio : float
        Fraction of training points chosen by uncertainty (the rest are uniform).
    subdivision_steps : int
        Kept for configuration round trips; the number of refinement steps at inference is
        the ``render_steps`` argument of the model's ``forward``.
    subdivision_num_points : int
        Points re-predicted per refinement step (at most ``H * W``).
    """

    def __init__(
        self,
        nin: int,
        num_classes: int,
        num_fc: int = 3,
        train_num_points: int = 1024,
        oversample_ratio: int = 3,
        importance_sample_ratio: float = 0.75,
        subdivision_steps: int = 2,
        subdivision_num_points: int = 8192,
    ) -> None:
        super().__init__()
        self.train_num_points = check_int(train_num_points, "train_num_points", 1)
        self.oversample_ratio = check_int(oversample_ratio, "oversample_ratio", 1)
        self.importance_sample_ratio = check_float(importance_sample_ratio, "importance_sample_ratio", 0.0, 1.0)
        self.subdivision_steps = check_int(subdivision_steps, "subdivision_steps", 0)
        self.subdivision_num_points = check_int(subdivision_num_points, "subdivision_num_points", 1)
        num_fc = check_int(num_fc, "num_fc", 0)
        self.point_head = StandardPointHead(nin, num_classes, nin, num_fc)

    def forward_train(
        self, coarse_logits: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return point logits ``(N, C, P)`` and their coordinates ``(N, P, 2)``."""
        with torch.no_grad():
            coords = sample_training_points(
                coarse_logits,
                self.train_num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
        point_logits = self.point_head(
            point_sample(features, coords), point_sample(coarse_logits, coords)
        )
        return point_logits, coords

    def render(
        self, coarse_logits: torch.Tensor, features: torch.Tensor, steps: int
    ) -> torch.Tensor:
        """Refine ``(N, C, h, w)`` logits to ``(N, C, h * 2**steps, w * 2**steps)``."""
        logits = coarse_logits
        for _ in range(steps):
            logits = F.interpolate(logits, scale_factor=2.0, mode="bilinear", align_corners=False)
            indices, coords = most_uncertain_cells(uncertainty(logits), self.subdivision_num_points)
            point_logits = self.point_head(
                point_sample(features, coords), point_sample(coarse_logits, coords)
            )
            batch, channels, height, width = logits.shape
            indices = indices.unsqueeze(1).expand(-1, channels, -1)
            # Under autocast the MLP runs in reduced precision while the upsampled logits do
            # not; scatter needs one dtype (the original failed here under bf16).
            logits = (
                logits.reshape(batch, channels, height * width)
                .scatter(2, indices, point_logits.to(logits.dtype))
                .view(batch, channels, height, width)
            )
        return logits

    def fuse_model(self) -> None:
        self.point_head.fuse_model()
