"""Farthest point sampling and exact k-nearest neighbours (pure torch, CPU and CUDA).

All functions work on batched point sets ``(B, N, 3)`` in any consistent frame and unit;
nothing here knows about hands. No compiled extension is needed.
"""

from __future__ import annotations

import torch

# The official CUDA FPS kernel never selects points this close to the coordinate origin
# (squared norm, in the units of the points it is given; 1e-3 m^2 = 3.16 cm radius).
REFERENCE_KERNEL_ORIGIN_SKIP_SQ = 1e-3

# Running-minimum initial value used by the reference kernel.
_FPS_INITIAL_DIST_SQ = 1e10


def farthest_point_sampling(
    points: torch.Tensor,
    num_samples: int,
    *,
    skip_near_origin: bool = False,
) -> torch.Tensor:
    """Indices ``(B, num_samples)`` (int64) of a farthest-point subset of ``points`` (B, N, 3).

    The first sample is always index 0; each next sample is the point with the largest
    squared distance to the samples so far (the first such index on exact ties).

    ``skip_near_origin=True`` reproduces a quirk of the reference CUDA kernel
    (``pointnet2_ops``): points with ``|p|^2 <= 1e-3`` are never selected (index 0 is still
    the first sample). If every remaining candidate is skipped, index 0 is repeated, as the
    kernel does. Distances are accumulated in float32 in the kernel's order
    ``dx*dx + dy*dy + dz*dz`` so that indices match it bit for bit.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, N, 3), got {tuple(points.shape)}")
    batch, num_points, _ = points.shape
    if not 0 < num_samples <= num_points:
        raise ValueError(f"num_samples must be in [1, {num_points}], got {num_samples}")

    pts = points.detach().float()
    x, y, z = pts.unbind(-1)
    min_dist_sq = torch.full(
        (batch, num_points), _FPS_INITIAL_DIST_SQ, dtype=torch.float32, device=pts.device
    )
    if skip_near_origin:
        candidate = (x * x + y * y + z * z) > REFERENCE_KERNEL_ORIGIN_SKIP_SQ
    else:
        candidate = torch.ones((batch, num_points), dtype=torch.bool, device=pts.device)

    indices = torch.zeros((batch, num_samples), dtype=torch.long, device=pts.device)
    batch_index = torch.arange(batch, device=pts.device)
    last = torch.zeros(batch, dtype=torch.long, device=pts.device)
    for step in range(1, num_samples):
        lx = x[batch_index, last].unsqueeze(1)
        ly = y[batch_index, last].unsqueeze(1)
        lz = z[batch_index, last].unsqueeze(1)
        dx, dy, dz = x - lx, y - ly, z - lz
        dist_sq = dx * dx + dy * dy + dz * dz
        # Skipped points keep their running minimum untouched, exactly as in the kernel.
        min_dist_sq = torch.where(candidate, torch.minimum(min_dist_sq, dist_sq), min_dist_sq)
        # -1 for skipped points: the kernel starts its running best at -1 with index 0.
        score = torch.where(candidate, min_dist_sq, torch.full_like(min_dist_sq, -1.0))
        best_value, best_index = score.max(dim=1)
        last = torch.where(best_value >= 0, best_index, torch.zeros_like(best_index))
        indices[:, step] = last
    return indices


def gather_points(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``values`` (B, N, C) gathered at ``indices`` (B, ...) -> (B, ..., C)."""
    batch, num_points, channels = values.shape
    # one index_select over the flattened batch: faster than gather with an expanded index
    offsets = (
        torch.arange(batch, device=indices.device).view(batch, *([1] * (indices.dim() - 1))) * num_points
    )
    flat = (indices + offsets).reshape(-1)
    gathered = values.reshape(batch * num_points, channels).index_select(0, flat)
    return gathered.reshape(*indices.shape, channels)


def squared_distances(queries: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Exact pairwise squared distances ``(B, M, N)`` between queries (B, M, 3) and points
    (B, N, 3), by coordinate differences (no ``|a|^2 - 2ab + |b|^2`` cancellation)."""
    diff = queries.unsqueeze(2) - points.unsqueeze(1)
    return (diff * diff).sum(-1)


def knn_indices(
    queries: torch.Tensor,
    points: torch.Tensor,
    k: int,
    *,
    chunk_size: int = 16384,
) -> torch.Tensor:
    """Indices ``(B, M, k)`` (int64) of the ``k`` nearest ``points`` (B, N, 3) to each query
    (B, M, 3), nearest first. Exact; queries are processed in chunks of ``chunk_size`` so that
    memory stays at ``B * chunk_size * N`` distances."""
    if queries.dim() != 3 or points.dim() != 3 or queries.shape[-1] != 3 or points.shape[-1] != 3:
        raise ValueError(
            f"queries and points must be (B, M, 3) and (B, N, 3), got {tuple(queries.shape)}, "
            f"{tuple(points.shape)}"
        )
    if queries.shape[0] != points.shape[0]:
        raise ValueError(f"batch sizes differ: {queries.shape[0]} vs {points.shape[0]}")
    num_points = points.shape[1]
    if not 0 < k <= num_points:
        raise ValueError(f"k must be in [1, {num_points}], got {k}")
    with torch.no_grad():
        chunks = []
        for start in range(0, queries.shape[1], chunk_size):
            dist_sq = squared_distances(queries[:, start : start + chunk_size], points)
            chunks.append(torch.topk(dist_sq, k, dim=-1, largest=False, sorted=True).indices)
        if not chunks:
            return torch.zeros((queries.shape[0], 0, k), dtype=torch.long, device=queries.device)
        return torch.cat(chunks, dim=1)
