"""Two interacting hands: configurations, placement and contact resolution.

A scene places a left and a right hand (each posed in its template frame, see :mod:`.template`)
in a common *scene frame* (metres) in one of the :data:`INTERACTIONS`. The right hand is then
moved along an approach direction until the two raw solids overlap by a sampled depth (or stay
apart by a sampled gap for near misses).

Ground truth resolves contact (:func:`resolved_sdfs`): a point inside both raw solids belongs to
the hand it is deeper in (the sign of ``sdf_left - sdf_right``), so no point is inside both hands
and the contact surface is the flattened bisector of the overlap, like soft tissue pressed
together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from core.synth.hand_model import HandModel
from core.synth.pose_sampler import HandPose, pose_keypoints, sample_pose, sample_shape
from core.synth.template import HandShapeParams

INTERACTIONS = (
    "palms_touching",
    "clasped",
    "crossed",
    "gripping",
    "fist_in_palm",
    "near_miss",
    "random_touch",
)
INTERACTION_WEIGHTS = (0.16, 0.14, 0.16, 0.16, 0.10, 0.10, 0.18)

# Sampled overlap depth of the raw solids in metres (negative: a gap) per interaction.
_DEPTH_RANGE_M = {
    "palms_touching": (0.001, 0.008),
    "clasped": (0.003, 0.010),
    "crossed": (0.000, 0.006),
    "gripping": (0.002, 0.010),
    "fist_in_palm": (0.002, 0.010),
    "near_miss": (-0.015, -0.003),
    "random_touch": (0.000, 0.008),
}


@dataclass
class SynthScene:
    """Two hands in a common frame (metres, ``mano`` order keypoints)."""

    keypoints_left_m: np.ndarray  # (21, 3)
    keypoints_right_m: np.ndarray  # (21, 3)
    shape_left: HandShapeParams
    shape_right: HandShapeParams
    pose_left: HandPose
    pose_right: HandPose
    interaction: str
    overlap_depth_m: float  # achieved estimate (negative: gap)
    info: dict = field(default_factory=dict)

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> SynthScene:
        """The same scene after ``x -> rotation @ x + translation``."""
        move = lambda kp: kp @ np.asarray(rotation).T + np.asarray(translation)  # noqa: E731
        return SynthScene(
            move(self.keypoints_left_m),
            move(self.keypoints_right_m),
            self.shape_left,
            self.shape_right,
            self.pose_left,
            self.pose_right,
            self.interaction,
            self.overlap_depth_m,
            dict(self.info),
        )

    def hand_models(self, device: torch.device | str = "cpu") -> dict[str, HandModel]:
        return {
            "left": HandModel.from_keypoints(self.keypoints_left_m, "left", self.shape_left, device),
            "right": HandModel.from_keypoints(self.keypoints_right_m, "right", self.shape_right, device),
        }


# ----------------------------------------------------------------------------------------
# Contact resolution
# ----------------------------------------------------------------------------------------
def resolved_sdfs(sdf_left: torch.Tensor, sdf_right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-hand fields after contact resolution, from the raw fields at the same points.

    ``left = max(sdf_left, (sdf_left - sdf_right) / 2)`` is negative exactly where the point is
    inside the left solid and deeper in it than in the right one; likewise for the right hand.
    Both stay 1-Lipschitz (valid for coarse-to-fine meshing), and no point is negative in both."""
    return (
        torch.maximum(sdf_left, (sdf_left - sdf_right) / 2),
        torch.maximum(sdf_right, (sdf_right - sdf_left) / 2),
    )


