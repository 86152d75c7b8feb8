"""Contact resolution of two hands' lattices (core.engine.contact, ReconstructionSettings.resolve_contact)."""

from __future__ import annotations

import numpy as np
import pytest

from core.engine.contact import resolve_contact, resolved_margin, signed_distance_m
from core.engine.mise import OUTSIDE_VALUE, DenseGrid
from core.engine.penetration import HandField

RES, BOX = 64, 0.2  # lattice of 65^3 points over a 20 cm box


def ball_grid(radius: float, threshold: float) -> DenseGrid:
    """Occupancy threshold + (radius - |x|) / 2 cm (clipped to [0, 1]) of a ball centred on its
    box, on the whole lattice, padded."""
    axis = BOX * (np.arange(RES + 1) / RES - 0.5)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    occ = np.clip(threshold + (radius - np.sqrt(x**2 + y**2 + z**2)) / 0.02, 0.0, 1.0)
    values = np.pad(occ.astype(np.float32), 1, constant_values=OUTSIDE_VALUE)
    return DenseGrid(values, np.zeros(3, int), RES, BOX, threshold)


def shifted(offset):
    offset = np.asarray(offset, float)
    return (lambda p: np.asarray(p) + offset), (lambda p: np.asarray(p) - offset)


def test_resolved_margin_follows_the_ground_truth_rule():
    step = 0.002
    own = np.array([0.3, 0.9, 0.5, -0.2, 0.5])
    depth_own = np.array([-0.004, -0.010, -0.004, 0.002, -0.02])
    depth_other = np.array([0.003, -0.004, -0.010, -0.004, 0.05])
    # outside the other -> unchanged (also deep inside own, where occupancies saturate);
    # inside both: deeper in own -> stays inside, deeper in the other -> outside
    out = resolved_margin(own, depth_own, depth_other, step)
    assert out[0] == 0.3 and out[4] == 0.5
    assert 0 < out[1] < 0.9 and out[2] < 0 and out[3] < 0
    np.testing.assert_allclose(out[1], 0.5 * 0.006 / (2 * step), atol=1e-5)


def test_signed_distance_of_a_ball_is_within_half_a_step():
    grid = ball_grid(0.05, 0.5)
    step = BOX / RES
    sdf = signed_distance_m(grid, step)
    ijk = np.argwhere(np.ones(grid.values.shape, bool))[::37]
    pts = grid.lattice_to_box(ijk + grid.origin - 1)
    true = np.linalg.norm(pts, axis=1) - 0.05
    inner = np.abs(true) < 0.03
    err = sdf.reshape(-1)[::37][inner] - true[inner]
    assert np.abs(err).max() < 0.75 * step


@pytest.mark.parametrize("radii", [(0.05, 0.05), (0.06, 0.04)])
def test_two_overlapping_balls_meet_without_overlap(radii):
    thresholds = (0.5, 0.45)  # I's and R's levels: margins, not raw values, are compared
    grids = {s: ball_grid(r, t) for s, r, t in zip(("left", "right"), radii, thresholds, strict=True)}
    to_cam_l, to_box_l = shifted([-0.04, 0.0, 0.0])  # centres 8 cm apart: the balls overlap
    to_cam_r, to_box_r = shifted([0.04, 0.0, 0.0])
    to_cam = {"left": to_cam_l, "right": to_cam_r}
    to_box = {"left": to_box_l, "right": to_box_r}
    before = {s: HandField(g, to_box[s]) for s, g in grids.items()}
    after = {s: HandField(g, to_box[s]) for s, g in resolve_contact(grids, to_cam, to_box).items()}

    rng = np.random.default_rng(0)
    pts = rng.uniform([-0.1, -0.06, -0.06], [0.1, 0.06, 0.06], size=(200_000, 3))
    both_before = before["left"].contains(pts) & before["right"].contains(pts)
    assert both_before.mean() > 0.003  # a real overlap (~1 % of the box) to resolve
    both_after = after["left"].contains(pts) & after["right"].contains(pts)
    # a sliver under a lattice step remains where the two lattices interpolate differently
    assert both_after.mean() < 0.02 * both_before.mean()
    # nothing is lost or invented: the union is kept up to the lattice's interpolation
    union_before = before["left"].contains(pts) | before["right"].contains(pts)
    union_after = after["left"].contains(pts) | after["right"].contains(pts)
    assert (union_before != union_after).mean() < 0.002
    # the overlap goes to the ball the point is deeper in
    centres = {"left": [-0.04, 0, 0], "right": [0.04, 0, 0]}
    depth = {s: r - np.linalg.norm(pts - centres[s], axis=1) for s, r in zip(before, radii, strict=True)}
    clear = both_before & (np.abs(depth["left"] - depth["right"]) > 0.003)
    deeper_left = depth["left"] > depth["right"]
    np.testing.assert_array_equal(after["left"].contains(pts[clear]), deeper_left[clear])
    np.testing.assert_array_equal(after["right"].contains(pts[clear]), ~deeper_left[clear])
    # far from the other ball nothing changes, bit for bit
    far = np.linalg.norm(pts - [0.04, 0, 0], axis=1) > radii[1] + 0.01
    np.testing.assert_array_equal(after["left"].values(pts[far]), before["left"].values(pts[far]))


def test_one_hand_is_left_as_it_is():
    grid = ball_grid(0.05, 0.5)
    to_cam, to_box = shifted([0, 0, 0])
    out = resolve_contact({"left": grid}, {"left": to_cam}, {"left": to_box})
    assert out["left"] is grid
