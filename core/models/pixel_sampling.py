"""Pixel-aligned features: a crop's feature map sampled where camera points project (used by
network R for its anchors and queries, and by network I's ``pixel_feature`` option)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.geometry import camera_ops
from core.models.image_encoder import IMAGE_SIZE


def sample_pixel_features(
    feature_map: torch.Tensor, points_cam_m: torch.Tensor, cam_K: torch.Tensor, image_size: int = IMAGE_SIZE
) -> torch.Tensor:
    """Bilinear features (B, N, C) of a (B, C, S, S) map at the projections of camera-frame
    points (B, N, 3) through the crop intrinsics ``cam_K`` (B, 3, 3). Official convention:
    grid = (u - size/2) / (size/2), ``grid_sample(align_corners=True)``, zeros outside."""
    uv = camera_ops.project_to_pixels(points_cam_m, cam_K)
    grid = camera_ops.pixels_to_grid(uv, image_size).to(feature_map.dtype)
    sampled = F.grid_sample(feature_map, grid.unsqueeze(2), mode="bilinear", align_corners=True)
    return sampled[..., 0].transpose(1, 2)