def skeleton_spheres(model: HandModel, per_cone: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Spheres (centres (S, 3) in the model's frame, radii (S,)) inside the solid that cover its
    fingers and palm core: used to measure how deep one hand reaches into the other."""
    t = torch.linspace(0, 1, per_cone)[:, None, None]
    centres = model.cone_a[None] * (1 - t) + model.cone_b[None] * t
    radii = model.cone_ra[None] * (1 - t[..., 0]) + model.cone_rb[None] * t[..., 0]
    origin, axes, starts, _ends, radius = model._polys[0]
    corners = origin[0] + starts[0, :, :1] * axes[0, 0] + starts[0, :, 1:] * axes[0, 1]
    palm = torch.cat([corners, 0.5 * (corners + corners.mean(0)), corners.mean(0, keepdim=True)])
    c = torch.cat([centres.reshape(-1, 3), palm]) + model._centre
    r = torch.cat([radii.reshape(-1), radius[0].expand(len(palm))])
    return c, r


# ----------------------------------------------------------------------------------------
# Placement helpers
# ----------------------------------------------------------------------------------------
def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _rotation(axis, angle: float) -> np.ndarray:
    k = _unit(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def hand_rotation(distal, palmar) -> np.ndarray:
    """Proper rotation taking the template's distal (+y) and palmar (+z) axes to the given
    scene directions (palmar is orthogonalised against distal)."""
    d = _unit(distal)
    n = _unit(np.asarray(palmar) - np.dot(palmar, d) * d)
    return np.stack([np.cross(d, n), d, n], axis=1)


def _palm_centre(kp: np.ndarray) -> np.ndarray:
    return 0.45 * kp[0] + 0.55 * kp[[5, 9, 13, 17]].mean(0)


def _place(
    kp_template: np.ndarray, rotation: np.ndarray, anchor_template: np.ndarray, anchor_scene
) -> np.ndarray:
    """Rigidly move template keypoints so ``anchor_template`` lands on ``anchor_scene``."""
    return (kp_template - anchor_template) @ rotation.T + np.asarray(anchor_scene)


def _small_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    return _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(0, max_deg)))


def _grip_centre(kp: np.ndarray) -> np.ndarray:
    """Centre of the space enclosed by a gripping hand's curled fingers and palm."""
    palm = kp[[0, 5, 9, 13, 17]].mean(0)
    bent = kp[[6, 7, 10, 11, 14, 15]].mean(0)
    return 0.5 * (palm + bent)


# ----------------------------------------------------------------------------------------
# Interaction configurations: each returns (left keypoints, right keypoints, approach direction
# along which the right hand is moved away from the left one), scene frame.
# ----------------------------------------------------------------------------------------
def _palms_touching(rng, kp_l, kp_r):
    # Prayer / high-five: palms face each other, fingers roughly parallel or at an angle.
    cross = np.deg2rad(rng.uniform(-35, 35))
    rot_l = hand_rotation([0, 1, 0], [1, 0, 0]) @ np.eye(3)
    rot_r = _rotation([1, 0, 0], cross) @ hand_rotation([0, 1, 0], [-1, 0, 0])
    rot_l, rot_r = _small_rotation(rng, 10) @ rot_l, _small_rotation(rng, 10) @ rot_r
    slide = rng.normal(0, [0.0, 0.015, 0.012])
    left = _place(kp_l, rot_l, _palm_centre(kp_l), [0, 0, 0])
    right = _place(kp_r, rot_r, _palm_centre(kp_r), slide)
    return left, right, np.array([1.0, 0, 0])


def _clasped(rng, kp_l, kp_r):
    # Interlaced fingers: palms face each other, fingers curled round the other hand's back,
    # finger axes crossed at 50-100 degrees.
    half = np.deg2rad(rng.uniform(25, 50))
    rot_l = hand_rotation([0, np.cos(half), np.sin(half)], [1, 0, 0])
    rot_r = hand_rotation([0, np.cos(half), -np.sin(half)], [-1, 0, 0])
    rot_l, rot_r = _small_rotation(rng, 8) @ rot_l, _small_rotation(rng, 8) @ rot_r
    left = _place(kp_l, rot_l, _palm_centre(kp_l), [0, 0, 0])
    right = _place(kp_r, rot_r, _palm_centre(kp_r), rng.normal(0, 0.01, 3) * [0, 1, 1])
    return left, right, np.array([1.0, 0, 0])


def _crossed(rng, kp_l, kp_r):
    # One hand lying across the other: both palms face -z, fingers crossing in an X.
    a = np.deg2rad(rng.uniform(20, 70))
    rot_l = hand_rotation([np.sin(a), np.cos(a), 0], [0, 0, -1])
    rot_r = hand_rotation([-np.sin(a), np.cos(a), 0], [0, 0, -1])
    if rng.random() < 0.5:  # palms up instead
        rot_l = hand_rotation([np.sin(a), np.cos(a), 0], [0, 0, 1])
        rot_r = hand_rotation([-np.sin(a), np.cos(a), 0], [0, 0, 1])
    rot_l, rot_r = _small_rotation(rng, 10) @ rot_l, _small_rotation(rng, 10) @ rot_r
    # Fingers overlap: move each palm down-and-out so the crossing is at the fingers or palms.
    reach = rng.uniform(0.02, 0.09)
    left = _place(kp_l, rot_l, kp_l[9], [-reach * np.sin(a), -reach * np.cos(a), 0])
    right = _place(kp_r, rot_r, kp_r[9], [reach * np.sin(a), -reach * np.cos(a), 0])
    return left, right, np.array([0, 0, 1.0])


def _gripping(rng, kp_gripper, kp_held, gripper_is_right: bool):
    # The gripper's curled fingers close round one extended finger (or the thumb) of the other hand.
    held = _place(kp_held, np.eye(3), kp_held[0], [0, 0, 0])
    finger = int(rng.choice([1, 1, 2, 2, 3, 0]))  # index / middle most often, sometimes ring or thumb
    base, mid = held[1 + 4 * finger + 1], held[1 + 4 * finger + 2]
    axis = _unit(mid - base)
    target = base + rng.uniform(0.2, 0.8) * (mid - base)
    # The gripper's tunnel (its radial axis) runs along the held finger; palm on a random side.
    radial = axis * (1.0 if gripper_is_right else -1.0)
    palmar = np.cross(axis, _unit(rng.normal(size=3)))
    palmar = _unit(palmar)
    distal = np.cross(palmar, radial) * (1.0 if gripper_is_right else -1.0)
    rot = _small_rotation(rng, 8) @ hand_rotation(distal, palmar)
    gripper = _place(kp_gripper, rot, _grip_centre(kp_gripper), target)
    return gripper, held, -rot[:, 2]  # opening: the gripper backs off against its palmar direction


def _fist_in_palm(rng, kp_fist, kp_cup, fist_is_right: bool):
    # One hand (a fist) rests in the cupped palm of the other.
    cup = _place(kp_cup, np.eye(3), kp_cup[0], [0, 0, 0])
    normal = _unit(np.cross(cup[5] - cup[0], cup[17] - cup[0])) * (-1.0 if fist_is_right else 1.0)
    centre = _palm_centre(cup) + 0.02 * normal
    fist_rot = _rotation(rng.normal(size=3), rng.uniform(0, np.pi))
    fist = _place(kp_fist, fist_rot, kp_fist[[0, 5, 9, 13, 17]].mean(0), centre + 0.02 * normal)
    return fist, cup, normal


def _random_pair(rng, kp_l, kp_r):
    rot_l = _rotation(rng.normal(size=3), rng.uniform(0, np.pi))
    rot_r = _rotation(rng.normal(size=3), rng.uniform(0, np.pi))
    left = _place(kp_l, rot_l, kp_l[[0, 9]].mean(0), [0, 0, 0])
    right = _place(kp_r, rot_r, kp_r[[0, 9]].mean(0), [0, 0, 0])
    return left, right, _unit(rng.normal(size=3))


_POSE_STYLES = {
    "palms_touching": (("flat", "relaxed", "spread"), ("flat", "relaxed", "spread")),
    "clasped": (("grip", "relaxed", "fist"), ("grip", "relaxed", "fist")),
    "crossed": (("flat", "spread", "relaxed", "point"), ("flat", "spread", "relaxed", "point")),
    "gripping": (("grip", "pinch"), ("point", "flat", "spread")),
    "fist_in_palm": (("fist",), ("flat", "relaxed")),
    "near_miss": (("relaxed", "random", "point", "pinch", "grip", "spread"),) * 2,
    "random_touch": (("relaxed", "random", "point", "pinch", "grip", "spread", "fist", "claw"),) * 2,
}


def sample_scene(rng: np.random.Generator, interaction: str | None = None) -> SynthScene:
    """A random two-hand scene in the scene frame (centred on the hands)."""
    if interaction is None:
        interaction = str(rng.choice(INTERACTIONS, p=INTERACTION_WEIGHTS))
    if interaction not in INTERACTIONS:
        raise ValueError(f"unknown interaction {interaction!r}; known: {INTERACTIONS}")
    # Both hands belong to one person: shared size and build, small left/right differences.
    shape_l = sample_shape(rng)
    shape_r = HandShapeParams(
        scale=shape_l.scale * float(rng.uniform(0.98, 1.02)),
        finger_length=shape_l.finger_length * rng.uniform(0.98, 1.02, 5),
        palm_width=shape_l.palm_width,
        finger_thickness=shape_l.finger_thickness,
        palm_thickness_m=shape_l.palm_thickness_m,
    )
    styles_l, styles_r = _POSE_STYLES[interaction]
    first_is_right = bool(rng.random() < 0.5)  # gripping / fist_in_palm: which hand plays the first role
    if interaction in ("gripping", "fist_in_palm") and first_is_right:
        styles_l, styles_r = styles_r, styles_l
    pose_l = sample_pose(rng, str(rng.choice(styles_l)))
    pose_r = sample_pose(rng, str(rng.choice(styles_r)))
    kp_l = pose_keypoints(shape_l, pose_l, "left")
    kp_r = pose_keypoints(shape_r, pose_r, "right")

    if interaction == "palms_touching":
        left, right, away = _palms_touching(rng, kp_l, kp_r)
    elif interaction == "clasped":
        left, right, away = _clasped(rng, kp_l, kp_r)
    elif interaction == "crossed":
        left, right, away = _crossed(rng, kp_l, kp_r)
    elif interaction in ("gripping", "fist_in_palm"):
        arrange = _gripping if interaction == "gripping" else _fist_in_palm
        if first_is_right:
            right, left, away = arrange(rng, kp_r, kp_l, True)
        else:
            left, right, away = arrange(rng, kp_l, kp_r, False)
            away = -away  # the right hand is the second role: it moves the opposite way
    else:
        left, right, away = _random_pair(rng, kp_l, kp_r)

    target = float(rng.uniform(*_DEPTH_RANGE_M[interaction]))
    right, depth = _resolve_overlap(left, right, shape_l, shape_r, away, target)
    centre = 0.5 * (np.vstack([left, right]).min(0) + np.vstack([left, right]).max(0))
    return SynthScene(
        left - centre,
        right - centre,
        shape_l,
        shape_r,
        pose_l,
        pose_r,
        interaction,
        depth,
        {"target_depth_m": target},
    )


def _resolve_overlap(left, right, shape_l, shape_r, away, target_m, step_m=0.006, iters=10):
    """Move ``right`` along ``away`` (the least needed) so the raw solids overlap by ``target_m``."""
    model_l = HandModel.from_keypoints(left, "left", shape_l)
    model_r = HandModel.from_keypoints(right, "right", shape_r)
    away = _unit(away)
    away_t = torch.as_tensor(away, dtype=torch.float32)
    centres_l, radii_l = skeleton_spheres(model_l)
    centres_r, radii_r = skeleton_spheres(model_r)

    def depth_at(offset: float) -> float:  # the right hand translated by offset * away
        shift = offset * away_t
        d_lr = (radii_l - model_r.sdf(centres_l - shift)).max()
        d_rl = (radii_r - model_l.sdf(centres_r + shift)).max()
        return float(torch.maximum(d_lr, d_rl))

    # Minimal correction of the designed placement: if the solids overlap too much, move the
    # right hand out along `away` until the overlap first drops to the target; if they are
    # apart, move it in until they first reach the target. Then bisect between the last two steps.
    proj_l, proj_r = left @ away, right @ away
    reach = float(proj_l.max() - proj_l.min() + proj_r.max() - proj_r.min()) + 0.05
    d0 = depth_at(0.0)
    direction = 1.0 if d0 > target_m else -1.0
    prev, hit = 0.0, None
    for s in np.arange(step_m, reach, step_m) * direction:
        if (depth_at(s) <= target_m) == (direction > 0):
            hit = s
            break
        prev = s
    if hit is None:
        return right, d0
    deep, shallow = (prev, hit) if direction > 0 else (hit, prev)  # depth(deep) > target >= depth(shallow)
    for _ in range(iters):
        mid = 0.5 * (deep + shallow)
        if depth_at(mid) > target_m:
            deep = mid
        else:
            shallow = mid
    hi = shallow
    return right + hi * away, depth_at(hi)
