"""Network K (keypoint refinement) against the official code's golden vectors (README §7, §8),
plus the conversions between our public keypoints and K's frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ImageError, KeypointError
from core.geometry.kpts_frame import (
    camera_to_world,
    keypoints_to_kpts_ref_input,
    kpts_ref_output_to_keypoints,
    official_generate_world,
    official_kpts_ref_input,
)
from core.hand.joints import HAND_SIDES, convert_joints
from core.models.config import EncoderConfig
from core.models.gcn import DualGraphLayer, GraphLayer, hand_joint_adjacency
from core.models.kpts_ref import KeypointRefiner, KptsRefConfig
from core.types import TwoHandKeypoints
from tests.golden import assert_matches, load, official_state_dict


def _f32(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def _sub_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _official_input():
    g, b = load("kpts_ref.npz"), load("two_hand_batch.npz")
    return official_kpts_ref_input(
        {s: g[f"{s}_pred_joints_dataset"] for s in HAND_SIDES},
        {s: b[f"{s}_root_xyz"] for s in HAND_SIDES},
        b["cam_R"],
        b["cam_T"],
    )


def _camera_keypoints_mano(kind: str) -> dict[str, np.ndarray]:
    """Camera-frame metres, mano order, of the joints K sees (dataset joints + GT root)."""
    g, b = load("kpts_ref.npz"), load("two_hand_batch.npz")
    out = {}
    for side in HAND_SIDES:
        world = g[f"{side}_{kind}_joints_dataset"] + b[f"{side}_root_xyz"][:, None, :]
        if side == "left":
            world = world * np.array([-1.0, 1.0, 1.0])
        cam = np.einsum("bij,bnj->bni", b["cam_R"].astype(np.float64), world) + b["cam_T"][:, None, :]
        out[side] = convert_joints(cam, "halo", "mano")
    return out


@pytest.fixture(scope="module")
def official_k() -> KeypointRefiner:
    model = KeypointRefiner(KptsRefConfig.official()).eval()
    model.load_state_dict(official_state_dict("kpts_ref"), strict=True)
    return model


@pytest.fixture(scope="module")
def official_k_output(official_k):
    g, b = load("kpts_ref.npz"), load("two_hand_batch.npz")
    with torch.no_grad():
        return official_k(torch.from_numpy(b["img"]), _f32(g["left_in_mm"]), _f32(g["right_in_mm"]))


# ---- preprocessing ------------------------------------------------------------------------


def test_golden_kpts_ref_official_preprocessing():
    k_in = _official_input()
    assert_matches(k_in.left_mm, "kpts_ref.npz", "left_in_mm")
    assert_matches(k_in.right_mm, "kpts_ref.npz", "right_in_mm")
    assert_matches(k_in.origin_cam_m, "kpts_ref.npz", "left_mid_joint_m")
    g, b = load("kpts_ref.npz"), load("two_hand_batch.npz")
    gt = official_kpts_ref_input(
        {s: g[f"{s}_gt_joints_dataset"] for s in HAND_SIDES},
        {s: b[f"{s}_root_xyz"] for s in HAND_SIDES},
        b["cam_R"],
        b["cam_T"],
    )
    assert_matches(gt.left_mm, "kpts_ref.npz", "left_gt_mm")
    assert_matches(gt.right_mm, "kpts_ref.npz", "right_gt_mm")


def test_golden_kpts_ref_public_keypoints_give_official_input():
    """Our path (mano order, camera frame, metres) lands on exactly K's official input."""
    for kind, prefix in (("pred", "in"), ("gt", "gt")):
        cam = _camera_keypoints_mano(kind)
        k_in = keypoints_to_kpts_ref_input(cam["left"], cam["right"])
        assert_matches(k_in.left_mm, "kpts_ref.npz", f"left_{prefix}_mm")
        assert_matches(k_in.right_mm, "kpts_ref.npz", f"right_{prefix}_mm")
        if kind == "pred":
            assert_matches(k_in.origin_cam_m, "kpts_ref.npz", "left_mid_joint_m")


def test_kpts_ref_conversions_round_trip_and_origin():
    rng = np.random.default_rng(0)
    left = rng.normal(scale=0.05, size=(21, 3)) + [0.1, 0.0, 0.6]
    right = rng.normal(scale=0.05, size=(21, 3)) + [-0.1, 0.0, 0.6]
    k_in = keypoints_to_kpts_ref_input(left, right)
    assert k_in.left_mm.shape == (1, 21, 3)
    # The left middle MCP (mano 9 = halo 4) is the origin; units are mm.
    np.testing.assert_allclose(k_in.left_mm[0, 4], 0.0, atol=1e-12)
    np.testing.assert_allclose(k_in.origin_cam_m[0, 0], left[9], atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(k_in.right_mm[0, 0]), 1000 * np.linalg.norm(right[0] - left[9]))
    np.testing.assert_allclose(
        kpts_ref_output_to_keypoints(k_in.left_mm, k_in.origin_cam_m)[0], left, atol=1e-12
    )
    np.testing.assert_allclose(
        kpts_ref_output_to_keypoints(k_in.right_mm, k_in.origin_cam_m)[0], right, atol=1e-12
    )


def test_kpts_ref_input_rejects_bad_keypoints():
    good = np.zeros((21, 3))
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(KeypointError, match="NaN"):
        keypoints_to_kpts_ref_input(good, bad)
    with pytest.raises(KeypointError, match=r"\(\.\.\., 21, 3\)"):
        keypoints_to_kpts_ref_input(good, np.zeros((20, 3)))


