"""Two-hand scenes: contact resolution (no point inside both hands), overlap depth, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.synth.samples import torch_threads
from core.synth.scenes import INTERACTIONS, resolved_sdfs, sample_scene


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_scene_reaches_its_overlap_and_resolution_leaves_no_point_in_both_hands(interaction):
    rng = np.random.default_rng(INTERACTIONS.index(interaction))
    with torch_threads(1):
        scene = sample_scene(rng, interaction)
        models = scene.hand_models()
        lo = np.minimum(models["left"].bounds_m[0], models["right"].bounds_m[0])
        hi = np.maximum(models["left"].bounds_m[1], models["right"].bounds_m[1])
        pts = torch.as_tensor(np.random.default_rng(0).uniform(lo, hi, size=(200_000, 3)))
        raw_l, raw_r = models["left"].sdf(pts), models["right"].sdf(pts)
    res_l, res_r = resolved_sdfs(raw_l, raw_r)
    both_raw = (raw_l < 0) & (raw_r < 0)
    assert not bool(((res_l < 0) & (res_r < 0)).any())
    # The union is kept: every raw inside point belongs to exactly one hand (up to exact ties).
    union_raw = (raw_l < 0) | (raw_r < 0)
    union_res = (res_l < 0) | (res_r < 0)
    assert int((union_raw & ~union_res).sum()) <= 2
    # Resolution only changes the overlap region.
    assert torch.equal((res_l < 0) & ~both_raw, (raw_l < 0) & ~both_raw)
    target = scene.info["target_depth_m"]
    if interaction == "near_miss":
        assert scene.overlap_depth_m < 0 and not bool(both_raw.any())
    else:
        assert abs(scene.overlap_depth_m - target) < 0.001, (scene.overlap_depth_m, target)
        if target > 0.003:
            assert bool(both_raw.any())  # the raw solids really overlap; the labels split it


def test_scene_is_deterministic_by_seed():
    a = sample_scene(np.random.default_rng(42))
    b = sample_scene(np.random.default_rng(42))
    c = sample_scene(np.random.default_rng(43))
    assert np.array_equal(a.keypoints_left_m, b.keypoints_left_m)
    assert np.array_equal(a.keypoints_right_m, b.keypoints_right_m)
    assert not np.allclose(a.keypoints_right_m, c.keypoints_right_m)


def test_resolved_fields_split_overlap_by_depth():
    left = torch.tensor([-0.004, -0.001, 0.002, -0.003])
    right = torch.tensor([-0.001, -0.004, -0.002, 0.005])
    res_l, res_r = resolved_sdfs(left, right)
    assert (res_l < 0).tolist() == [True, False, False, True]
    assert (res_r < 0).tolist() == [False, True, True, False]
