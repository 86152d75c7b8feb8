"""Unit tests of the HALO canonicalisation (core.geometry.canonical / rotations) on
procedurally posed hands: geometry the reference promises, symmetries, batching, errors."""

import math

import numpy as np
import pytest
import torch

from core.errors import KeypointError
from core.geometry import canonical as C
from core.geometry.rotations import (
    alignment_rotation,
    axis_angle_to_matrix,
    normalize,
    signed_angle,
    transform_points,
)
from core.hand import joints as J

FINGER_CHAINS_MANO = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def synthetic_hand(rng, posed: bool = True) -> np.ndarray:
    """A plausible right hand (21, 3), mano order, metres: palm in the xy plane, fingers along +y,
    random flexion (0..1.2 rad) and abduction (+-0.15 rad) per joint, then a random rigid pose."""
    joints = np.zeros((21, 3))
    # First joint of each finger (thumb CMC, MCPs) and phalanx lengths (m).
    roots = np.array([[0.025, 0.025, -0.012], [0.028, 0.088, 0], [0.004, 0.093, 0], [-0.016, 0.087, 0],
                      [-0.033, 0.078, 0]])  # fmt: skip
    lengths = np.array([[0.035, 0.031, 0.027], [0.040, 0.024, 0.021], [0.044, 0.028, 0.023],
                        [0.041, 0.027, 0.022], [0.032, 0.021, 0.019]])  # fmt: skip
    for f, chain in enumerate(FINGER_CHAINS_MANO):
        joints[chain[0]] = roots[f]
        direction = roots[f] / np.linalg.norm(roots[f])
        if f == 0:
            direction = normalize(torch.tensor([0.7, 0.6, -0.4])).numpy()
        for level in range(3):
            side_axis = np.cross(direction, [0.0, 0.0, 1.0])
            side_axis /= np.linalg.norm(side_axis)
            flex = axis_angle_to_matrix(torch.tensor(side_axis), torch.tensor(rng.uniform(0.0, 1.2))).numpy()
            abduct = axis_angle_to_matrix(
                torch.tensor([0.0, 0.0, 1.0]), torch.tensor(rng.uniform(-0.15, 0.15))
            )
            direction = flex @ abduct.numpy() @ direction
            joints[chain[level + 1]] = joints[chain[level]] + lengths[f, level] * direction
    joints += rng.normal(scale=0.002, size=joints.shape)
    joints[0] = 0.0
    if posed:
        joints = joints @ _random_rotation(rng).T + rng.uniform([-0.2, -0.2, 0.4], [0.2, 0.2, 1.0])
    return joints


@pytest.fixture
def hands() -> np.ndarray:
    # Seed chosen so that no local flexion/abduction angle is below ~1.4e-3 rad, where the
    # reference's clipped acos (reproduced on purpose) keeps a bone from straightening exactly.
    rng = np.random.default_rng(1)
    return np.stack([synthetic_hand(rng) for _ in range(6)])


def _canonical_swapped(joints_mano_m: np.ndarray, side: str = "right") -> torch.Tensor:
    rel = C.wrist_relative_halo_joints(joints_mano_m, side)
    canon, _ = C.global_canonical_transform(rel[..., list(J.HALO_TO_BIOMECH), :])
    return C.change_axes(canon)


# --- shapes, dtypes, rigidity ---------------------------------------------------------------
def test_outputs_are_float64_with_documented_shapes(hands):
    inputs = C.canonicalize_hand(torch.tensor(hands.reshape(2, 3, 21, 3), dtype=torch.float32), "right")
    assert inputs.unpose_mats.shape == (2, 3, 16, 4, 4)
    assert inputs.bone_lengths.shape == (2, 3, 16)
    assert inputs.root_rot_mat.shape == (2, 3, 4, 4)
    assert inputs.wrist_m.shape == (2, 3, 3)
    for t in (inputs.unpose_mats, inputs.bone_lengths, inputs.root_rot_mat, inputs.wrist_m):
        assert t.dtype == torch.float64


