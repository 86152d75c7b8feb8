"""Fit the kinematic hand skeleton (:mod:`.skeleton_model`) to detected 2D landmarks.

Per hand the fit minimises, over rotation, wrist ray and depth, hand length, 20 bone-length
factors, 20 joint angles and palm cupping (all jointly, so depth and size are solved together):

* the robust (Cauchy, by iteratively reweighted least squares) pixel error of the skeleton's
  projection with the camera intrinsics against the 2D landmarks (missing landmarks: NaN);
* a weak term pulling each bone's depth direction (z component of its unit vector, camera
  frame) towards the detector's relative 3D shape (MediaPipe's world landmarks), robust too;
* the anthropometric prior (:mod:`.hand_prior`): log hand length ~ N(0, 6.2 %), each bone's
  proportion ~ N(0, 5-10 %), joint angles inside their anatomical ranges (soft walls), and a
  very weak pull towards the rest pose.

A single view cannot tell a big far hand from a small near one (scaling the whole scene about
the camera centre leaves every projection unchanged), so the absolute size, hence the depth,
comes from the prior; the image decides the pose and the proportions.

Two hands are fitted together in one camera: their sizes share one prior (the mean of the two
log lengths ~ the population prior; their difference ~ N(0, 2 %), one person's two hands);
no joint or bone midpoint of one hand may come closer than :attr:`FitOptions.contact_distance_m`
to one of the other (the skeletons do not interpenetrate); hands whose 2D boxes overlap are
pulled weakly into touching distance; and the ratio of their depths is pulled (5 %) towards
the ratio at which the detector's own 3D hands fit their landmarks (MediaPipe's world hands
are too small by a factor that varies from hand to hand, 0.5-0.8, but on the one two-hand
InterHand2.6M frame both hands had 0.70-0.72 of their true depth, so the ratio held to 2 %).

The solver is Levenberg-Marquardt with forward-difference Jacobians evaluated as one batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from core.detect import hand_prior as HP
from core.detect import skeleton_model as M
from core.hand.joints import MANO_PARENTS
from core.types import Camera

_PARENTS = np.array(MANO_PARENTS[1:])  # parent of the bone ending at child joint j (index j - 1)
_CHILDREN = np.arange(1, 21)
_PALM = np.array([0, 5, 9, 13, 17])
_PALM_AND_THUMB_BASE = np.array([0, 1, 5, 9, 13, 17])
_BONE_SD = np.full(M.NUM_BONES, HP.PHALANX_LOG_SD)
_BONE_SD[[4, 8, 12, 16]] = HP.METACARPAL_LOG_SD
_BONE_SD[0] = HP.THUMB_BASE_LOG_SD
_BONE_SD[1] = HP.METACARPAL_LOG_SD


@dataclass
class HandObservation:
    """What the fit sees of one hand. ``landmarks_px`` (21, 2), NaN rows = not observed;
    ``shape_hint`` (21, 3): a relative 3D shape in camera axes (any scale and offset; e.g.
    MediaPipe's world landmarks turned onto the hand's ray), or None; ``detector_score`` in [0, 1]."""

    side: str
    landmarks_px: np.ndarray
    shape_hint: np.ndarray | None = None
    detector_score: float = 1.0
    # Wrist depth at which the detector's own 3D hand (MediaPipe's world landmarks) fits the 2D
    # landmarks. Its absolute value is biased (those hands are too small), but two hands of one
    # image share that bias, so the ratio of the two is a cue for their relative depth.
    detector_depth_m: float | None = None
    # Editing: landmarks the user placed (bool (21,)): trusted (a tighter noise scale, never
    # down-weighted as outliers); and a wrist depth to keep (the hand being edited stays put).
    pinned: np.ndarray | None = None
    depth_prior_m: float | None = None


@dataclass
class FitOptions:
    pixel_sigma_fraction: float = 0.03  # 2D noise scale: this fraction of the hand's pixel size
    min_pixel_sigma: float = 1.5
    robust_scale: float = 2.5  # Cauchy scale of the 2D and depth terms, in sigmas
    depth_direction_sigma: float = 0.35  # of a bone's unit-vector z component
    limit_sigma_deg: float = 2.0  # softness of the joint-range walls
    rest_pose_sigma_deg: float = 60.0
    finger_sigma_scale: float = 1.0  # 2D noise of the finger joints relative to the palm's
    contact_distance_m: float = 0.016  # closest approach of two hands' joints / bone midpoints
    contact_sigma_m: float = 0.002
    # Hands whose 2D boxes overlap are taken to interact: a weak pull keeps their closest
    # joints / bone midpoints within touching distance (2D alone cannot tell their relative depth).
    touch_distance_m: float = 0.02
    touch_sigma_m: float = 0.03
    # Two hands: log ratio of their wrist depths ~ that of the detector's own 3D hands.
    relative_depth_log_sigma: float = 0.05
    shared_scale: bool = True  # two hands: one person's pair of hands
    pinned_sigma_scale: float = 0.1  # noise scale of pinned landmarks relative to the others
    depth_prior_log_sigma: float = 0.02  # of the wrist depth, where a depth prior is given
    iterations: int = 25
    tolerance: float = 1e-4  # stop when an iteration lowers the cost by less than this fraction


@dataclass
class HandFit:
    """One fitted hand: ``joints_m`` (21, 3) camera frame, metres, ``mano`` order;
    ``confidence`` (21,) in [0, 1] (fit residual x detector score; 0 = not observed);
    ``residual_px`` (21,) reprojection error (NaN where not observed)."""

    side: str
    joints_m: np.ndarray
    confidence: np.ndarray
    residual_px: np.ndarray
    hand_length_m: float
    bone_lengths_m: np.ndarray
    angles_deg: np.ndarray
    params: np.ndarray
    iterations: int = 0
    seconds: float = 0.0


@dataclass
class _Hand:
    obs: HandObservation
    uv: np.ndarray  # (21, 2) with NaN
    uv_filled: np.ndarray  # the same, NaN -> 0 (those joints have weight 0)
    seen: np.ndarray  # (21,) bool
    sigma_px: np.ndarray  # (21,) 2D noise scale per joint
    hint_dirs: np.ndarray | None  # (20, 3) unit bone directions of the hint (NaN where unknown)
    hint_dz_filled: np.ndarray | None  # their z components, NaN -> 0 (weight 0)
    pinned: np.ndarray = field(default_factory=lambda: np.zeros(21, dtype=bool))
    w_px: np.ndarray = field(default_factory=lambda: np.ones(21))
    w_dir: np.ndarray = field(default_factory=lambda: np.ones(20))


def _bone_dirs(joints: np.ndarray) -> np.ndarray:
    """(..., 21, 3) -> (..., 20, 3) unit bone directions (parent -> child)."""
    d = joints[..., _CHILDREN, :] - joints[..., _PARENTS, :]
    return d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-9)


def _cauchy_weights(err_sigmas: np.ndarray, scale: float) -> np.ndarray:
    return 1.0 / (1.0 + (err_sigmas / scale) ** 2)


class _Problem:
    """Residuals of one or two hands (the terms of the module docstring)."""

    def __init__(self, hands: list[_Hand], K: np.ndarray, opts: FitOptions):
        self.hands, self.K, self.opts = hands, K, opts
        self.pairs = np.zeros((0, 2), dtype=int)
        depths = [h.obs.detector_depth_m for h in hands]
        self.detector_log_depth_ratio = None
        if len(hands) == 2 and opts.relative_depth_log_sigma > 0 and all(d and d > 0 for d in depths):
            self.detector_log_depth_ratio = float(np.log(depths[0] / depths[1]))
        self.touching = (len(hands) == 2 and opts.touch_sigma_m > 0
                         and _boxes_overlap(hands[0].uv, hands[1].uv))

    def project(self, X: np.ndarray) -> np.ndarray:
        z = np.maximum(X[..., 2], 1e-4)
        return np.stack([self.K[0, 0] * X[..., 0] / z + self.K[0, 2],
                         self.K[1, 1] * X[..., 1] / z + self.K[1, 2]], axis=-1)

    def hand_residuals(self, h: _Hand, p: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(B, 48) params and their (B, 21, 3) joints -> (B, R_hand) residuals."""
        o = self.opts
        parts = []
        e = (self.project(X) - h.uv_filled) / h.sigma_px[:, None]
        parts.append((e * np.sqrt(h.w_px)[:, None]).reshape(len(p), -1))
        if h.hint_dirs is not None:
            ez = (_bone_dirs(X)[..., 2] - h.hint_dz_filled) / o.depth_direction_sigma
            parts.append(ez * np.sqrt(h.w_dir))
        parts.append(p[:, M.BONES] / _BONE_SD)
        angles = p[:, M.ANGLES]
        lo, hi = M.JOINT_LIMITS_RAD[..., 0].ravel(), M.JOINT_LIMITS_RAD[..., 1].ravel()
        wall = np.deg2rad(o.limit_sigma_deg)
        parts.append((np.maximum(angles - hi, 0) + np.minimum(angles - lo, 0)) / wall)
        cup = p[:, M.CUP:M.CUP + 1]
        cup_lo, cup_hi = M.CUP_LIMITS_RAD
        parts.append((np.maximum(cup - cup_hi, 0) + np.minimum(cup - cup_lo, 0)) / wall)
        parts.append(angles / np.deg2rad(o.rest_pose_sigma_deg))
        if h.obs.depth_prior_m is not None:
            parts.append(((p[:, 5] - np.log(h.obs.depth_prior_m)) / o.depth_prior_log_sigma)[:, None])
        return np.concatenate(parts, axis=1)

    def shared_residuals(self, ps: list[np.ndarray], Xs: list[np.ndarray]) -> np.ndarray:
        """Size prior, and for two hands relative depth, no interpenetration, touching; (B, R_shared)."""
        o = self.opts
        s = [p[:, M.SCALE] for p in ps]
        if len(ps) == 1 or not o.shared_scale:
            parts = [si[:, None] / HP.HAND_LENGTH_LOG_SD for si in s]
        else:
            parts = [((s[0] + s[1]) / 2)[:, None] / HP.HAND_LENGTH_LOG_SD,
                     (s[0] - s[1])[:, None] / HP.LEFT_RIGHT_LOG_SD]
        if len(ps) == 2 and self.detector_log_depth_ratio is not None:
            ratio = ps[0][:, 5] - ps[1][:, 5]  # log wrist depths
            parts.append(((ratio - self.detector_log_depth_ratio) / o.relative_depth_log_sigma)[:, None])
        if len(ps) == 2 and len(self.pairs):
            a, b = _contact_points(Xs[0], self.pairs[:, 0]), _contact_points(Xs[1], self.pairs[:, 1])
            dist = np.linalg.norm(a - b, axis=-1)
            parts.append(np.maximum(o.contact_distance_m - dist, 0) / o.contact_sigma_m)
            if self.touching:  # the closest of the candidate pairs
                gap = dist.min(axis=1)
                parts.append((np.maximum(gap - o.touch_distance_m, 0) / o.touch_sigma_m)[:, None])
        return np.concatenate(parts, axis=1)

    def update(self, ps: list[np.ndarray]) -> None:
        """IRLS weights and the active contact pairs at the current parameters."""
        Xs = [M.camera_joints(p, h.obs.side)[0] for p, h in zip(ps, self.hands, strict=True)]
        for h, X in zip(self.hands, Xs, strict=True):
            err = np.linalg.norm(self.project(X) - h.uv, axis=-1) / h.sigma_px
            h.w_px = np.where(h.seen, _cauchy_weights(np.nan_to_num(err), self.opts.robust_scale), 0.0)
            h.w_px[h.pinned] = 1.0
            if h.hint_dirs is not None:
                ez = np.abs(_bone_dirs(X)[:, 2] - h.hint_dirs[:, 2]) / self.opts.depth_direction_sigma
                w = _cauchy_weights(np.nan_to_num(ez), self.opts.robust_scale)
                h.w_dir = np.where(np.isnan(ez), 0.0, w)
        if len(Xs) == 2:
            a, b = _contact_points(Xs[0]), _contact_points(Xs[1])
            d = np.linalg.norm(a[:, None] - b[None], axis=-1)
            near = d < self.opts.contact_distance_m + 0.02
            if self.touching:  # keep the closest pairs as touching candidates too
                near |= d <= np.partition(d.ravel(), 8)[8]
            self.pairs = np.argwhere(near)


