"""HALO canonicalisation: 21 posed keypoints -> root rotation, 16 unpose matrices, bone lengths.

Pure, batched float64 torch functions (leading batch dims ``...``), one per step of the
reference pipeline so each intermediate can be checked on its own:

1. :func:`wrist_relative_halo_joints` -- subtract the wrist, reorder to ``halo``, mirror left
   hands (x -> -x) so that both sides go through the right-hand pipeline;
2. :func:`global_canonical_transform` -- rotate the wrist->middle-MCP bone onto -y and the
   index/middle root-bone plane normal onto +z (``R2 @ R1``);
3. :func:`change_axes` -- new (x, y, z) = old (y, z, x); afterwards wrist->middle-MCP is -x;
4. :func:`pose_converter` -- per-bone rigid matrices that unpose the hand into HALO's straight
   canonical pose (biomech order, 21 matrices, identity for the wrist);
5. :func:`select_halo_parts` + :func:`scale_unpose_matrices` -- the 16 part matrices in
   normalised units (metres / 0.4);
6. :func:`part_bone_lengths` -- the 16 part bone lengths in metres.

Frames used in names: ``posed`` = the caller's frame (camera/world), metres; ``canon`` = the
hand's HALO canonical frame (wrist at 0, wrist->middle MCP along -x, palm normal along y;
left hands mirrored), metres; ``canon_norm`` = canonical metres / 0.4, where the networks'
query points live. Column-vector convention throughout (``M @ [x; 1]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.errors import KeypointError
from core.geometry.rotations import (
    alignment_rotation,
    axis_angle_to_matrix,
    homogeneous,
    normalize,
    scale_matrix,
    signed_angle,
    transform_points,
)
from core.hand.joints import (
    BIOMECH_BONE_PARENT,
    BIOMECH_TO_HALO,
    HALO_PART_BONES,
    HALO_PART_MATRIX_JOINT,
    HALO_TO_BIOMECH,
    HAND_SIDES,
    MANO_TO_HALO,
    MANO_WRIST,
    NUM_JOINTS,
)
from core.hand.mirror import mirror_if_left

GLOBAL_SCALE = 0.4  # canonical metres per normalised unit
# Canonical angles of HALO's straight hand (radians).
ROOT_PLANE_ANGLES = (0.8, 0.2, 0.2)  # thumb plane vs index plane; ring plane; pinky plane
ROOT_BONE_ANGLES = (0.4, 0.2, 0.2, 0.2)  # thumb-index, index-middle, middle-ring, ring-pinky
MIN_HAND_EXTENT_M = 0.01  # a hand whose joints all lie within 1 cm is treated as collapsed

_BONE_MIN_LENGTH = 1e-9
_ACOS_CLIP = 1.0 - 1e-6  # reference clips the cosines before acos (bounds tiny angles at ~1.4e-3)
# The official (float32) angle code clips with this constant rounded to float32: clipped angles
# are acos(0.99999899) = 1.42357e-3 there, not 1.41421e-3 (confirmed on the golden matrices).
_ACOS_CLIP_F32 = float(np.float32(_ACOS_CLIP))
_ABDUCTION_SIGN_EPS = 1e-6
_NUM_BONES = NUM_JOINTS - 1
_FINGERS = 5


# --------------------------------------------------------------------------------------
# Typed results
# --------------------------------------------------------------------------------------
@dataclass
class HaloInputs:
    """Per-hand inputs of networks I and R (Im2Hands convention), float64, batch dims ``...``.

    * ``unpose_mats`` (..., 16, 4, 4): part ``b`` maps *normalised* canonical-frame points of the
      globally canonicalised hand to part ``b``'s straight-hand frame, with Im2Hands' extra
      right factor S(0.4): ``unpose_mats[b] @ [p / 0.4; 1]`` is the part-frame point of ``p``.
    * ``bone_lengths`` (..., 16): metres, pairs of :data:`core.hand.joints.HALO_PART_BONES`.
    * ``root_rot_mat`` (..., 4, 4): pure rotation ``swap @ R2 @ R1`` taking wrist-relative
      (left: x-mirrored) posed metres to canonical metres. The reference applies it to row
      vectors, ``p_row @ root_rot_mat`` == ``root_rot_mat.T @ p``, to go canonical -> posed.
    * ``wrist_m`` (..., 3): the posed wrist, metres, not mirrored.
    * ``side``: ``"left"`` or ``"right"`` for the whole batch.
    """

    unpose_mats: torch.Tensor
    bone_lengths: torch.Tensor
    root_rot_mat: torch.Tensor
    wrist_m: torch.Tensor
    side: str

    def canon_norm_to_posed_m(self, points_canon_norm: torch.Tensor) -> torch.Tensor:
        return canon_norm_to_posed_m(points_canon_norm, self.root_rot_mat, self.wrist_m, self.side)

    def posed_m_to_canon_norm(self, points_posed_m: torch.Tensor) -> torch.Tensor:
        return posed_m_to_canon_norm(points_posed_m, self.root_rot_mat, self.wrist_m, self.side)


@dataclass
class HaloBaseInputs:
    """Inputs of the HALO base model (HALO-repo convention, no extra S(0.4)), float64.

    * ``unpose_mats`` (..., 16, 4, 4): ``unpose_mats[b] @ [p; 1]`` for normalised canonical ``p``;
    * ``bone_lengths`` (..., 16): metres;
    * ``normalization_mat`` (..., 4, 4): posed metres -> canonical metres
      (``root_rot @ mirror @ T(-wrist)``; for a left hand the mirror makes its determinant -1).
    """

    unpose_mats: torch.Tensor
    bone_lengths: torch.Tensor
    normalization_mat: torch.Tensor


# --------------------------------------------------------------------------------------
# Validation and input handling
# --------------------------------------------------------------------------------------
def _check_side(side: str) -> None:
    if side not in HAND_SIDES:
        raise KeypointError(f"hand side must be 'left' or 'right', got {side!r}")


def validate_hand_keypoints(joints_mano_m, side: str) -> None:
    """Raise :class:`KeypointError` unless ``joints_mano_m`` (..., 21, 3) holds finite keypoints
    in metres that span at least :data:`MIN_HAND_EXTENT_M` for every hand of the batch."""
    _check_side(side)
    try:
        joints = _as_float64(joints_mano_m).detach()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise KeypointError(f"{side} hand keypoints are not a numeric array: {exc}") from exc
    shape = tuple(joints.shape)
    if len(shape) < 2 or shape[-2:] != (NUM_JOINTS, 3):
        raise KeypointError(
            f"{side} hand keypoints must have shape (..., {NUM_JOINTS}, 3) (21 joints x xyz in metres), "
            f"got {shape}"
        )
    if not bool(torch.isfinite(joints).all()):
        raise KeypointError(f"{side} hand keypoints contain NaN or infinite values")
    if joints.numel() == 0:
        return
    extent = torch.cdist(joints, joints).amax(dim=(-1, -2))  # largest joint-to-joint distance
    smallest = float(extent.min())
    if smallest < MIN_HAND_EXTENT_M:
        raise KeypointError(
            f"{side} hand keypoints are collapsed: all 21 joints lie within {smallest * 100:.2g} cm "
            f"(need at least {MIN_HAND_EXTENT_M * 100:.0f} cm; are the units metres?)"
        )


def _as_float64(x, like: torch.Tensor | None = None) -> torch.Tensor:
    device = like.device if like is not None else None
    if torch.is_tensor(x):
        return x.to(dtype=torch.float64, device=device if device is not None else x.device)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)


def wrist_relative_halo_joints(joints_mano_m, side: str) -> torch.Tensor:
    """(..., 21, 3) posed mano-order metres -> wrist-relative, ``halo`` order, left x-mirrored."""
    _check_side(side)
    joints = _as_float64(joints_mano_m)
    relative = joints - joints[..., MANO_WRIST : MANO_WRIST + 1, :]
    return mirror_if_left(relative[..., list(MANO_TO_HALO), :], side)


# --------------------------------------------------------------------------------------
# Step 1: global (palm) normalisation and the axis swap
# --------------------------------------------------------------------------------------
def axis_swap_matrix(dtype=torch.float64, device=None) -> torch.Tensor:
    """3x3 ``S`` with rows e_y, e_z, e_x: ``S @ (x, y, z) = (y, z, x)``."""
    return torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=dtype, device=device)


def change_axes(points: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3) with new (x, y, z) = old (y, z, x)."""
    return points[..., [1, 2, 0]]


