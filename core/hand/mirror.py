"""Left hands are mirrored (x -> -x) into right hands and back: the one place that says how.

Works on numpy arrays and torch tensors of points (..., 3) alike.
"""

from __future__ import annotations

import numpy as np

from core.hand.joints import HAND_SIDES

_MIRROR = (-1.0, 1.0, 1.0)


def mirror_x(points):
    """``points`` (..., 3) with x negated; a torch tensor keeps its dtype and device, anything
    else comes back as a numpy array."""
    if hasattr(points, "new_tensor"):  # torch, without importing it here
        return points * points.new_tensor(_MIRROR)
    return np.asarray(points) * np.array(_MIRROR)


def mirror_if_left(points, side: str):
    """``points`` of hand ``side`` in the right-hand convention (mirrored for ``"left"``); the
    map is its own inverse."""
    if side not in HAND_SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    return mirror_x(points) if side == "left" else points