def _boxes_overlap(uv_a: np.ndarray, uv_b: np.ndarray) -> bool:
    """Whether the 2D bounding boxes of two hands' observed landmarks intersect."""
    lo_a, hi_a = np.nanmin(uv_a, axis=0), np.nanmax(uv_a, axis=0)
    lo_b, hi_b = np.nanmin(uv_b, axis=0), np.nanmax(uv_b, axis=0)
    return bool(np.all(lo_a <= hi_b) and np.all(lo_b <= hi_a))


_POINT_ENDS = np.concatenate([np.stack([np.arange(21)] * 2, axis=1), np.stack([_CHILDREN, _PARENTS], axis=1)])


def _contact_points(X: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
    """(..., 21, 3) joints -> (..., 41, 3) joints and bone midpoints (or the ``which`` of them)."""
    ends = _POINT_ENDS if which is None else _POINT_ENDS[which]
    return (X[..., ends[:, 0], :] + X[..., ends[:, 1], :]) / 2


def _residuals_and_jacobian(prob: _Problem, ps: list[np.ndarray], free: np.ndarray,
                            eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Residual vector at ``ps`` and its forward-difference Jacobian over the ``free``
    parameter indices (shared by all hands), each hand's columns as one batch."""
    n = len(free)
    batches, Xb = [], []
    for p, h in zip(ps, prob.hands, strict=True):
        b = np.repeat(p[None], n + 1, axis=0)
        b[np.arange(1, n + 1), free] += eps
        batches.append(b)
        Xb.append(M.camera_joints(b, h.obs.side))
    own = [prob.hand_residuals(h, b, X) for h, b, X in zip(prob.hands, batches, Xb, strict=True)]
    base_p, base_X = [b[:1] for b in batches], [X[:1] for X in Xb]
    r0 = np.concatenate([o[0] for o in own] + [prob.shared_residuals(base_p, base_X)[0]])
    cols = []
    offsets = np.cumsum([0] + [o.shape[1] for o in own])
    for k in range(len(ps)):
        bp = [batches[i] if i == k else np.repeat(base_p[i], n + 1, 0) for i in range(len(ps))]
        bX = [Xb[i] if i == k else np.repeat(base_X[i], n + 1, 0) for i in range(len(ps))]
        shared = prob.shared_residuals(bp, bX)
        block = np.zeros((n, len(r0)))
        block[:, offsets[k]:offsets[k + 1]] = own[k][1:] - own[k][0]
        block[:, offsets[-1]:] = shared[1:] - shared[0]
        cols.append(block / eps)
    return r0, np.concatenate(cols).T


def _cost(prob: _Problem, ps: list[np.ndarray]) -> float:
    Xs = [M.camera_joints(p, h.obs.side) for p, h in zip(ps, prob.hands, strict=True)]
    own = [prob.hand_residuals(h, p[None], X) for h, p, X in zip(prob.hands, ps, Xs, strict=True)]
    r = np.concatenate([o[0] for o in own] + [prob.shared_residuals([p[None] for p in ps], Xs)[0]])
    return float(r @ r)


def _levenberg_marquardt(prob: _Problem, ps: list[np.ndarray], free: np.ndarray,
                         iterations: int) -> tuple[list[np.ndarray], int]:
    """Damped Gauss-Newton with IRLS weights refreshed every iteration."""
    lam, n, done = 1e-3, len(free), 0
    for iteration in range(1, iterations + 1):
        done = iteration
        prob.update(ps)
        r, J = _residuals_and_jacobian(prob, ps, free)
        cost0 = float(r @ r)
        H, g = J.T @ J, J.T @ r
        improved = False
        while lam < 1e8:
            A = H + lam * (np.diag(np.diag(H)) + 1e-6 * np.eye(len(H)))
            step = -np.linalg.solve(A, g)
            trial = [p.copy() for p in ps]
            for k in range(len(ps)):
                trial[k][free] += step[k * n:(k + 1) * n]
            cost1 = _cost(prob, trial)
            if cost1 < cost0:
                ps, lam, improved = trial, max(lam / 3, 1e-7), True
                break
            lam *= 4
        if not improved or (cost0 - cost1) < prob.opts.tolerance * cost0:
            break
    return ps, done


def _prepare(obs: HandObservation, K: np.ndarray, opts: FitOptions) -> _Hand:
    uv = np.asarray(obs.landmarks_px, dtype=np.float64).reshape(21, 2)
    seen = ~np.isnan(uv).any(axis=1)
    if seen.sum() < 4:
        raise ValueError(f"{obs.side} hand: {int(seen.sum())} observed landmarks; the fit needs at least 4")
    size = float(np.max(np.nanmax(uv, axis=0) - np.nanmin(uv, axis=0)))
    sigma = np.full(21, max(opts.min_pixel_sigma, opts.pixel_sigma_fraction * size) * opts.finger_sigma_scale)
    sigma[_PALM_AND_THUMB_BASE] /= opts.finger_sigma_scale
    pinned = np.zeros(21, dtype=bool) if obs.pinned is None else np.asarray(obs.pinned, dtype=bool) & seen
    sigma[pinned] *= opts.pinned_sigma_scale
    if obs.depth_prior_m is not None and not obs.depth_prior_m > 0:
        raise ValueError(f"{obs.side} hand: depth_prior_m must be > 0, got {obs.depth_prior_m}")
    hint_dirs = None if obs.shape_hint is None else _bone_dirs(np.asarray(obs.shape_hint, dtype=np.float64))
    dz = None if hint_dirs is None else np.nan_to_num(hint_dirs[:, 2])
    return _Hand(obs, uv, np.nan_to_num(uv), seen, sigma, hint_dirs, dz, pinned)


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Proper rotation R minimising |R src - dst| for centred (N, 3) point sets."""
    U, _, Vt = np.linalg.svd(dst.T @ src)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _initial_params(h: _Hand, K: np.ndarray) -> np.ndarray:
    """Rotation from the palm of the shape hint (or of the flat 2D hand); depth from the
    prior-size palm's fit to the 2D palm."""
    p = np.zeros(M.NUM_PARAMS)
    rest = M.local_joints(p, h.obs.side)[0]
    if h.obs.shape_hint is not None:
        target = np.asarray(h.obs.shape_hint, dtype=np.float64)
    else:  # the hand flat at one depth, facing the camera as its 2D layout says
        rays = np.concatenate([np.nan_to_num(h.uv), np.ones((21, 1))], axis=1) @ np.linalg.inv(K).T
        target = rays
    use = _PALM[~np.isnan(target[_PALM]).any(axis=1)]
    if len(use) >= 3:
        src = rest[use] - rest[use].mean(0)
        dst = target[use] - target[use].mean(0)
        R = _kabsch(src, dst)
        p[M.ROT] = M.rotation_to_axis_angle(R)
        if h.obs.shape_hint is not None:
            local = (target - target[0]) @ R  # camera axes -> hand frame
            p[M.ANGLES] = M.angles_from_directions(local, h.obs.side).ravel()
    return p


def _place(h: _Hand, p: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Translation of the current skeleton that best fits the observed 2D landmarks."""
    from core.detect.lifting import fit_translation

    X = M.camera_joints(p, h.obs.side)[0]
    local = X - X[0]
    weights = h.seen.astype(float)
    weights[_PALM] *= 3.0  # the palm is the rigid part; fingers may still be wrong here
    t = fit_translation(local[h.seen], h.uv[h.seen], K, weights[h.seen])
    if t[2] <= 1e-3:
        t = np.array([0.0, 0.0, 0.5])
    q = p.copy()
    q[3:6] = (t[0] / t[2], t[1] / t[2], np.log(t[2]))
    if h.obs.depth_prior_m is not None:  # the same image, scaled about the camera centre
        q[M.SCALE] += np.log(h.obs.depth_prior_m / t[2])
        q[5] = np.log(h.obs.depth_prior_m)
    return q


def fit_hands(observations: list[HandObservation], camera: Camera,
              options: FitOptions | None = None) -> list[HandFit]:
    """Fit one or two hands (two: jointly, see the module docstring) in ``camera``."""
    start = time.perf_counter()
    opts = options or FitOptions()
    if not 1 <= len(observations) <= 2:
        raise ValueError(f"fit_hands takes one or two hands, got {len(observations)}")
    K = np.asarray(camera.K, dtype=np.float64)
    hands = [_prepare(o, K, opts) for o in observations]
    prob = _Problem(hands, K, opts)
    ps = [_place(h, _initial_params(h, K), K) for h in hands]
    ps, total = _levenberg_marquardt(prob, ps, np.arange(M.NUM_PARAMS), opts.iterations)
    seconds = (time.perf_counter() - start) / len(hands)
    return [_result(prob, h, p, total, seconds) for h, p in zip(hands, ps, strict=True)]


def _result(prob: _Problem, h: _Hand, p: np.ndarray, iterations: int, seconds: float) -> HandFit:
    X = M.camera_joints(p, h.obs.side)[0]
    err_px = np.linalg.norm(prob.project(X) - h.uv, axis=-1)
    conf = joint_confidence(err_px / h.sigma_px, h.obs.detector_score)
    bones = np.linalg.norm(X[_CHILDREN] - X[_PARENTS], axis=-1)
    angles = np.rad2deg(p[M.ANGLES].reshape(5, 4))
    return HandFit(h.obs.side, X, conf, err_px, M.hand_length_m(p), bones, angles, p, iterations, seconds)


def joint_confidence(residual_sigmas: np.ndarray, detector_score: float) -> np.ndarray:
    """Per-joint confidence: the detector's score times a Cauchy factor of the joint's
    reprojection residual in noise sigmas (1 sigma -> 0.86, 2 -> 0.61, 5 -> 0.2); an
    unobserved joint (NaN residual) gets 0."""
    r = np.asarray(residual_sigmas, dtype=np.float64)
    conf = float(np.clip(detector_score, 0.0, 1.0)) / (1.0 + (r / 2.5) ** 2)
    return np.where(np.isnan(r), 0.0, conf)


def fit_hand(observation: HandObservation, camera: Camera, options: FitOptions | None = None) -> HandFit:
    """Fit one hand (see :func:`fit_hands`)."""
    return fit_hands([observation], camera, options)[0]