def test_part_matrices_are_rigid(hands):
    mats21, lengths21 = C.pose_converter(_canonical_swapped(hands))
    rot = mats21[..., :3, :3]
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(rot.transpose(-1, -2) @ rot, eye.expand_as(rot), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(rot.shape[:-2], dtype=torch.float64), atol=1e-12)
    assert torch.equal(mats21[..., 0, :, :], torch.eye(4, dtype=torch.float64).expand(6, 4, 4))
    assert torch.all(lengths21[..., 0, 0] == 1.0)
    # Network inputs: rotation part 0.4 * R (the Im2Hands S(0.4) factor), still rigid after /0.4.
    unpose = C.canonicalize_hand(hands, "right").unpose_mats
    rot = unpose[..., :3, :3] / C.GLOBAL_SCALE
    assert torch.allclose(torch.linalg.det(rot), torch.ones(rot.shape[:-2], dtype=torch.float64), atol=1e-12)
    assert torch.all(unpose[..., 3, :] == torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))


def test_each_part_maps_its_bone_onto_the_straight_root_bone_line(hands):
    joints = _canonical_swapped(hands)  # biomech order, globally canonical metres
    mats21, lengths21 = C.pose_converter(joints)
    parents = J.BIOMECH_BONE_PARENT
    for k in range(20):  # bone k: joint parents[k] -> joint k + 1; its matrix is entry k + 1
        finger = k % 5
        root_dir = normalize(
            transform_points(mats21[:, finger + 1], joints[:, finger + 1 : finger + 2])[:, 0]
        )
        ends = transform_points(mats21[:, k + 1], joints[:, [parents[k], k + 1]])
        for end in ends.unbind(1):  # both ends lie on the root bone's line through the wrist
            assert torch.linalg.vector_norm(torch.cross(end, root_dir, dim=-1), dim=-1).max() < 1e-9
        along = ((ends[:, 1] - ends[:, 0]) * root_dir).sum(-1)
        assert torch.allclose(along, lengths21[:, k + 1, 0], atol=1e-12)  # outward, length kept
        if k >= 5:  # consecutive bones agree on the canonical position of their shared joint
            shared = transform_points(mats21[:, k - 4], joints[:, k - 4 : k - 3])[:, 0]
            assert torch.allclose(ends[:, 0], shared, atol=1e-12)


def test_root_bones_are_spread_to_the_canonical_angles(hands):
    joints = _canonical_swapped(hands)
    mats21, _ = C.pose_converter(joints)
    canon = [transform_points(mats21[:, f + 1], joints[:, f + 1 : f + 2])[:, 0] for f in range(5)]
    b = [normalize(c) for c in canon]  # thumb, index, middle, ring, pinky
    for f, expected in enumerate(C.ROOT_BONE_ANGLES):
        angle = torch.arccos((b[f] * b[f + 1]).sum(-1))
        assert torch.allclose(angle, torch.full_like(angle, expected), atol=1e-9)
    cross = lambda a, c: torch.cross(a, c, dim=-1)
    reference_plane = cross(b[2], b[1])
    thumb = signed_angle(cross(b[1], b[0]), reference_plane, b[1])
    ring = signed_angle(cross(b[3], b[2]), reference_plane, b[2])
    pinky = signed_angle(cross(b[4], b[3]), cross(b[3], b[2]), b[3])
    assert torch.allclose(thumb, torch.full_like(thumb, C.ROOT_PLANE_ANGLES[0]), atol=1e-9)
    assert torch.allclose(ring, torch.full_like(ring, -C.ROOT_PLANE_ANGLES[1]), atol=1e-9)
    assert torch.allclose(pinky, torch.full_like(pinky, -C.ROOT_PLANE_ANGLES[2]), atol=1e-9)
    # The middle root bone is the reference: only the global frame acts on it (along -x).
    assert torch.allclose(
        b[2], torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64).expand_as(b[2]), atol=1e-12
    )


