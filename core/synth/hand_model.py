"""A watertight hand surface driven by 21 keypoints, as a signed-distance bound.

The hand is a "sphere-mesh" style solid built from the keypoints (``mano`` order, metres, any
frame) and the shape parameters:

* palm: a convex polygon through the wrist and the MCP joints, swept by a sphere whose diameter
  is the palm thickness (25-30 mm), smoothly joined to a thenar bulge (over the thumb
  metacarpal) and a smaller hypothenar pad;
* fingers: tapered capsules per phalanx (base -> tip radii from the shape parameters), the
  distal one ending at the fingertip keypoint (which lies on the skin);
* webbing: sphere-swept triangles between neighbouring finger bases (and thumb-index), blended in.

Smooth unions keep the function 1-Lipschitz, so ``sdf(x)`` has the exact sign (exact inside
test) and ``|sdf(x)|`` never exceeds the true distance to the surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.errors import KeypointError
from core.hand.joints import MANO_MIDDLE_MCP, MANO_WRIST, NUM_JOINTS
from core.synth import template as T
from core.synth.sdf_primitives import (
    box_distance,
    polygon_edges,
    round_cone_sdf,
    smooth_min,
    swept_polygon_sdf,
)

# Blend widths of the smooth unions (metres).
PALM_BLEND_M = 0.010  # palm slab + thenar + hypothenar
THUMB_BASE_BLEND_M = 0.008  # thumb metacarpal into the palm
WEB_FINGER_BLEND_M = 0.003  # webbing into the finger sides
FINGER_PALM_BLEND_M = 0.005  # fingers and webs into the palm
CULL_MARGIN_M = 0.025  # primitive groups farther than this from a point are replaced by their box distance

_FINGER_BASE_JOINTS = (1, 5, 9, 13, 17)  # thumb CMC and the four MCPs in the mano order
# Rows of the cone table: 0 thenar, 1 hypothenar, 2 thumb metacarpal (these three belong to the
# palm group), then the phalanges of each finger (thumb: 2, others: 3).
_FINGER_CONE_ROWS = (slice(3, 5), slice(5, 8), slice(8, 11), slice(11, 14), slice(14, 17))
_MAX_POLYGON_VERTICES = 12


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _convex_hull_ccw(points_2d: np.ndarray) -> np.ndarray:
    """Counter-clockwise convex hull (monotone chain) of (K, 2) points."""
    pts = sorted(map(tuple, np.asarray(points_2d, dtype=np.float64)))

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and np.cross(np.subtract(out[-1], out[-2]), np.subtract(p, out[-2])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


@dataclass
class _Polygon:
    origin: np.ndarray  # (3,)
    axes: np.ndarray  # (3, 3) rows u, v, normal
    vertices_2d: np.ndarray  # (M, 2) CCW
    radius: float


def _triangle(a: np.ndarray, b: np.ndarray, c: np.ndarray, radius: float) -> _Polygon:
    normal = _unit(np.cross(b - a, c - a))
    u = _unit(b - a)
    v = np.cross(normal, u)
    verts = np.array([[0.0, 0.0], [np.dot(b - a, u), 0.0], [np.dot(c - a, u), np.dot(c - a, v)]])
    return _Polygon(a, np.stack([u, v, normal]), verts, radius)


@dataclass
class HandFrame:
    """The palm frame derived from keypoints: origin at the wrist; ``radial``, ``distal``,
    ``palmar`` unit axes (for a left hand this triad is left-handed, the mirror image)."""

    wrist: np.ndarray
    radial: np.ndarray
    distal: np.ndarray
    palmar: np.ndarray

    @staticmethod
    def from_keypoints(joints: np.ndarray, side: str) -> HandFrame:
        sign = 1.0 if side == "right" else -1.0
        wrist = joints[MANO_WRIST]
        distal = _unit(joints[MANO_MIDDLE_MCP] - wrist)
        across = joints[5] - joints[17]  # index MCP - pinky MCP: radial
        palmar = _unit(sign * np.cross(across, distal))
        radial = sign * np.cross(distal, palmar)
        return HandFrame(wrist, radial, distal, palmar)

    def to_2d(self, p: np.ndarray) -> np.ndarray:
        rel = np.asarray(p) - self.wrist
        return np.stack([rel @ self.radial, rel @ self.distal], axis=-1)

    def height(self, p: np.ndarray) -> np.ndarray:
        return (np.asarray(p) - self.wrist) @ self.palmar


class HandModel:
    """The solid of one hand. ``sdf(points)`` -> signed-distance bound (negative inside), metres.

    Built with :meth:`from_keypoints`; every primitive lives in the keypoints' frame, so a rigid
    motion of the keypoints moves the surface with them."""

    def __init__(
        self,
        cones: dict[str, np.ndarray],
        palm: _Polygon,
        webs: list[_Polygon],
        side: str,
        device: torch.device | str = "cpu",
    ):
        self.side = side
        self.device = torch.device(device)
        polygons = [palm, *webs]
        lo = np.minimum(cones["a"] - cones["ra"][:, None], cones["b"] - cones["rb"][:, None]).min(0)
        hi = np.maximum(cones["a"] + cones["ra"][:, None], cones["b"] + cones["rb"][:, None]).max(0)
        for p in polygons:
            corners = p.origin + p.vertices_2d @ p.axes[:2]
            lo = np.minimum(lo, corners.min(0) - p.radius)
            hi = np.maximum(hi, corners.max(0) + p.radius)
        self.bounds_m = (lo, hi)
        # Primitives are stored relative to the box centre so float32 keeps sub-micron precision.
        centre = (lo + hi) / 2
        f32 = dict(dtype=torch.float32, device=self.device)
        t = lambda x: torch.as_tensor(np.asarray(x), **f32)  # noqa: E731
        self._centre64 = centre
        self._centre = t(centre)
        self._lo, self._hi = t(lo - centre), t(hi - centre)
        # cone rows: see _FINGER_CONE_ROWS
        self.cone_a, self.cone_b = t(cones["a"] - centre), t(cones["b"] - centre)
        self.cone_ra, self.cone_rb = t(cones["ra"]), t(cones["rb"])
        self._polys = []
        for group in ([palm], webs):
            starts, ends = polygon_edges(
                [t(p.vertices_2d) for p in group], max(len(p.vertices_2d) for p in group)
            )
            self._polys.append(
                (
                    t(np.stack([p.origin - centre for p in group])),
                    t(np.stack([p.axes for p in group])),
                    starts,
                    ends,
                    t([p.radius for p in group]),
                )
            )
        self._boxes = self._group_boxes()

    # ------------------------------------------------------------------------------------
    @staticmethod
    def from_keypoints(
        joints_m: np.ndarray,
        side: str,
        shape: T.HandShapeParams | None = None,
        device: torch.device | str = "cpu",
    ) -> HandModel:
        """Keypoints (21, 3), ``mano`` order, metres, any frame -> the hand solid in that frame.

        Long: one fitting pass whose steps share the intermediate joint frames."""
        joints = np.asarray(joints_m, dtype=np.float64)
        if joints.shape != (NUM_JOINTS, 3) or not np.all(np.isfinite(joints)):
            raise KeypointError(
                f"{side} hand: need 21 finite 3D keypoints in metres, got shape {joints.shape}"
            )
        if side not in ("left", "right"):
            raise KeypointError(f"hand side must be 'left' or 'right', got {side!r}")
        shape = shape or T.HandShapeParams()
        frame = HandFrame.from_keypoints(joints, side)
        palm_len_scale = float(np.linalg.norm(joints[MANO_MIDDLE_MCP] - joints[MANO_WRIST])) / 0.090
        radii = shape.finger_radii_m()
        half_thick = shape.palm_thickness_m / 2

        # --- palm slab: convex polygon in the plane through the wrist and the MCPs ---------
        base = joints[list(_FINGER_BASE_JOINTS)]
        cmc, mcps = base[0], base[1:]
        plane_h = float(np.mean(frame.height(np.vstack([joints[MANO_WRIST], mcps]))))
        uv_mcp = frame.to_2d(mcps)
        uv_cmc = frame.to_2d(cmc)
        half_wrist = T.WRIST_HALF_WIDTH_M * shape.palm_width * palm_len_scale
        s = palm_len_scale
        candidates = np.vstack(
            [
                uv_mcp - [0.0, 0.004 * s],
                uv_mcp[0] + [0.001 * s, -0.014 * s],  # radial edge below the index MCP
                uv_mcp[3] + [-0.002 * s, -0.016 * s],  # ulnar edge below the pinky MCP
                [uv_mcp[3, 0] * 0.85, uv_mcp[3, 1] * 0.4],  # ulnar edge of the hypothenar
                [half_wrist * 0.9, -0.004 * s],
                [-half_wrist, -0.004 * s],
                uv_cmc + [-0.004 * s, 0.0],
            ]
        )
        hull = _convex_hull_ccw(candidates)[:_MAX_POLYGON_VERTICES]
        # (the 2D inside test only needs CCW order in (u, v); the triad's handedness is irrelevant)
        axes = np.stack([frame.radial, frame.distal, frame.palmar])
        palm = _Polygon(frame.wrist + plane_h * frame.palmar, axes, hull, half_thick)

        def at(u: float, v: float, h: float) -> np.ndarray:
            return frame.wrist + u * frame.radial + v * frame.distal + h * frame.palmar

        thumb_mcp = joints[2]
        thenar_a = at(0.011 * s, 0.016 * s, plane_h + 0.004)
        thenar_b = cmc + 0.5 * (thumb_mcp - cmc) - 0.004 * s * frame.radial + 0.002 * frame.palmar
        hypo_a = at(-0.010 * s, 0.016 * s, plane_h + 0.003)
        hypo_b = at(uv_mcp[3, 0] * 0.7, uv_mcp[3, 1] * 0.62, plane_h + 0.003)

        # --- cones: thenar, hypothenar, thumb metacarpal, then the 14 finger phalanges -----
        thick = shape.palm_thickness_m
        a, b = [thenar_a, hypo_a], [thenar_b, hypo_b]
        ra, rb = [0.58 * thick, 0.45 * thick], [0.44 * thick, 0.40 * thick]
        for f in range(5):
            chain = joints[1 + 4 * f : 5 + 4 * f] if f else joints[1:5]
            tip_dir = _unit(chain[3] - chain[2])
            ends = [chain[1], chain[2], chain[3] - radii[f, 3] * tip_dir]
            starts = [chain[0], chain[1], chain[2]]
            for k in range(3):
                a.append(starts[k])
                b.append(ends[k])
                ra.append(radii[f, k])
                rb.append(radii[f, k + 1])
        cones = {"a": np.array(a), "b": np.array(b), "ra": np.array(ra), "rb": np.array(rb)}

        # --- webbing: triangles between neighbouring finger bases, on the palmar side ----
        webs = []
        for f in range(1, 4):
            m0, m1 = joints[1 + 4 * f], joints[1 + 4 * (f + 1)]
            p0, p1 = joints[2 + 4 * f], joints[2 + 4 * (f + 1)]
            r = 0.6 * min(radii[f, 0], radii[f + 1, 0])
            lift = 0.35 * r * frame.palmar
            reach = 0.5 * ((m0 + 0.38 * (p0 - m0)) + (m1 + 0.38 * (p1 - m1)))
            webs.append(_triangle(m0 + lift, m1 + lift, reach + lift, r))
        thumb_web_r = 0.55 * radii[1, 0]
        webs.append(
            _triangle(
                cmc + 0.25 * (thumb_mcp - cmc),
                cmc + 0.85 * (thumb_mcp - cmc),
                joints[5] + 0.1 * (joints[6] - joints[5]),
                thumb_web_r,
            )
        )
        return HandModel(cones, palm, webs, side=side, device=device)

    # ------------------------------------------------------------------------------------
    def _group_boxes(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Axis-aligned boxes (relative to the centre) of the primitive groups used for culling:
        palm (slab, thenar, hypothenar, thumb metacarpal), webs, and the five fingers."""

        def cone_box(rows):
            a, b = self.cone_a[rows], self.cone_b[rows]
            ra, rb = self.cone_ra[rows, None], self.cone_rb[rows, None]
            return torch.minimum(a - ra, b - rb).amin(0), torch.maximum(a + ra, b + rb).amax(0)

        def poly_box(origin, axes, starts, _ends, radius):
            corners = (
                origin[:, None] + starts[..., :1] * axes[:, None, 0] + starts[..., 1:] * axes[:, None, 1]
            )
            r = radius[:, None, None]
            return (corners - r).amin((0, 1)), (corners + r).amax((0, 1))

        slab_lo, slab_hi = poly_box(*self._polys[0])
        cone_lo, cone_hi = cone_box(slice(0, 3))
        boxes = [
            (torch.minimum(slab_lo, cone_lo), torch.maximum(slab_hi, cone_hi)),
            poly_box(*self._polys[1]),
        ]
        boxes += [cone_box(rows) for rows in _FINGER_CONE_ROWS]
        return boxes

    def _palm_sdf(self, p: torch.Tensor) -> torch.Tensor:
        cones = round_cone_sdf(p, self.cone_a[:3], self.cone_b[:3], self.cone_ra[:3], self.cone_rb[:3])
        slab = swept_polygon_sdf(p, *self._polys[0])[:, 0]
        palm = smooth_min(smooth_min(slab, cones[:, 0], PALM_BLEND_M), cones[:, 1], PALM_BLEND_M)
        return smooth_min(palm, cones[:, 2], THUMB_BASE_BLEND_M)

    def _webs_sdf(self, p: torch.Tensor) -> torch.Tensor:
        return swept_polygon_sdf(p, *self._polys[1]).amin(-1)

    def _finger_sdf(self, p: torch.Tensor, finger: int) -> torch.Tensor:
        rows = _FINGER_CONE_ROWS[finger]
        return round_cone_sdf(
            p, self.cone_a[rows], self.cone_b[rows], self.cone_ra[rows], self.cone_rb[rows]
        ).amin(-1)

    def _sdf_chunk(self, p: torch.Tensor) -> torch.Tensor:
        """``p`` (N, 3) relative to the box centre -> (N,). A group farther than
        :data:`CULL_MARGIN_M` from a point contributes its box distance instead of its exact
        value: smaller but still beyond every blend width, so the result is exact wherever
        ``|sdf| < CULL_MARGIN_M - 8 mm`` and a positive lower bound elsewhere."""
        evaluators = [self._palm_sdf, self._webs_sdf] + [
            (lambda q, f=f: self._finger_sdf(q, f)) for f in range(5)
        ]
        values = []
        for (lo, hi), fn in zip(self._boxes, evaluators, strict=True):
            v = box_distance(p, lo, hi)
            near = torch.nonzero(v < CULL_MARGIN_M).squeeze(1)
            if len(near) == len(p):
                v = fn(p)
            elif len(near):
                v[near] = fn(p[near])
            values.append(v)
        palm, webs = values[0], values[1]
        fingers = torch.stack(values[2:], -1).amin(-1)
        return smooth_min(palm, smooth_min(webs, fingers, WEB_FINGER_BLEND_M), FINGER_PALM_BLEND_M)

    @torch.no_grad()
    def sdf(self, points_m: torch.Tensor | np.ndarray, chunk: int = 65536) -> torch.Tensor:
        """(..., 3) points in the keypoints' frame, metres -> (...) signed-distance bound, metres
        (negative inside; exact within ~1 cm of the surface, a positive lower bound farther out)."""
        if torch.is_tensor(points_m) and points_m.dtype == torch.float64 or not torch.is_tensor(points_m):
            p64 = torch.as_tensor(points_m, dtype=torch.float64, device=self.device)
            p = (p64 - torch.as_tensor(self._centre64, device=self.device)).to(torch.float32)
        else:
            p = points_m.to(device=self.device, dtype=torch.float32) - self._centre
        shape = p.shape[:-1]
        p = p.reshape(-1, 3)
        out = box_distance(p, self._lo, self._hi)
        near = torch.nonzero(out <= CULL_MARGIN_M).squeeze(1)
        for start in range(0, len(near), chunk):
            idx = near[start : start + chunk]
            out[idx] = self._sdf_chunk(p[idx])
        return out.reshape(shape)

    def contains(self, points_m) -> torch.Tensor:
        """Exact inside test: (...) bool."""
        return self.sdf(points_m) < 0
