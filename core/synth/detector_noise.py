"""Keypoint errors like those of our detector pipeline (MediaPipe + the skeleton fit of
:mod:`core.detect.skeleton_fit`), for network K's training input.

Why: :mod:`core.synth.noise` jitters joints and bends fingers, small errors around the true
hand. What the detector leaves is different (measured on synthetic renders with known truth,
``python -m core.detect.detector_errors``, docs/detection.md "Detector-like keypoint noise"):
its 2D is close, but a single view cannot tell a big far hand from a small near one, so whole
hands sit tens of mm off in depth with the wrong size, palms are turned by ~10-20 degrees, and
now and then a finger is drawn on its neighbour or guessed where nothing was seen. K has to
learn to undo exactly those, so each is a term here, drawn independently per hand:

* **scale about the wrist, along the ray**: the hand is scaled about its wrist by ``s`` and the
  wrist slides along its ray to ``s`` times its depth (together: ``p -> s p``, a scaling about
  the camera centre), so the projection and the bone-length ratios are unchanged: the
  scale-depth ambiguity of a single view (the fit takes the size from a population prior);
* **depth offset** ``d``: every joint slides by ``d`` in depth along its own camera ray
  (``p -> p (z + d) / z``): every projection is kept, the relief too, and the size changes
  by about ``(z + d) / z`` (with the 2D kept, depth and size cannot part). On our renders
  the detector's depth error is larger than its size error explains, because MediaPipe draws
  the render hands ~15 % small in 2D (its wrist sits higher up the hand than the renders'
  wrist joint); ``depth_offset_keeps_projection=False`` models that instead: the hand slides
  rigidly along its wrist's ray (size kept, the wrist's projection kept, the rest of the 2D
  hand shrinks or grows about it by ``z / (z + d)``). It also moved the fingers in 2D twice
  as often as measured (docs/detection.md), so it is not the default;
* **rotation** of the whole hand about its wrist, split as measured into the part about the
  wrist's camera ray (in-plane, which the 2D shows, small) and the part about axes across the
  ray (out-of-plane tilts, larger). A tilt changes only the depths: each joint takes the
  depth of the tilted hand on its own camera ray, so the 2D stays (the detector's 2D is
  close; a rigid tilt would move the fingers in 2D far more than measured);
* **swapped fingers**: two neighbouring fingers (index..pinky) exchange their joint chains;
* **failed fingers**: a finger's PIP, DIP and tip replaced by an implausible guess, as a
  detector draws a finger it did not see: either collapsed onto the palm (between its MCP and
  the palm centre) or stretched out straight (along the wrist->MCP direction, with the
  finger's own bone lengths; the measured failures were more often too long than too short).

Pure numpy; camera frame, metres, ``mano`` joint order; no camera intrinsics needed (a point's
projection depends only on ``x / z`` and ``y / z``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from core.synth.noise import KeypointNoise, perturb_keypoints
from core.types import TwoHandKeypoints

FINGER_CHAINS = tuple(tuple(range(1 + 4 * f, 5 + 4 * f)) for f in range(5))  # mano order, thumb..pinky
SWAPPABLE_PAIRS = ((1, 2), (2, 3), (3, 4))  # index-middle, middle-ring, ring-pinky
PALM_CENTRE_JOINTS = (0, 5, 9, 13, 17)  # wrist and the four finger MCPs
# Where a collapsed finger's PIP, DIP and tip land, as fractions of the way from its MCP to the
# palm centre: a finger folded into the palm, shorter than any real pose of it.
COLLAPSE_FRACTIONS = (0.35, 0.6, 0.8)
# With the detector-like terms on, the jitter of core.synth.noise keeps its per-joint and
# per-finger terms and leaves the whole-hand ones (rotation, scale, depth offset, swaps) to
# them, at their measured sizes.
JITTER_BESIDE_DETECTOR_NOISE = KeypointNoise(
    hand_rotation_deg=0.0, hand_scale=0.0, depth_offset_m=0.0, swap_prob=0.0
)


@dataclass(frozen=True)
class DetectorNoise:
    """Strengths of the detector-like terms, each drawn per hand. Defaults: measured with
    ``python -m core.detect.detector_errors`` on 64 synthetic renders (seeds 7000-7063; 58
    hands found on their side without a gross failure), docs/detection.md "Detector-like
    keypoint noise"; the 4 real InterHand2.6M hands were a cross-check only."""

    enabled: bool = True
    # Share (0..1) of training items whose two hands get these terms; the others keep the
    # plain jitter. Below 1, K also sees the benchmark's noise (the stored jitter of
    # ``python main.py evaluate --data synthetic:...``) and need not trade one for the other.
    # At 1 (the default) no extra random number is drawn, so earlier runs replay unchanged.
    item_share: float = 1.0
    # Depth offset d ~ N(mean, sd), millimetres, of the wrist. Measured: the wrist depth error
    # left after the scale term (``depth_offset_unexplained_mm``), sd 138 mm (the raw wrist
    # depth error: sd 147 mm; real frames: 76 / 81 mm).
    # Its mean there (+218 mm) is left out: MediaPipe puts its wrist landmark higher up the
    # hand than our renders' wrist joint (wrist->middle MCP 0.77-0.81 of the true 2D length),
    # so the fit places render hands too far; on the real frames the mean was -22 mm.
    depth_offset_mean_mm: float = 0.0
    depth_offset_sd_mm: float = 138.0
    # True: each joint along its own ray (every projection kept); False: a rigid slide along
    # the wrist's ray (size kept). See the module docstring.
    depth_offset_keeps_projection: bool = True
    # Scale about the wrist along the ray: log s ~ N(0, sd) (a log ratio, 0.07 = about 7 %).
    # Measured: the sd of log(palm size, detected / true), 0.072 (real frames: 0.065).
    scale_log_sd: float = 0.072
    # Rotation about the wrist, as a rotation vector (degrees): its component along the
    # wrist's camera ray ~ N(0, in_plane_sd), its component across the ray an isotropic 2D
    # Gaussian of RMS length out_of_plane_sd. Measured: the RMS of the palm's rotation error
    # along / across the ray, 6.8 and 24.3 degrees (real frames: 6.1 / 23.2). Set so that K's
    # whole training noise (jitter included) measures the same with the same tool (8.5 /
    # 24.2): the jitter alone already turns the palm by 4.7 / 9.0 degrees, and a tilt that
    # keeps the 2D measures smaller than drawn.
    rotation_in_plane_sd_deg: float = 2.0
    rotation_out_of_plane_sd_deg: float = 38.0
    # Chance per hand (0..1) that one neighbouring pair of fingers is swapped. Measured: 0 of
    # 58 hands (95 % upper bound 5 %); kept small but not zero so that K sees the case.
    swap_prob_per_hand: float = 0.02
    # Chance per finger (0..1) that it is replaced by a guess. Measured: 5.9 % (17 of 290
    # fingers; thumb 7, index 6, middle 2, ring 1, pinky 1).
    failed_finger_prob: float = 0.059
    # Share (0..1) of the failed fingers stretched out straight; the others collapse.
    # Measured: 71 % of the failed fingers reached further from their base than the truth.
    failed_finger_straight_share: float = 0.71
    # Scatter (mm, per coordinate) of a failed finger's guessed joints.
    collapse_jitter_mm: float = 5.0

    def __post_init__(self) -> None:
        sizes = ("depth_offset_sd_mm", "scale_log_sd", "rotation_in_plane_sd_deg",
                 "rotation_out_of_plane_sd_deg", "collapse_jitter_mm")  # fmt: skip
        for name in sizes:
            if getattr(self, name) < 0:
                raise ValueError(f"detector_noise.{name} must be >= 0, got {getattr(self, name)}")
        shares = ("item_share", "swap_prob_per_hand", "failed_finger_prob", "failed_finger_straight_share")
        for name in shares:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"detector_noise.{name} must lie in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict, where: str = "detector_noise") -> DetectorNoise:
        """From a config section; unknown keys are an error naming ``where`` and the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)


def slide_along_rays(joints_m: np.ndarray, depth_offset_m: float) -> np.ndarray:
    """Every joint moved by ``depth_offset_m`` in depth along its own camera ray; the
    projection of every joint is unchanged."""
    j = np.asarray(joints_m, dtype=np.float64)
    z = j[:, 2:3]
    if np.any(z <= 0) or np.any(z + depth_offset_m <= 0):
        raise ValueError("slide_along_rays: joints must stay in front of the camera (z > 0)")
    return j * (z + depth_offset_m) / z


def slide_along_wrist_ray(joints_m: np.ndarray, depth_offset_m: float) -> np.ndarray:
    """The whole hand translated along its wrist's camera ray until the wrist is
    ``depth_offset_m`` deeper: a rigid motion (size kept) that keeps the wrist's projection;
    the other joints' projections move towards or away from it by the factor ``z / (z + d)``."""
    j = np.asarray(joints_m, dtype=np.float64)
    if np.any(j[:, 2] <= 0) or np.any(j[:, 2] + depth_offset_m <= 0):  # every joint moves by d in z
        raise ValueError("slide_along_wrist_ray: joints must stay in front of the camera (z > 0)")
    return j + j[0] * (depth_offset_m / j[0, 2])