# --- global frame ---------------------------------------------------------------------------
def test_palm_part_is_the_global_canonical_frame(hands):
    inputs = C.canonicalize_hand(hands, "right")
    s04 = torch.diag(torch.tensor([0.4, 0.4, 0.4, 1.0], dtype=torch.float64))
    assert torch.equal(inputs.unpose_mats[:, 0], s04.expand(6, 4, 4))
    assert torch.equal(
        C.halo_base_inputs(hands).unpose_mats[:, 0], torch.eye(4, dtype=torch.float64).expand(6, 4, 4)
    )

    rot = inputs.root_rot_mat
    assert torch.all(rot[..., :3, 3] == 0) and torch.all(rot[..., 3, :3] == 0)
    assert torch.allclose(torch.linalg.det(rot[..., :3, :3]), torch.ones(6, dtype=torch.float64), atol=1e-12)
    rel = torch.tensor(hands - hands[:, :1])
    canon = rel @ rot[..., :3, :3].transpose(-1, -2)
    middle, index = canon[:, J.MANO_MIDDLE_MCP], canon[:, 5]
    assert torch.allclose(middle[:, 1:], torch.zeros(6, 2, dtype=torch.float64), atol=1e-12)
    assert torch.all(middle[:, 0] < 0)  # wrist -> middle MCP along -x
    assert torch.allclose(index[:, 1], torch.zeros(6, dtype=torch.float64), atol=1e-12)  # palm normal along y
    assert torch.all(index[:, 2] > 0)


def test_bone_lengths_are_the_part_bones_in_metres(hands):
    lengths = C.canonicalize_hand(hands, "right").bone_lengths
    halo = hands[:, list(J.MANO_TO_HALO)]
    for b, (i, j) in enumerate(J.HALO_PART_BONES):
        np.testing.assert_allclose(
            lengths[:, b].numpy(), np.linalg.norm(halo[:, i] - halo[:, j], axis=-1), atol=1e-12
        )
    assert 0.08 < float(lengths[:, 0].min()) and float(lengths[:, 0].max()) < 0.12  # wrist -> middle MCP


