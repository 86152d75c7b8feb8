"""Golden tests of the HALO canonicalisation against the official code's outputs
(canonicalization.npz, halo_base.npz and two_hand_batch.npz: every hand they hold).

Each step is fed the golden output of the previous step, so a failure points at one step;
the whole pipeline is also checked from the raw keypoints, in the official-compatibility mode
(``compat_float32_casts=True``) and in the clean float64 default. Tolerances come from the
manifest.
"""

import numpy as np
import pytest
import torch

from core.geometry import canonical as C
from core.hand import joints as J
from tests import golden

CANON = "canonicalization.npz"
HALO_BASE = "halo_base.npz"
BATCH = "two_hand_batch.npz"

def _by_side(file: str = CANON):
    """(side, indices) for each side present in ``file``'s ``side`` array."""
    sides = golden.load(file)["side"]
    out = [(s, np.flatnonzero(sides == s)) for s in J.HAND_SIDES]
    assert sum(len(i) for _, i in out) == len(sides), f"unknown side labels: {set(sides)}"
    return out


def _assert_per_side(compute, file: str, array: str, *, max_abs: float | None = None, cast=None) -> float:
    """Run ``compute(side, indices)`` for each side, reassemble all hands, compare."""
    expected = golden.load(file)[array]
    actual = np.zeros(expected.shape, dtype=np.float64)
    for side, idx in _by_side(file):
        value = compute(side, idx)
        value = value.detach().numpy() if torch.is_tensor(value) else np.asarray(value)
        actual[idx] = value.astype(cast).astype(np.float64) if cast is not None else value
    return golden.assert_matches(actual, file, array, max_abs=max_abs)


# --- canonicalization.npz, step by step ---------------------------------------------------------
def test_golden_wrist_relative_halo_joints():
    kps = golden.load(CANON)["kps_mano_m"]
    assert len(kps) > 0
    _assert_per_side(lambda s, i: C.wrist_relative_halo_joints(kps[i], s), CANON, "joints_halo_rel")


def test_golden_global_normalisation():
    rel = torch.tensor(golden.load(CANON)["joints_halo_rel"])[..., list(J.HALO_TO_BIOMECH), :]
    canon, matrix = C.global_canonical_transform(rel)
    golden.assert_matches(canon, CANON, "canon_kps_biomech")
    golden.assert_matches(matrix, CANON, "glo_rot_mat")


def test_golden_change_axes():
    canon = torch.tensor(golden.load(CANON)["canon_kps_biomech"])
    golden.assert_matches(C.change_axes(canon), CANON, "canon_kps_biomech_swapped")


@pytest.mark.parametrize("compat", [True, False], ids=["compat_float32", "float64"])
def test_golden_pose_converter(compat):
    swapped = torch.tensor(golden.load(CANON)["canon_kps_biomech_swapped"])
    mats21, lengths21 = C.pose_converter(swapped, compat_float32_casts=compat)
    golden.assert_matches(mats21, CANON, "posecvt_mats21_biomech")
    golden.assert_matches(lengths21, CANON, "posecvt_bone_lengths21")


def test_golden_global_normalisation_compat_is_exact():
    # The official code rounds the wrist-relative joints to float32 before its float64
    # canonicalisation; the compatibility mode does too and then agrees to rounding level.
    kps = golden.load(CANON)["kps_mano_m"]
    for side, idx in _by_side():
        rel = C.wrist_relative_halo_joints(kps[idx], side).float().double()
        _, matrix = C.global_canonical_transform(rel[..., list(J.HALO_TO_BIOMECH), :])
        expected = golden.load(CANON)["glo_rot_mat"][idx]
        assert np.abs(matrix.numpy() - expected).max() < 1e-12


def test_golden_part_selection_and_scaling():
    mats21 = torch.tensor(golden.load(CANON)["posecvt_mats21_biomech"])
    unpose = C.scale_unpose_matrices(C.select_halo_parts(mats21), im2hands_extra_scale=True)
    # A pure re-indexing and scaling of the golden matrices: only float rounding may differ
    # (the reference scales with float32 0.4, ~1.2e-8 here).
    golden.assert_matches(unpose, CANON, "unpose_mat", max_abs=1e-7)


# --- canonicalization.npz, whole pipeline from the raw keypoints ---------------------------------
@pytest.fixture(scope="module", params=[True, False], ids=["compat_float32", "float64"])
def canonicalised(request):
    kps = golden.load(CANON)["kps_mano_m"]
    return {
        side: (idx, C.canonicalize_hand(kps[idx], side, compat_float32_casts=request.param))
        for side, idx in _by_side()
    }


@pytest.mark.parametrize(
    ("array", "field", "cast"),
    [
        ("unpose_mat", "unpose_mats", None),
        ("bone_lengths", "bone_lengths", np.float32),
        ("root_rot_mat", "root_rot_mat", np.float32),
    ],
)
def test_golden_canonicalize_hand(canonicalised, array, field, cast):
    _assert_per_side(lambda s, i: getattr(canonicalised[s][1], field), CANON, array, cast=cast)


