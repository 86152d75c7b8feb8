"""Small batched rotation helpers (pure torch, any leading batch shape).

Conventions: vectors are column vectors (``R @ v``); rotations are right-handed (a positive
angle about ``axis`` turns ``a`` towards ``axis x a``); every function broadcasts over the
leading dimensions and keeps the input dtype and device.
"""

from __future__ import annotations

import torch

_EPS = 1e-12


def normalize(v: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Unit vectors along the last axis (zero vectors stay finite: divided by ``eps``)."""
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(eps)


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix: ``skew(a) @ b == a x b``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)], -2
    )


def axis_angle_to_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation by ``angle`` (..., radians) about unit ``axis`` (..., 3) -> (..., 3, 3)."""
    k = skew(axis)
    s = torch.sin(angle)[..., None, None]
    c = torch.cos(angle)[..., None, None]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device).expand(k.shape)
    return eye + s * k + (1.0 - c) * (k @ k)


def _any_perpendicular(v: torch.Tensor) -> torch.Tensor:
    """A unit vector perpendicular to ``v`` (used when a rotation axis is undefined)."""
    # Cross with the basis axis least aligned with v: never (near) parallel to it.
    basis = torch.eye(3, dtype=v.dtype, device=v.device)[torch.argmin(v.abs(), dim=-1)]
    return normalize(torch.cross(v, basis, dim=-1))


def angle_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Unsigned angle in [0, pi] between (..., 3) vectors; 2*atan2(|a-b|, |a+b|) of the unit
    vectors, which stays accurate near 0 and pi (unlike acos of the dot product)."""
    a, b = normalize(a), normalize(b)
    return 2.0 * torch.atan2(torch.linalg.vector_norm(a - b, dim=-1), torch.linalg.vector_norm(a + b, dim=-1))


def signed_angle(a: torch.Tensor, b: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Angle between ``a`` and ``b``, negative when ``reference . (a x b) < 0``.
    Equivalently: rotating ``a`` about ``reference`` by the result points it at ``b``
    (when ``reference`` is perpendicular to both)."""
    angle = angle_between(a, b)
    side = (reference * torch.cross(a, b, dim=-1)).sum(-1)
    return torch.where(side < 0, -angle, angle)


def alignment_rotation(v_from: torch.Tensor, v_to: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation about ``v_from x v_to`` that turns direction ``v_from`` onto ``v_to``.
    For (anti)parallel inputs, where that axis is undefined, any perpendicular axis is used
    (identity resp. a half turn)."""
    n_from, n_to = normalize(v_from), normalize(v_to)
    cross = torch.cross(n_from, n_to, dim=-1)
    degenerate = torch.linalg.vector_norm(cross, dim=-1, keepdim=True) < 1e-12
    axis = torch.where(degenerate, _any_perpendicular(n_from), normalize(cross))
    return axis_angle_to_matrix(axis, angle_between(n_from, n_to))


def homogeneous(rotation: torch.Tensor, translation: torch.Tensor | None = None) -> torch.Tensor:
    """(..., 3, 3) [+ (..., 3)] -> (..., 4, 4) rigid/affine matrix acting on column vectors."""
    batch = rotation.shape[:-2]
    out = torch.zeros(*batch, 4, 4, dtype=rotation.dtype, device=rotation.device)
    out[..., :3, :3] = rotation
    if translation is not None:
        out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def scale_matrix(scale: float, dtype=torch.float64, device=None) -> torch.Tensor:
    """4x4 ``diag(s, s, s, 1)``."""
    return torch.diag(torch.tensor([scale, scale, scale, 1.0], dtype=dtype, device=device))


def transform_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (..., 4, 4) affine matrices to (..., N, 3) points (column-vector convention)."""
    return points @ matrix[..., :3, :3].transpose(-1, -2) + matrix[..., None, :3, 3]