# --- symmetries and batching ------------------------------------------------------------------
def test_mirrored_left_hand_gives_the_right_hand_matrices(hands):
    right = C.canonicalize_hand(hands, "right")
    left = C.canonicalize_hand(hands * np.array([-1.0, 1.0, 1.0]), "left")
    assert torch.allclose(left.unpose_mats, right.unpose_mats, atol=1e-12)
    assert torch.allclose(left.bone_lengths, right.bone_lengths, atol=1e-15)
    assert torch.allclose(left.root_rot_mat, right.root_rot_mat, atol=1e-12)
    assert torch.allclose(left.wrist_m, right.wrist_m * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    p = torch.tensor(np.random.default_rng(1).uniform(-0.55, 0.55, size=(6, 50, 3)))
    mirrored = right.canon_norm_to_posed_m(p) * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(left.canon_norm_to_posed_m(p), mirrored, atol=1e-12)


def test_rigid_motion_of_the_input_changes_only_the_root_rotation(hands):
    rng = np.random.default_rng(3)
    rotation, shift = _random_rotation(rng), np.array([0.1, -0.3, 0.2])
    before = C.canonicalize_hand(hands, "left")
    after = C.canonicalize_hand(hands @ rotation.T + shift, "left")
    assert torch.allclose(after.unpose_mats, before.unpose_mats, atol=1e-10)
    assert torch.allclose(after.bone_lengths, before.bone_lengths, atol=1e-12)
    # left: canonical = R_root @ M @ (x - wrist), M = mirror; moving x by Q changes R_root to R_root M Q^T M.
    m = np.diag([-1.0, 1.0, 1.0])
    expected = before.root_rot_mat[..., :3, :3].numpy() @ (m @ rotation.T @ m)
    np.testing.assert_allclose(after.root_rot_mat[..., :3, :3].numpy(), expected, atol=1e-10)


def test_batching_equals_per_sample(hands):
    batched = C.canonicalize_hand(hands.reshape(2, 3, 21, 3), "left")
    both = C.canonicalize_two_hands(hands[:3], hands[3:])
    for i in range(6):
        single = C.canonicalize_hand(hands[i], "left")
        a, b = divmod(i, 3)
        for name in ("unpose_mats", "bone_lengths", "root_rot_mat", "wrist_m"):
            assert torch.allclose(getattr(batched, name)[a, b], getattr(single, name), rtol=0, atol=1e-13), (
                name
            )
    for side, part in (("left", slice(0, 3)), ("right", slice(3, 6))):
        separate = C.canonicalize_hand(hands[part], side)
        assert both[side].side == side
        for name in ("unpose_mats", "bone_lengths", "root_rot_mat", "wrist_m"):
            assert torch.allclose(getattr(both[side], name), getattr(separate, name), rtol=0, atol=1e-13), (
                name
            )


# --- frame maps -------------------------------------------------------------------------------
@pytest.mark.parametrize("side", J.HAND_SIDES)
def test_frame_maps_round_trip_and_put_the_hand_in_the_canonical_box(hands, side):
    inputs = C.canonicalize_hand(hands, side)
    posed = torch.tensor(hands)
    canon = inputs.posed_m_to_canon_norm(posed)
    assert torch.allclose(canon[:, 0], torch.zeros(6, 3, dtype=torch.float64), atol=1e-12)  # wrist at 0
    middle = canon[:, J.MANO_MIDDLE_MCP]
    assert torch.allclose(middle[:, 1:], torch.zeros(6, 2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(-middle[:, 0] * C.GLOBAL_SCALE, inputs.bone_lengths[:, 0], atol=1e-12)
    assert float(canon.abs().max()) < 0.55  # the whole hand fits the occupancy box
    assert torch.allclose(inputs.canon_norm_to_posed_m(canon), posed, atol=1e-12)
    p = torch.tensor(np.random.default_rng(2).uniform(-0.55, 0.55, size=(6, 100, 3)))
    assert torch.allclose(inputs.posed_m_to_canon_norm(inputs.canon_norm_to_posed_m(p)), p, atol=1e-12)


@pytest.mark.parametrize("side", J.HAND_SIDES)
def test_halo_base_convention_relates_to_the_im2hands_one(hands, side):
    ours = C.canonicalize_hand(hands, side)
    base = C.halo_base_inputs(hands, side)
    s04 = torch.diag(torch.tensor([0.4, 0.4, 0.4, 1.0], dtype=torch.float64))
    assert torch.allclose(base.unpose_mats @ s04, ours.unpose_mats, atol=1e-15)
    assert torch.equal(base.bone_lengths, ours.bone_lengths)
    posed = torch.tensor(hands)
    canon_m = transform_points(base.normalization_mat, posed)
    assert torch.allclose(canon_m, ours.posed_m_to_canon_norm(posed) * C.GLOBAL_SCALE, atol=1e-12)
    det = torch.linalg.det(base.normalization_mat[..., :3, :3])
    assert torch.allclose(det, torch.full_like(det, -1.0 if side == "left" else 1.0), atol=1e-12)


def test_gradients_reach_the_keypoints(hands):
    joints = torch.tensor(hands, requires_grad=True)
    inputs = C.canonicalize_hand(joints, "right")
    (inputs.unpose_mats.square().sum() + inputs.bone_lengths.sum()).backward()
    assert joints.grad is not None and torch.isfinite(joints.grad).all()
    assert float(joints.grad.abs().max()) > 1e-3


def test_float32_compat_mode_stays_close_to_float64_and_nearly_rigid(hands):
    # The compatibility mode only re-rounds intermediate values to float32: same outputs to
    # float32-noise level (amplified near the acos clip), float64 dtype, rigid to float32 level,
    # still differentiable.
    joints = torch.tensor(hands, requires_grad=True)
    clean = C.canonicalize_hand(hands, "left")
    compat = C.canonicalize_hand(joints, "left", compat_float32_casts=True)
    assert compat.unpose_mats.dtype == torch.float64
    diff = (compat.unpose_mats.detach() - clean.unpose_mats).abs().max()
    assert 0.0 < float(diff) < 1e-4
    rot = compat.unpose_mats[..., :3, :3] / C.GLOBAL_SCALE
    det = torch.linalg.det(rot)
    assert torch.allclose(det, torch.ones_like(det), atol=1e-6)
    compat.unpose_mats.square().sum().backward()
    assert torch.isfinite(joints.grad).all() and float(joints.grad.abs().max()) > 1e-3


# --- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda j: j.__setitem__((3, 1), np.nan), "NaN or infinite"),
        (lambda j: j.__setitem__((7, 2), np.inf), "NaN or infinite"),
        (lambda j: j.__setitem__(slice(None), j[0]), "collapsed"),
        (lambda j: j.__imul__(1e-3), "collapsed"),  # 1 mm hand: millimetres read as metres scaled down
    ],
)
def test_bad_keypoints_raise_keypoint_errors(hands, mutate, message):
    joints = hands[0].copy()
    mutate(joints)
    with pytest.raises(KeypointError, match=message):
        C.validate_hand_keypoints(joints, "left")
    with pytest.raises(KeypointError, match=message):
        C.canonicalize_hand(joints, "left")


def test_wrong_shapes_and_sides_are_rejected(hands):
    with pytest.raises(KeypointError, match=r"shape \(\.\.\., 21, 3\)"):
        C.validate_hand_keypoints(hands[0, :20], "right")
    with pytest.raises(KeypointError, match="shape"):
        C.canonicalize_hand(hands[0, :, :2], "right")
    with pytest.raises(KeypointError, match="side"):
        C.canonicalize_hand(hands[0], "both")
    with pytest.raises(KeypointError, match="batch shape"):
        C.canonicalize_two_hands(hands[:2], hands[:3])
    assert issubclass(KeypointError, ValueError)


def test_one_bad_hand_in_a_batch_is_reported(hands):
    batch = hands.copy()
    batch[4] = batch[4, :1]  # all joints at the wrist
    with pytest.raises(KeypointError, match="collapsed"):
        C.canonicalize_hand(batch, "right")


# --- rotation helpers -------------------------------------------------------------------------
def test_alignment_rotation_handles_general_parallel_and_opposite_vectors():
    rng = np.random.default_rng(5)
    a = torch.tensor(rng.normal(size=(5, 3)))
    b = torch.tensor(rng.normal(size=(5, 3)))
    b[3] = a[3] * 2.0  # parallel
    b[4] = -a[4]  # opposite
    rot = alignment_rotation(a, b)
    assert torch.allclose((rot @ normalize(a)[..., None])[..., 0], normalize(b), atol=1e-12)
    assert torch.allclose(
        rot.transpose(-1, -2) @ rot, torch.eye(3, dtype=torch.float64).expand(5, 3, 3), atol=1e-12
    )
    assert torch.allclose(rot[3], torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_signed_angle_follows_the_right_hand_rule():
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert math.isclose(float(signed_angle(x, y, z)), math.pi / 2, abs_tol=1e-15)
    assert math.isclose(float(signed_angle(x, y, -z)), -math.pi / 2, abs_tol=1e-15)
    turned = axis_angle_to_matrix(z, torch.tensor(0.3, dtype=torch.float64)) @ x
    assert math.isclose(float(signed_angle(x, turned, z)), 0.3, abs_tol=1e-15)
