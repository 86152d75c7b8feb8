"""Farthest point sampling and kNN: behaviour on hand-made point sets and random clouds."""

import numpy as np
import pytest
import torch

from core.geometry.sampling import (
    farthest_point_sampling,
    gather_points,
    knn_indices,
    squared_distances,
)


def _fps_reference(points: np.ndarray, m: int, skip: bool) -> list[int]:
    """Straightforward loop version of the reference kernel, float32."""
    pts = points.astype(np.float32)
    dist = np.full(len(pts), 1e10, dtype=np.float32)
    mag = (pts * pts).sum(-1)
    out = [0]
    for _ in range(1, m):
        last = pts[out[-1]]
        best, best_i = -1.0, 0
        for i, p in enumerate(pts):
            if skip and mag[i] <= 1e-3:
                continue
            d = np.float32((p[0] - last[0]) ** 2 + (p[1] - last[1]) ** 2 + (p[2] - last[2]) ** 2)
            dist[i] = min(dist[i], d)
            if dist[i] > best:
                best, best_i = dist[i], i
        out.append(best_i)
    return out


def test_fps_picks_extremes_of_a_line_first():
    # Points on the x axis at 0..10: start at index 0 (x=0), the farthest is x=10, then x=5.
    xs = torch.arange(11, dtype=torch.float32)
    pts = torch.stack([xs, torch.zeros(11), torch.zeros(11)], -1)[None] + 1.0  # away from origin
    idx = farthest_point_sampling(pts, 3)
    assert idx.tolist() == [[0, 10, 5]]


def test_fps_matches_loop_reference_on_random_clouds_with_origin_skip():
    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(3, 200, 3, generator=gen) * 0.05  # many points within 3.16 cm of 0
    near = (pts.pow(2).sum(-1) <= 1e-3).sum().item()
    assert near > 10
    idx = farthest_point_sampling(pts, 64, skip_near_origin=True)
    for b in range(3):
        assert idx[b].tolist() == _fps_reference(pts[b].numpy(), 64, skip=True)
        chosen = idx[b, 1:]
        assert (pts[b, chosen].pow(2).sum(-1) > 1e-3).all()
    plain = farthest_point_sampling(pts, 64)
    assert plain[0].tolist() == _fps_reference(pts[0].numpy(), 64, skip=False)
    assert len(set(plain[0].tolist())) == 64  # no repeats without skipping


def test_fps_all_points_skipped_repeats_index_zero():
    pts = torch.full((1, 5, 3), 0.001)
    idx = farthest_point_sampling(pts, 4, skip_near_origin=True)
    assert idx.tolist() == [[0, 0, 0, 0]]


def test_fps_rejects_bad_shapes():
    with pytest.raises(ValueError):
        farthest_point_sampling(torch.zeros(4, 3), 2)
    with pytest.raises(ValueError):
        farthest_point_sampling(torch.zeros(1, 4, 3), 5)


def test_knn_matches_brute_force_sort_and_chunking():
    gen = torch.Generator().manual_seed(1)
    queries = torch.rand(2, 1000, 3, generator=gen)
    points = torch.rand(2, 300, 3, generator=gen)
    idx = knn_indices(queries, points, 9, chunk_size=128)
    d = ((queries[:, :, None] - points[:, None]) ** 2).sum(-1)
    expected = d.argsort(dim=-1)[..., :9]
    assert torch.equal(idx, expected)
    # nearest first, and a point's own copy is its nearest neighbour
    self_idx = knn_indices(points, points, 1)
    assert torch.equal(self_idx[..., 0], torch.arange(300).expand(2, -1))


def test_squared_distances_exact_for_far_away_clouds():
    # the |a|^2 - 2ab + |b|^2 form loses all precision here; differences do not
    a = torch.tensor([[[1000.0, 0.0, 0.0]]])
    b = torch.tensor([[[1000.001, 0.0, 0.0]]])
    assert squared_distances(a, b).item() == pytest.approx((1000.001 - 1000.0) ** 2, rel=0.1)


def test_gather_points_shapes_and_values():
    values = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    idx = torch.tensor([[[4, 0]], [[1, 1]]])
    out = gather_points(values, idx)
    assert out.shape == (2, 1, 2, 2)
    assert torch.equal(out[0, 0, 0], values[0, 4])
    assert torch.equal(out[1, 0, 1], values[1, 1])