def test_golden_root_xyz_is_the_mirrored_wrist(canonicalised):
    # Network-input convention: the wrist, x negated for left hands (un-mirrored by the frame maps).
    mirror = {"left": np.array([-1.0, 1.0, 1.0]), "right": np.ones(3)}
    _assert_per_side(
        lambda s, i: canonicalised[s][1].wrist_m.numpy() * mirror[s], CANON, "root_xyz", cast=np.float32
    )


def test_golden_halo_repo_convention():
    kps = golden.load(CANON)["kps_mano_m"]
    base = {side: C.halo_base_inputs(kps[idx], side) for side, idx in _by_side()}
    im2hands = {side: C.canonicalize_hand(kps[idx], side) for side, idx in _by_side()}
    _assert_per_side(lambda s, i: base[s].unpose_mats, CANON, "halo_repo_unpose_mat")
    _assert_per_side(lambda s, i: base[s].bone_lengths, CANON, "halo_repo_bone_lengths", cast=np.float32)
    # The HALO-repo normalisation acts on wrist-centred (left: mirrored) metres: the root rotation.
    _assert_per_side(
        lambda s, i: im2hands[s].root_rot_mat, CANON, "halo_repo_normalization_mat", cast=np.float32
    )

    def canonical_kps_cm(side, idx):
        # The HALO repo normalises in float32 (float64 misses the manifest's 1e-5 cm: 1.8e-5).
        rel = C.wrist_relative_halo_joints(kps[idx], side)[..., list(J.HALO_TO_BIOMECH), :].float()
        return C.change_axes(C.global_canonical_transform(rel)[0]).double() * 100.0

    _assert_per_side(canonical_kps_cm, CANON, "halo_repo_normalized_kps_cm_biomech")


# --- halo_base.npz: inputs of the HALO base model, and the frame maps -------------------------------
def test_golden_halo_base_inputs():
    data = golden.load(HALO_BASE)
    assert len(data["kps_mano_m"]) > 0
    # Left InterHand hands are stored already mirrored: every pose goes through as a right hand.
    base = C.halo_base_inputs(data["kps_mano_m"], "right")
    golden.assert_matches(base.unpose_mats, HALO_BASE, "unpose_mat")
    golden.assert_matches(base.bone_lengths.float(), HALO_BASE, "bone_lengths")
    golden.assert_matches(base.normalization_mat.float(), HALO_BASE, "normalization_mat")


def test_golden_halo_base_canonical_points_to_posed_metres():
    data = golden.load(HALO_BASE)
    inputs = C.canonicalize_hand(data["kps_mano_m"], "right")
    posed = inputs.canon_norm_to_posed_m(torch.tensor(data["query_points_canon_norm"]))
    golden.assert_matches(posed, HALO_BASE, "query_points_posed_m")
    back = inputs.posed_m_to_canon_norm(torch.tensor(data["query_points_posed_m"]))
    golden.assert_matches(back, HALO_BASE, "query_points_canon_norm", max_abs=1e-5)


# --- two_hand_batch.npz: the network inputs of I / R ---------------------------------------------
@pytest.mark.parametrize("side", J.HAND_SIDES)
def test_golden_two_hand_batch_inputs(side):
    data = golden.load(BATCH)
    both = C.canonicalize_two_hands(
        data["pred_left_joints_mano_m"], data["pred_right_joints_mano_m"], compat_float32_casts=True
    )
    tol = {
        name: golden.tolerance(CANON, name)["max_abs"]
        for name in ("unpose_mat", "bone_lengths", "root_rot_mat")
    }
    golden.assert_matches(both[side].unpose_mats, BATCH, f"{side}_inputs", max_abs=tol["unpose_mat"])
    golden.assert_matches(
        both[side].bone_lengths.float(), BATCH, f"{side}_bone_lengths", max_abs=tol["bone_lengths"]
    )
    golden.assert_matches(
        both[side].root_rot_mat.float(), BATCH, f"{side}_root_rot_mat", max_abs=tol["root_rot_mat"]
    )


@pytest.mark.parametrize("side", J.HAND_SIDES)
def test_golden_query_points_to_camera_frame(side):
    """Network I's camera-frame queries (minus query 0's z) from the canonical points, via the
    stored root rotation and the (mirrored) ``root_xyz``: checks the left-hand un-mirroring."""
    data = golden.load(BATCH)
    mirror = np.array([-1.0, 1.0, 1.0]) if side == "left" else np.ones(3)
    wrist = torch.tensor(data[f"{side}_root_xyz"].astype(np.float64) * mirror)
    posed = C.canon_norm_to_posed_m(data[f"{side}_p"], data[f"{side}_root_rot_mat"], wrist, side)
    cam_r = torch.tensor(data["cam_R"], dtype=torch.float64)
    cam_t = torch.tensor(data["cam_T"], dtype=torch.float64)
    cam = posed @ cam_r.transpose(-1, -2) + cam_t[:, None]
    cam[..., 2] -= cam[:, :1, 2].clone()
    golden.assert_matches(cam, "init_occ.npz", f"{side}_query_cam_rootz")