def scale_about_wrist_along_ray(joints_m: np.ndarray, factor: float) -> np.ndarray:
    """The hand scaled by ``factor`` about its wrist, the wrist then slid along its ray to
    ``factor`` times its depth: together a scaling about the camera centre, so the projection
    and the bone-length ratios are unchanged."""
    if factor <= 0:
        raise ValueError(f"scale factor must be > 0, got {factor}")
    j = np.asarray(joints_m, dtype=np.float64)
    wrist = j[0]
    return wrist * factor + (j - wrist) * factor


def rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * kx + (1 - np.cos(angle_rad)) * kx @ kx


def rotate_about_wrist(joints_m: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    j = np.asarray(joints_m, dtype=np.float64)
    return (j - j[0]) @ np.asarray(rotation).T + j[0]


def tilt_depths_about_wrist(joints_m: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Each joint on its own camera ray at the depth it has in the hand rotated about its
    wrist by ``rotation``: the projection is unchanged, the relief turns."""
    j = np.asarray(joints_m, dtype=np.float64)
    depth = rotate_about_wrist(j, rotation)[:, 2:3]
    if np.any(depth <= 0):
        raise ValueError("tilt_depths_about_wrist: joints must stay in front of the camera (z > 0)")
    return j * depth / j[:, 2:3]


def swap_fingers(joints_m: np.ndarray, finger_a: int, finger_b: int) -> np.ndarray:
    """Fingers ``finger_a`` and ``finger_b`` (0 = thumb .. 4 = pinky) exchange their joints."""
    j = np.array(joints_m, dtype=np.float64)
    a, b = list(FINGER_CHAINS[finger_a]), list(FINGER_CHAINS[finger_b])
    j[a], j[b] = j[b].copy(), j[a].copy()
    return j


def collapse_finger(joints_m: np.ndarray, finger: int, scatter_m: np.ndarray | None = None) -> np.ndarray:
    """Finger ``finger``'s PIP, DIP and tip placed between its MCP and the palm centre (see
    ``COLLAPSE_FRACTIONS``), plus ``scatter_m`` ((3, 3) metres, or none)."""
    j = np.array(joints_m, dtype=np.float64)
    chain = FINGER_CHAINS[finger]
    base, centre = j[chain[0]], j[list(PALM_CENTRE_JOINTS)].mean(axis=0)
    guess = np.array([base + f * (centre - base) for f in COLLAPSE_FRACTIONS])
    if scatter_m is not None:
        guess = guess + scatter_m
    j[list(chain[1:])] = guess
    return j


def straighten_finger(joints_m: np.ndarray, finger: int, scatter_m: np.ndarray | None = None) -> np.ndarray:
    """Finger ``finger``'s PIP, DIP and tip stretched out straight from its base joint along the
    wrist->base direction, each bone keeping its length, plus ``scatter_m`` ((3, 3) metres)."""
    j = np.array(joints_m, dtype=np.float64)
    chain = list(FINGER_CHAINS[finger])
    direction = j[chain[0]] - j[0]
    direction = direction / np.linalg.norm(direction)
    reach = np.cumsum(np.linalg.norm(np.diff(j[chain], axis=0), axis=1))
    guess = j[chain[0]] + reach[:, None] * direction
    if scatter_m is not None:
        guess = guess + scatter_m
    j[chain[1:]] = guess
    return j


def rotation_about_ray(ray: np.ndarray, in_plane_rad: float, across_rad: np.ndarray) -> np.ndarray:
    """The rotation whose rotation vector is ``in_plane_rad`` along unit ``ray`` plus
    ``across_rad`` (2,) along two axes across it."""
    ray = np.asarray(ray, dtype=np.float64) / np.linalg.norm(ray)
    helper = np.array([1.0, 0.0, 0.0]) if abs(ray[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(ray, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(ray, e1)
    vec = in_plane_rad * ray + across_rad[0] * e1 + across_rad[1] * e2
    angle = float(np.linalg.norm(vec))
    return np.eye(3) if angle == 0.0 else rotation_matrix(vec, angle)


def detector_noise_hand(joints_m: np.ndarray, rng: np.random.Generator, noise: DetectorNoise) -> np.ndarray:
    """(21, 3) camera-frame keypoints -> a copy with the detector-like errors of ``noise``.
    The draws are always made in the same order (a function of ``rng`` alone); a disabled
    or all-zero ``noise`` returns the joints unchanged."""
    j = np.array(joints_m, dtype=np.float64)
    # Draws first, so that every magnitude uses the same random numbers whatever the others.
    swap_u, swap_pair = rng.random(), int(rng.integers(len(SWAPPABLE_PAIRS)))
    fail_u, straight_u = rng.random(5), rng.random(5)
    scatter = rng.normal(size=(5, 3, 3))
    rot_z = rng.normal(size=3)
    scale_z, depth_z = rng.normal(), rng.normal()
    if not noise.enabled:
        return j
    if swap_u < noise.swap_prob_per_hand:
        j = swap_fingers(j, *SWAPPABLE_PAIRS[swap_pair])
    for finger in range(5):
        if fail_u[finger] < noise.failed_finger_prob:
            straight = straight_u[finger] < noise.failed_finger_straight_share
            guess = straighten_finger if straight else collapse_finger
            j = guess(j, finger, scatter[finger] * noise.collapse_jitter_mm / 1000.0)
    across = rot_z[1:] * np.deg2rad(noise.rotation_out_of_plane_sd_deg) / np.sqrt(2.0)
    tilt = rotation_about_ray(j[0], 0.0, across)
    if np.any(across != 0) and rotate_about_wrist(j, tilt)[:, 2].min() > 0.05:  # not behind the camera
        j = tilt_depths_about_wrist(j, tilt)
    in_plane = rot_z[0] * np.deg2rad(noise.rotation_in_plane_sd_deg)
    if in_plane != 0:
        j = rotate_about_wrist(j, rotation_about_ray(j[0], in_plane, np.zeros(2)))
    if noise.scale_log_sd > 0:
        j = scale_about_wrist_along_ray(j, float(np.exp(scale_z * noise.scale_log_sd)))
    depth = (noise.depth_offset_mean_mm + depth_z * noise.depth_offset_sd_mm) / 1000.0
    if depth != 0:
        # A hand is never pushed to within 5 cm of the camera (a tail draw near a close hand).
        depth = max(depth, 0.05 - float(j[:, 2].min()))
        slide = slide_along_rays if noise.depth_offset_keeps_projection else slide_along_wrist_ray
        j = slide(j, depth)
    return j


def draws_detector_terms(rng: np.random.Generator, noise: DetectorNoise | None) -> bool:
    """Whether this training item gets the detector-like terms (``enabled`` and, below an
    ``item_share`` of 1, a draw)."""
    if noise is None or not noise.enabled:
        return False
    return noise.item_share >= 1.0 or bool(rng.random() < noise.item_share)


def apply_detector_noise(
    keypoints: TwoHandKeypoints, rng: np.random.Generator, noise: DetectorNoise
) -> TwoHandKeypoints:
    """Both hands with independent detector-like errors (absent hands stay absent)."""
    out = keypoints.copy()
    for side in keypoints.present_sides():
        setattr(out, side, detector_noise_hand(keypoints.hand(side), rng, noise))
    return out


def training_noise(
    keypoints: TwoHandKeypoints, rng: np.random.Generator, noise: DetectorNoise | None
) -> TwoHandKeypoints:
    """K's fresh training input from the truth (``renoise``): the jitter of
    :mod:`core.synth.noise`, then, with ``noise`` on, the detector-like terms (the jitter then
    without its own whole-hand terms, see ``JITTER_BESIDE_DETECTOR_NOISE``)."""
    on = draws_detector_terms(rng, noise)
    jittered = perturb_keypoints(keypoints, rng, JITTER_BESIDE_DETECTOR_NOISE if on else None)
    return apply_detector_noise(jittered, rng, noise) if on else jittered
