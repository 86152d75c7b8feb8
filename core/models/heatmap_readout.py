"""2D joints from the encoder's heatmaps: the arg-max, refined to sub-cell precision.

Pure functions on tensors. Coordinates are map cells (cell centres at integers); convert to
crop pixels with ``cell * stride + stride / 2`` (see ``core.training.encoder_targets``).

Refinement (after DARK, Zhang et al. CVPR 2020): smooth the map with a small Gaussian, then
fit a parabola to the log of the arg-max and its two neighbours along each axis. On a Gaussian
peak this is exact (a Gaussian stays Gaussian under smoothing and is a parabola in log); a
centroid of a truncated window is biased towards the window's centre by up to a quarter cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH_SIGMA = 1.0  # cells


def _smoothed(maps: torch.Tensor, sigma: float = SMOOTH_SIGMA) -> torch.Tensor:
    """(N, 1, H, W) -> the same blurred by a separable Gaussian (replicate border)."""
    radius = max(1, int(round(2 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(maps, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))


def heatmap_peaks(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., H, W) heatmaps -> (xy (..., 2) in map cells, peak value (...) of the raw map)."""
    *lead, h, w = heatmaps.shape
    flat = heatmaps.reshape(-1, 1, h, w).float()
    smooth = _smoothed(flat)
    index = smooth.flatten(1).argmax(dim=1)
    py, px = index // w, index % w
    peak = flat.flatten(1).gather(1, index[:, None])[:, 0]
    logs = F.pad(smooth, (1, 1, 1, 1), mode="replicate").clamp_min(1e-10).log()[:, 0]
    n = torch.arange(flat.shape[0], device=heatmaps.device)

    def offset(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
        curvature = minus - 2 * centre + plus
        step = (
            0.5
            * (minus - plus)
            / torch.where(curvature < -1e-12, curvature, -1e-12 * torch.ones_like(curvature))
        )
        return torch.where(curvature < -1e-12, step, torch.zeros_like(step)).clamp(-1.0, 1.0)

    y, x = py + 1, px + 1  # indices into the padded map
    dx = offset(logs[n, y, x - 1], logs[n, y, x], logs[n, y, x + 1])
    dy = offset(logs[n, y - 1, x], logs[n, y, x], logs[n, y + 1, x])
    xy = torch.stack([px + dx, py + dy], dim=-1)
    return xy.reshape(*lead, 2), peak.reshape(lead)


def soft_argmax(heatmaps: torch.Tensor, beta: float) -> torch.Tensor:
    """(..., H, W) heatmaps -> (..., 2) expected cell coordinates under ``softmax(beta * map)``.

    Differentiable (integral regression, Sun et al. ECCV 2018): training uses it to give every
    cell a gradient towards the joint, which a plain heatmap MSE gives only near the target.
    With maps trained towards peak-1 Gaussians, ``beta`` near 20 makes the peak dominate the
    64 x 64 background (e^20 >> 4096)."""
    *lead, h, w = heatmaps.shape
    prob = torch.softmax(beta * heatmaps.reshape(*lead, h * w).float(), dim=-1).reshape(*lead, h, w)
    xs = torch.arange(w, dtype=prob.dtype, device=prob.device)
    ys = torch.arange(h, dtype=prob.dtype, device=prob.device)
    return torch.stack([(prob.sum(-2) * xs).sum(-1), (prob.sum(-1) * ys).sum(-1)], dim=-1)