# ---- modules (README §8) ------------------------------------------------------------------


def test_golden_kgcn_adjacency_and_graph_layers():
    m = load("modules.npz")
    assert_matches(hand_joint_adjacency(), "modules.npz", "kgcn_adjacency")
    state = official_state_dict("kpts_ref")
    for side in HAND_SIDES:
        graph = GraphLayer(48, 16).eval()
        graph.load_state_dict(_sub_state(state, f"gcn_layers.0.graph_{side}."), strict=True)
        with torch.no_grad():
            out = graph(_f32(m[f"kgcn_in_{side}"]))
        assert_matches(out, "modules.npz", f"kgcn_graph_{side}_out")


def test_golden_kgcn_dual_graph_layer():
    m = load("modules.npz")
    layer = DualGraphLayer(48, 64).eval()
    layer.load_state_dict(_sub_state(official_state_dict("kpts_ref"), "gcn_layers.0."), strict=True)
    with torch.no_grad():
        left, right = layer(_f32(m["kgcn_in_left"]), _f32(m["kgcn_in_right"]), _f32(m["kgcn_in_img_ft"]))
    assert_matches(left, "modules.npz", "kgcn_out_left")
    assert_matches(right, "modules.npz", "kgcn_out_right")


# ---- the whole network (README §7) --------------------------------------------------------


def test_golden_kpts_ref_layer_outputs(official_k_output):
    for i, (left, right) in enumerate(official_k_output.layer_features):
        assert_matches(left, "kpts_ref.npz", f"gcn{i}_left_out")
        assert_matches(right, "kpts_ref.npz", f"gcn{i}_right_out")


def test_golden_kpts_ref_outputs_with_quirk_q8(official_k_output):
    assert_matches(official_k_output.left_mm, "kpts_ref.npz", "left_out_mm")
    assert_matches(official_k_output.right_mm, "kpts_ref.npz", "right_out_mm")


def test_golden_kpts_ref_right_regressor_without_quirk(official_k, official_k_output):
    """With Q8 off the right hand uses its own ``right_reg`` (same features, other head)."""
    fixed = KeypointRefiner(KptsRefConfig()).eval()
    fixed.load_state_dict(official_k.state_dict(), strict=True)
    right_feats = official_k_output.layer_features[-1][1]
    with torch.no_grad():
        right = fixed.regress("right", right_feats)
    assert_matches(right, "kpts_ref.npz", "right_out_mm_if_right_reg_were_used")
    assert float((right - official_k_output.right_mm).abs().max()) > 1.0  # the quirk matters


def test_golden_kpts_ref_generate_post_processing_q9():
    g, b = load("kpts_ref.npz"), load("two_hand_batch.npz")
    for side in HAND_SIDES:
        world = official_generate_world(
            g[f"{side}_out_mm"], g["left_mid_joint_m"], b["cam_R"], b[f"{side}_root_xyz"], side
        )
        assert_matches(world, "kpts_ref.npz", f"{side}_out_generate_world")


def test_golden_kpts_ref_correct_inverse_recovers_world_joints():
    """camera_to_world undoes the preprocessing exactly (unlike the Q9 post-processing)."""
    g, b = load("kpts_ref.npz"), load("two_hand_batch.npz")
    k_in = _official_input()
    for side in HAND_SIDES:
        cam = getattr(k_in, f"{side}_mm") / 1000.0 + k_in.origin_cam_m
        world = camera_to_world(cam, b["cam_R"], b["cam_T"])
        expected = g[f"{side}_pred_joints_dataset"] + b[f"{side}_root_xyz"][:, None, :]
        if side == "left":
            expected = expected * np.array([-1.0, 1.0, 1.0])
        np.testing.assert_allclose(world, expected, atol=1e-6)  # float32 R, T
        q9 = official_generate_world(
            getattr(k_in, f"{side}_mm"), k_in.origin_cam_m, b["cam_R"], b[f"{side}_root_xyz"], side
        )
        assert np.abs(q9 - world).max() > 0.01  # the official output is off by centimetres or more


def test_golden_kpts_ref_refine_public_api(official_k):
    """refine(): our keypoints in, refined keypoints out, equal to the official output."""
    b = load("two_hand_batch.npz")
    cam = _camera_keypoints_mano("pred")
    g = load("kpts_ref.npz")
    for i in range(2):
        refined = official_k.refine(
            torch.from_numpy(b["img"][i]), TwoHandKeypoints(cam["left"][i], cam["right"][i])
        )
        for side in HAND_SIDES:
            joints = refined.hand(side)
            assert joints.shape == (21, 3) and joints.dtype == np.float64
            halo_mm = (convert_joints(joints, "mano", "halo") - g["left_mid_joint_m"][i]) * 1000.0
            expected = g[f"{side}_out_mm"][i]
            diff = float(np.abs(halo_mm - expected).max())
            assert diff <= 1e-3, f"{side} sample {i}: {diff:.3g} mm"


def test_kpts_ref_refine_single_hand_returns_input_unchanged():
    model = KeypointRefiner(KptsRefConfig(encoder=EncoderConfig(backbone="resnet18"))).eval()
    left = np.random.default_rng(1).normal(size=(21, 3))
    kps = TwoHandKeypoints(left=left, right=None)
    out = model.refine(torch.zeros(3, 256, 256), kps)
    assert out.right is None
    assert out.left is not left
    np.testing.assert_array_equal(out.left, left)
    with pytest.raises(ImageError, match="256 x 256"):
        model.refine(torch.zeros(3, 128, 128), TwoHandKeypoints(left=left, right=left))