def global_canonical_transform(joints_biomech_rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Wrist-relative ``biomech`` joints (..., 21, 3) -> (canonical joints before the axis swap,
    4x4 matrix ``R2 @ R1 @ T(-wrist)``).

    R1 turns wrist->middle-MCP onto (0, -1, 0); R2 then turns the normal of the
    middle/index root-bone plane (``v_middle x v_index``) onto (0, 0, 1).
    """
    j = joints_biomech_rel
    wrist = j[..., 0, :]
    v_middle = normalize(j[..., 3, :] - wrist)
    v_index = normalize(j[..., 2, :] - wrist)
    r1 = alignment_rotation(v_middle, v_middle.new_tensor([0.0, -1.0, 0.0]).expand_as(v_middle))
    plane_normal = (r1 @ torch.cross(v_middle, v_index, dim=-1)[..., None])[..., 0]
    r2 = alignment_rotation(plane_normal, plane_normal.new_tensor([0.0, 0.0, 1.0]).expand_as(plane_normal))
    rotation = r2 @ r1
    matrix = homogeneous(rotation, -(rotation @ wrist[..., None])[..., 0])
    return transform_points(matrix, j), matrix


def root_rotation_matrix(global_matrix: torch.Tensor) -> torch.Tensor:
    """``swap @ global_matrix`` (4x4): wrist-relative posed metres -> canonical metres."""
    swap = homogeneous(axis_swap_matrix(global_matrix.dtype, global_matrix.device))
    return swap @ global_matrix


# --------------------------------------------------------------------------------------
# Step 2: PoseConverter -- per-bone unposing into the straight canonical hand
# --------------------------------------------------------------------------------------
def _rotate(matrix: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (matrix @ v[..., None])[..., 0]


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cross(a, b, dim=-1)


def _root_plane_rotations(root_dirs: torch.Tensor) -> torch.Tensor:
    """(B, 5, 3) root-bone directions (thumb..pinky) -> (B, 5, 3, 3) rotations that set the
    angles between neighbouring finger planes to :data:`ROOT_PLANE_ANGLES`."""
    b0, b1, b2, b3, b4 = root_dirs.unbind(-2)
    eye = torch.eye(3, dtype=root_dirs.dtype, device=root_dirs.device).expand(b0.shape[:-1] + (3, 3))
    ref_normal = _cross(b2, b1)  # middle x index
    thumb = axis_angle_to_matrix(b1, signed_angle(_cross(b1, b0), ref_normal, b1) - ROOT_PLANE_ANGLES[0])
    ring = axis_angle_to_matrix(b2, signed_angle(_cross(b3, b2), ref_normal, b2) + ROOT_PLANE_ANGLES[1])
    b3r, b4r = _rotate(ring, b3), _rotate(ring, b4)
    pinky_extra = axis_angle_to_matrix(
        b3r, signed_angle(_cross(b4r, b3r), _cross(b3r, b2), b3r) + ROOT_PLANE_ANGLES[2]
    )
    return torch.stack([thumb, eye, eye, ring, pinky_extra @ ring], dim=-3)


def _root_angle_rotations(root_dirs: torch.Tensor) -> torch.Tensor:
    """(B, 5, 3) plane-normalised root-bone directions -> (B, 5, 3, 3) rotations that set the
    angles between neighbouring root bones to :data:`ROOT_BONE_ANGLES` (middle is fixed)."""
    b0, b1, b2, b3, b4 = root_dirs.unbind(-2)
    eye = torch.eye(3, dtype=root_dirs.dtype, device=root_dirs.device).expand(b0.shape[:-1] + (3, 3))
    n1 = normalize(_cross(b2, b1))
    index = axis_angle_to_matrix(n1, ROOT_BONE_ANGLES[1] - signed_angle(b2, b1, n1))
    b0i, b1i = _rotate(index, b0), _rotate(index, b1)
    n0 = normalize(_cross(b1i, b0i))
    thumb = axis_angle_to_matrix(n0, ROOT_BONE_ANGLES[0] - signed_angle(b1i, b0i, n0)) @ index
    n2 = normalize(_cross(b3, b2))
    ring = axis_angle_to_matrix(n2, signed_angle(b3, b2, n2) - ROOT_BONE_ANGLES[2])
    b3r, b4r = _rotate(ring, b3), _rotate(ring, b4)
    n3 = normalize(_cross(b4r, b3r))
    pinky = axis_angle_to_matrix(n3, signed_angle(b4r, b3r, n3) - ROOT_BONE_ANGLES[3]) @ ring
    return torch.stack([thumb, index, eye, ring, pinky], dim=-3)


def _flexion_abduction(
    u: torch.Tensor, compat_float32_casts: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles of unit local directions (..., 3) as the reference measures them:
    flexion in the xz plane from +z (negative when x < 0), abduction out of that plane
    (negative when y > -1e-6), both through clipped acos.

    With ``compat_float32_casts`` ``u`` must be float32: the cosines are formed and clipped in
    float32 like the official code (abduction cosine = <proj, u> / |proj|), and the angles are
    returned in float64. Near the clip the float32 rounding of the cosine (spacing 6e-8 below 1)
    moves a small abduction angle by up to ~4e-5 rad, which is the dominant difference between
    a float64 implementation and the official matrices."""
    if compat_float32_casts:
        proj = u * u.new_tensor([1.0, 0.0, 1.0])
        proj_norm = torch.linalg.vector_norm(proj, dim=-1)
        cos_flexion = u[..., 2] / proj_norm
        cos_abduction = (proj * u).sum(-1) / proj_norm
        clip = _ACOS_CLIP_F32
    else:
        proj_norm = torch.linalg.vector_norm(u[..., [0, 2]], dim=-1).clamp_min(1e-12)
        cos_flexion, cos_abduction, clip = u[..., 2] / proj_norm, proj_norm, _ACOS_CLIP
    flexion = torch.acos(cos_flexion.clamp(-clip, clip)).to(torch.float64)
    flexion = torch.where(u[..., 0] < 0, -flexion, flexion)
    abduction = torch.acos(cos_abduction.clamp(-clip, clip)).to(torch.float64)
    abduction = torch.where(u[..., 1] > -_ABDUCTION_SIGN_EPS, -abduction, abduction)
    return flexion, abduction


def _straightening_rotations(u: torch.Tensor, compat_float32_casts: bool = False) -> torch.Tensor:
    """(..., 3) local bone directions -> (..., 3, 3) float64 local rotations taking them onto +z:
    undo the abduction about the flexed x axis, then the flexion about y."""
    flexion, abduction = _flexion_abduction(u, compat_float32_casts)
    u = u.to(torch.float64)
    e_y = u.new_tensor([0.0, 1.0, 0.0]).expand_as(u)
    flexed_x = torch.stack([torch.cos(flexion), torch.zeros_like(flexion), -torch.sin(flexion)], -1)
    return axis_angle_to_matrix(e_y, -flexion) @ axis_angle_to_matrix(flexed_x, -abduction)


def _local_frames_and_straightening(
    dirs: torch.Tensor, compat_float32_casts: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 20, 3) root-normalised bone directions -> (frames, straightening rotations) of the
    15 finger bones, both (B, 15, 3, 3), ordered level 2, 3, 4 (5 fingers each).

    Frames (rows x, y, z; detached as in the reference): a level-2 bone has z = its root bone,
    y = unit(z x finger-plane normal), x = y x z; a deeper bone's frame is its parent's
    turned about y by the parent's flexion, then about the turned x by minus its abduction
    (no twist), which is ``straighten(parent) @ frame(parent)`` -- so its z axis follows the
    parent bone. The rotations use the reference's clipped angles, which are never below
    ~1.4e-3 rad, so the reference's "skip angles < 1e-6" rule never applies.
    With ``compat_float32_casts`` the local directions are formed in float32 (float32 frames
    times float32 directions) and measured in float32, as in the official code.
    """
    root = dirs[:, :_FINGERS]
    n = normalize(_cross(root[:, :-1], root[:, 1:]))  # (B, 4, 3) normals between neighbours
    finger_plane = torch.stack(
        [n[:, 0], n[:, 1], (n[:, 1] + n[:, 2]) / 2, (n[:, 2] + n[:, 3]) / 2, n[:, 3]], dim=1
    )  # not renormalised (as in the reference; only its direction matters below)
    z = root
    y = normalize(_cross(z, finger_plane))
    x = normalize(_cross(y, z))
    frames = [torch.stack([x, y, z], dim=-2).detach()]
    straighten = []
    for level in range(3):
        bone_dirs = dirs[:, _FINGERS * (level + 1) : _FINGERS * (level + 2)]
        if compat_float32_casts:
            local = _rotate(frames[-1].float(), bone_dirs.float())
        else:
            local = _rotate(frames[-1], bone_dirs)
        straighten.append(_straightening_rotations(local, compat_float32_casts))
        if level < 2:
            frames.append((straighten[-1] @ frames[-1]).detach())
    return torch.cat(frames, dim=1), torch.cat(straighten, dim=1)


def pose_converter(
    joints_canon_biomech: torch.Tensor, *, compat_float32_casts: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """HALO's keypoint canonicalisation layer (the reference's ``PoseConverter`` forward).

    ``joints_canon_biomech`` (..., 21, 3): globally canonicalised joints (after
    :func:`change_axes`), ``biomech`` order, metres. Returns ``(mats21, lengths21)``:
    (..., 21, 4, 4) rigid matrices and (..., 21, 1) bone lengths, where entry ``k`` belongs to
    the bone ending at joint ``k`` (entry 0: identity / 1). Matrix ``k`` maps that bone's
    parent and child joints onto HALO's straight canonical hand, in which every finger lies
    along its root bone after the root bones have been spread to the canonical angles.
    Differentiable except through the local frames, which are detached (as in the reference).

    ``compat_float32_casts`` emulates the float32 steps of the official (Im2Hands) converter
    that could be identified from its outputs: local directions and angles in float32 (with the
    float32 clip constant) and the per-bone product ``U @ root_norm @ Scale(1/l) @ T(-parent)``
    in float32, rescaled by the float64 length (``C = l * f32(...)``, bit-exact on the golden
    root bones). The rest stays float64. This roughly halves the typical difference to the
    official matrices; the remaining ~1e-5 comes from float32 rounding upstream of the angles,
    which cannot be reproduced without the exact official op sequence.
    Long: the reference's PoseConverter forward in its own order, for golden comparison.
    """
    batch = joints_canon_biomech.shape[:-2]
    joints = joints_canon_biomech.reshape(-1, NUM_JOINTS, 3)
    parents = list(BIOMECH_BONE_PARENT)
    parent_joints = joints[:, parents]
    vectors = joints[:, 1:] - parent_joints
    lengths = torch.linalg.vector_norm(vectors, dim=-1).clamp_min(_BONE_MIN_LENGTH)  # (B, 20)
    dirs = vectors / lengths[..., None]

    # Root normalisation: one rotation per finger, shared by the finger's 4 bones.
    plane = _root_plane_rotations(dirs[:, :_FINGERS])
    plane_dirs = _rotate(plane, dirs[:, :_FINGERS])
    root_norm_finger = _root_angle_rotations(plane_dirs) @ plane  # (B, 5, 3, 3)
    root_norm = root_norm_finger.repeat(1, 4, 1, 1)  # bone k belongs to finger k % 5
    norm_dirs = _rotate(root_norm, dirs)

    frames, straighten = _local_frames_and_straightening(norm_dirs, compat_float32_casts)
    # Unpose rotation of a finger bone: into its local frame, straighten onto +z, and back out
    # through the finger's level-2 frame, whose z axis is the (normalised) root bone.
    level2_t = frames[:, :_FINGERS].transpose(-1, -2).repeat(1, 3, 1, 1)
    eye = torch.eye(3, dtype=joints.dtype, device=joints.device).expand(joints.shape[0], _FINGERS, 3, 3)
    unpose = torch.cat([eye, level2_t @ straighten @ frames], dim=1)  # root bones: identity
    rotation = unpose @ root_norm  # (B, 20, 3, 3)

    # Canonical joints: accumulate the unposed bones from the wrist (parents come first).
    canon_dirs = _rotate(rotation, dirs)
    canon = [joints.new_zeros(joints.shape[0], 3)]
    for k in range(_NUM_BONES):
        canon.append(canon[parents[k]] + lengths[:, k, None] * canon_dirs[:, k])
    canon_joints = torch.stack(canon, dim=1)

    if compat_float32_casts:
        # Official: bone_to_kp (float64 length) @ float32(U @ root_norm @ kp_to_bone).
        inv_len = (1.0 / lengths).float()
        rot32 = unpose.float() @ root_norm.float()
        inner_rot = rot32 * inv_len[..., None, None]
        inner_trans = -_rotate(rot32, parent_joints.float()) * inv_len[..., None]
        translation = lengths[..., None] * inner_trans.double() + canon_joints[:, parents]
        rotation = lengths[..., None, None] * inner_rot.double()
    else:
        translation = canon_joints[:, parents] - _rotate(rotation, parent_joints)
    mats = homogeneous(rotation, translation)
    eye4 = torch.eye(4, dtype=joints.dtype, device=joints.device).expand(joints.shape[0], 1, 4, 4)
    mats21 = torch.cat([eye4, mats], dim=1)
    lengths21 = torch.cat([lengths.new_ones(joints.shape[0], 1), lengths], dim=1)[..., None]
    return mats21.reshape(*batch, NUM_JOINTS, 4, 4), lengths21.reshape(*batch, NUM_JOINTS, 1)


# --------------------------------------------------------------------------------------
# Step 3: the 16 HALO parts, their scaling and bone lengths
# --------------------------------------------------------------------------------------
def select_halo_parts(mats21_biomech: torch.Tensor) -> torch.Tensor:
    """(..., 21, 4, 4) biomech-order matrices -> (..., 16, 4, 4) in HALO part order."""
    halo = mats21_biomech[..., list(BIOMECH_TO_HALO), :, :]
    return halo[..., list(HALO_PART_MATRIX_JOINT), :, :]


def scale_unpose_matrices(part_mats_m: torch.Tensor, *, im2hands_extra_scale: bool = True) -> torch.Tensor:
    """Metric part matrices C -> ``S(1/0.4) @ C @ S(0.4)`` (normalised units in and out);
    with ``im2hands_extra_scale`` also ``@ S(0.4)`` (Im2Hands feeds ``p / 0.4`` instead)."""
    dtype, device = part_mats_m.dtype, part_mats_m.device
    out = (
        scale_matrix(1.0 / GLOBAL_SCALE, dtype, device)
        @ part_mats_m
        @ scale_matrix(GLOBAL_SCALE, dtype, device)
    )
    if im2hands_extra_scale:
        out = out @ scale_matrix(GLOBAL_SCALE, dtype, device)
    return out


def part_bone_lengths(joints_halo: torch.Tensor) -> torch.Tensor:
    """(..., 21, 3) ``halo``-order joints -> (..., 16) part bone lengths (same units)."""
    a, b = zip(*HALO_PART_BONES, strict=True)
    return torch.linalg.vector_norm(joints_halo[..., list(a), :] - joints_halo[..., list(b), :], dim=-1)


# --------------------------------------------------------------------------------------
# Whole pipelines
# --------------------------------------------------------------------------------------
@dataclass
class _Canonicalised:
    root_rot_mat: torch.Tensor  # (..., 4, 4)
    joints_canon_halo_m: torch.Tensor  # (..., 21, 3)
    part_mats_m: torch.Tensor  # (..., 16, 4, 4) metric, unscaled


def _canonicalise_relative(
    rel_halo: torch.Tensor, what: str, validate: bool, compat_float32_casts: bool = False
) -> _Canonicalised:
    """Wrist-relative (left: mirrored) halo-order metres -> root rotation, canonical joints
    and metric part matrices."""
    if compat_float32_casts:
        # The official preprocess_joints rounds these joints to float32 (torch.Tensor(...))
        # before its float64 canonicalisation (reproduces glo_rot_mat to ~4e-16).
        rel_halo = rel_halo.float().double()
    _, global_mat = global_canonical_transform(rel_halo[..., list(HALO_TO_BIOMECH), :])
    root_rot = root_rotation_matrix(global_mat)
    canon_halo = transform_points(root_rot, rel_halo)
    mats21, _ = pose_converter(
        canon_halo[..., list(HALO_TO_BIOMECH), :], compat_float32_casts=compat_float32_casts
    )
    if validate and not bool(torch.isfinite(mats21).all()):
        # Finite, non-collapsed input can still be degenerate (e.g. a bone of length 0).
        raise KeypointError(f"{what} keypoints are degenerate: the hand cannot be canonicalised")
    return _Canonicalised(root_rot, canon_halo, select_halo_parts(mats21))


def _canonicalise(
    joints_mano_m, side: str, validate: bool, compat_float32_casts: bool = False
) -> tuple[torch.Tensor, _Canonicalised]:
    if validate:
        validate_hand_keypoints(joints_mano_m, side)
    joints = _as_float64(joints_mano_m)
    rel_halo = wrist_relative_halo_joints(joints, side)
    return joints, _canonicalise_relative(rel_halo, f"{side} hand", validate, compat_float32_casts)


def _im2hands_inputs(c: _Canonicalised, wrist_m: torch.Tensor, side: str) -> HaloInputs:
    return HaloInputs(
        unpose_mats=scale_unpose_matrices(c.part_mats_m, im2hands_extra_scale=True),
        bone_lengths=part_bone_lengths(c.joints_canon_halo_m),
        root_rot_mat=c.root_rot_mat,
        wrist_m=wrist_m,
        side=side,
    )


def canonicalize_hand(
    joints_mano_m, side: str, *, validate: bool = True, compat_float32_casts: bool = False
) -> HaloInputs:
    """Posed keypoints (..., 21, 3), mano order, metres -> Im2Hands network inputs
    (:class:`HaloInputs`), as the reference ``preprocess_joints`` computes them, in float64.

    ``compat_float32_casts`` (official-compatibility mode) reproduces the official code's
    float32 rounding where it is known (input joints, angle cosines, per-bone products; see
    :func:`pose_converter`); the default is the clean float64 algorithm."""
    joints, c = _canonicalise(joints_mano_m, side, validate, compat_float32_casts)
    return _im2hands_inputs(c, joints[..., MANO_WRIST, :], side)


def canonicalize_two_hands(
    left_joints_mano_m, right_joints_mano_m, *, validate: bool = True, compat_float32_casts: bool = False
) -> dict[str, HaloInputs]:
    """Both hands (each (..., 21, 3), same batch shape) in one batched pass -- the same
    numbers as two :func:`canonicalize_hand` calls at about half the time (the pipeline is
    bound by per-op overhead on such small tensors). Returns ``{"left": ..., "right": ...}``;
    ``compat_float32_casts`` as in :func:`canonicalize_hand`."""
    joints = {}
    for side, value in (("left", left_joints_mano_m), ("right", right_joints_mano_m)):
        if validate:
            validate_hand_keypoints(value, side)
        joints[side] = _as_float64(value)
    if joints["left"].shape != joints["right"].shape:
        raise KeypointError(
            f"left and right keypoints must share one batch shape, got {tuple(joints['left'].shape)} "
            f"and {tuple(joints['right'].shape)}"
        )
    rel = torch.stack([wrist_relative_halo_joints(joints[s], s) for s in HAND_SIDES])
    both = _canonicalise_relative(rel, "hand", validate, compat_float32_casts)
    return {
        side: _im2hands_inputs(
            _Canonicalised(both.root_rot_mat[i], both.joints_canon_halo_m[i], both.part_mats_m[i]),
            joints[side][..., MANO_WRIST, :],
            side,
        )
        for i, side in enumerate(HAND_SIDES)
    }


def halo_base_inputs(
    joints_mano_m, side: str = "right", *, validate: bool = True, compat_float32_casts: bool = False
) -> HaloBaseInputs:
    """Posed keypoints (..., 21, 3), mano order, metres -> inputs of the HALO base model
    (HALO-repo convention: no extra S(0.4); decoder xyz = normalised canonical points).
    ``compat_float32_casts`` as in :func:`canonicalize_hand`; it emulates the *Im2Hands* casts,
    not the HALO repo's all-float32 converter, and moves further from HALO-repo matrices
    (1.0e-4 vs 5.4e-5 for float64 on the golden set): keep the float64 default here."""
    joints, c = _canonicalise(joints_mano_m, side, validate, compat_float32_casts)
    wrist = joints[..., MANO_WRIST, :]
    mirror = torch.diag(joints.new_tensor([-1.0 if side == "left" else 1.0, 1.0, 1.0, 1.0]))
    to_wrist = homogeneous(
        torch.eye(3, dtype=joints.dtype, device=joints.device).expand(wrist.shape + (3,)), -wrist
    )
    return HaloBaseInputs(
        unpose_mats=scale_unpose_matrices(c.part_mats_m, im2hands_extra_scale=False),
        bone_lengths=part_bone_lengths(c.joints_canon_halo_m),
        normalization_mat=c.root_rot_mat @ mirror @ to_wrist,
    )


# --------------------------------------------------------------------------------------
# Frame maps used by the engine
# --------------------------------------------------------------------------------------
def canon_norm_to_posed_m(points_canon_norm, root_rot_mat, wrist_m, side: str) -> torch.Tensor:
    """(..., N, 3) canonical normalised points -> posed metres: ``x = p * 0.4``, inverse root
    rotation, ``+ wrist`` and, for a left hand, un-mirror x. ``root_rot_mat`` (..., 4, 4) and
    ``wrist_m`` (..., 3) as in :class:`HaloInputs`."""
    _check_side(side)
    p = _as_float64(points_canon_norm)
    rot = _as_float64(root_rot_mat, p)[..., :3, :3]
    wrist = _as_float64(wrist_m, p)
    rel = (p * GLOBAL_SCALE) @ rot  # row vectors times R == R^T applied to columns
    return mirror_if_left(rel, side) + wrist[..., None, :]


def posed_m_to_canon_norm(points_posed_m, root_rot_mat, wrist_m, side: str) -> torch.Tensor:
    """Inverse of :func:`canon_norm_to_posed_m`: (..., N, 3) posed metres -> canonical normalised."""
    _check_side(side)
    x = _as_float64(points_posed_m)
    rot = _as_float64(root_rot_mat, x)[..., :3, :3]
    wrist = _as_float64(wrist_m, x)
    rel = mirror_if_left(x - wrist[..., None, :], side)
    return (rel @ rot.transpose(-1, -2)) / GLOBAL_SCALE
