"""Keyframe interpolation keeps bone lengths and turns rigid motions into rigid motions."""

from __future__ import annotations

import numpy as np
import pytest

from app.annotation import template_hand
from core.geometry.pose_interpolation import (
    bone_lengths,
    interpolate_hand,
    matrix_to_quaternion,
    quaternion_to_matrix,
    rigid_transform_hand,
    rotation_about_axis,
)
from core.hand.joints import MANO_PARENTS


def curled(hand: np.ndarray, angle: float) -> np.ndarray:
    """Bend every finger's middle and distal joints by ``angle`` about the palm's x axis."""
    out = hand.copy()
    r = rotation_about_axis([1.0, 0.0, 0.0], angle)
    for base in (5, 9, 13, 17):
        for joint in (base + 2, base + 3):
            parent = MANO_PARENTS[joint]
            out[joint:base + 4] = (out[joint:base + 4] - out[parent]) @ r.T + out[parent]
    return out


def test_quaternion_round_trip_and_endpoints():
    for angle in (0.1, 1.5, 3.1):
        r = rotation_about_axis([0.3, -1.0, 0.4], angle)
        assert np.allclose(quaternion_to_matrix(matrix_to_quaternion(r)), r, atol=1e-12)
    a = template_hand("right") + [0.0, 0.0, 0.5]
    b = rigid_transform_hand(curled(a, 0.8), rotation_about_axis([0, 0, 1], 0.7), translation=[0.1, 0, 0.05])
    assert np.allclose(interpolate_hand(a, b, 0.0), a, atol=1e-12)
    assert np.allclose(interpolate_hand(a, b, 1.0), b, atol=1e-12)


def test_bone_lengths_are_kept_while_positions_would_shrink_them():
    a = template_hand("right") + [0.0, 0.0, 0.5]
    turn = rotation_about_axis([0.2, 1, 0], 2.2)
    b = rigid_transform_hand(curled(a, 1.4), turn, translation=[0.05, 0.02, 0])
    mid = interpolate_hand(a, b, 0.5)
    assert np.abs(bone_lengths(mid) - bone_lengths(a)).max() < 1e-12
    # Linear blending of positions loses length on a 126-degree turn: this is what we avoid.
    assert np.abs(bone_lengths((a + b) / 2) - bone_lengths(a)).max() > 0.01
    assert np.allclose(mid[0], (a[0] + b[0]) / 2)  # the wrist moves linearly


def test_rigid_motion_interpolates_rigidly():
    a = template_hand("left") + [0.0, 0.0, 0.6]
    axis, angle, shift = np.array([0.3, 0.8, -0.2]), 1.2, np.array([0.04, -0.02, 0.1])
    b = rigid_transform_hand(a, rotation_about_axis(axis, angle), translation=shift)
    mid = interpolate_hand(a, b, 0.25)
    expected = rigid_transform_hand(a, rotation_about_axis(axis, angle * 0.25), translation=shift * 0.25)
    assert np.abs(mid - expected).max() < 1e-9


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="21, 3"):
        interpolate_hand(np.zeros((20, 3)), np.zeros((21, 3)), 0.5)
