"""Lifting, handedness and the placement template on synthetic hands (no detector)."""

import numpy as np
import pytest

from core.detect.detector import HandDetection, ImageDetection
from core.detect.handedness import assign_sides, chirality_score, label_to_side, side_evidence
from core.detect.lifting import _ray_rotation, fit_translation, lift_detection, lift_hand
from core.detect.template import template_hand, template_in_box, template_two_hands_local
from core.types import Camera


def _rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _posed(side, seed):
    rng = np.random.default_rng(seed)
    R = _rot(rng.normal(size=3), rng.uniform(0, np.pi))
    return template_hand(side) @ R.T


def test_chirality_of_right_and_mirrored_hands_in_any_orientation():
    for seed in range(20):
        right = _posed("right", seed)
        assert chirality_score(right) > 0.1
        mirrored = right * (1.0, -1.0, 1.0)  # any mirror makes a left hand
        assert chirality_score(mirrored) < -0.1
        assert chirality_score(_posed("left", seed)) < -0.1


def test_chirality_on_real_halo_right_hand_sequence():
    from golden import realdata_dir

    path = realdata_dir() / "keypoints_3d" / "halo_kps_seq_170x21x3_m.npy"
    if not path.is_file():
        pytest.skip("realdata not present")
    seq = np.load(path)
    scores = np.array([chirality_score(j) for j in seq])
    assert scores.min() > 0.15  # measured 0.215
    assert np.all(np.array([chirality_score(j * (-1, 1, 1)) for j in seq]) < -0.15)


def test_sides_are_unique_and_follow_the_evidence():
    assert label_to_side("Left") == "right" and label_to_side("Right", image_is_mirrored=True) == "right"
    assert assign_sides([0.9, 0.8]) in (["right", "left"],)  # both say right: the weaker yields
    assert assign_sides([0.2, 0.9]) == ["left", "right"]
    assert assign_sides([-0.5]) == ["left"]
    # geometry can overrule a weak label, a confident label can overrule weak geometry
    assert side_evidence(0.3, "left", 0.55) > 0
    assert side_evidence(0.01, "left", 0.99) < 0


def test_fit_translation_is_exact_on_a_projected_hand():
    cam = Camera.default_for_image(640, 480)
    shape = _posed("right", 3)
    shape = shape - shape.mean(axis=0)
    t_true = np.array([0.08, -0.05, 0.62])
    uv = cam.project(shape + t_true)
    np.testing.assert_allclose(fit_translation(shape, uv, cam.K), t_true, atol=1e-9)


def _detection(joints_cam, cam, side, world):
    uv = cam.project(joints_cam)
    depth_px = (joints_cam[:, 2] - joints_cam[0, 2]) * cam.K[0, 0] / joints_cam[0, 2]
    return HandDetection(uv, depth_px, world, side, 1.0 if side == "right" else -1.0, 0.99)


@pytest.mark.parametrize("ray_correction", [False, True])
def test_lifting_recovers_a_synthetic_hand_exactly(ray_correction):
    cam = Camera.default_for_image(800, 600)
    right = _posed("right", 5) + [0.12, 0.06, 0.7]  # off-centre: the ray rotation matters
    left = _posed("left", 6) + [-0.1, -0.02, 0.75]
    hands = []
    for side, joints in (("right", right), ("left", left)):
        shape = joints - joints.mean(axis=0)
        if ray_correction:  # MediaPipe's world shape is as seen along the ray to the hand
            ray = np.linalg.solve(cam.K, [*cam.project(joints).mean(axis=0), 1.0])
            shape = shape @ _ray_rotation(ray)
        hands.append(_detection(joints, cam, side, shape))
    kp = lift_detection(ImageDetection(hands, 800, 600), cam, snap_to_2d=False, ray_correction=ray_correction,
                      method="world")
    tol = 1e-9 if not ray_correction else 2e-3  # the ray through the landmarks' mean != centroid ray
    np.testing.assert_allclose(kp.right, right, atol=tol)
    np.testing.assert_allclose(kp.left, left, atol=tol)
    snapped = lift_hand(hands[0], cam, snap_to_2d=True, ray_correction=ray_correction)
    np.testing.assert_allclose(cam.project(snapped), cam.project(right), atol=1e-6)


def test_lifting_one_hand_leaves_the_other_none_and_fixes_mirrored_world():
    cam = Camera.default_for_image(640, 480)
    right = _posed("right", 8) + [0.0, 0.0, 0.6]
    world = right - right.mean(axis=0)
    world_mirrored_in_depth = world * (1, 1, -1)  # wrong chirality from the detector
    det = ImageDetection([_detection(right, cam, "right", world_mirrored_in_depth)], 640, 480)
    kp = lift_detection(det, cam, snap_to_2d=False, ray_correction=False, method="world")
    assert kp.left is None
    np.testing.assert_allclose(kp.right, right, atol=1e-9)
    assert chirality_score(kp.right) > 0


def test_template_chirality_and_box_fit():
    local = template_two_hands_local()
    assert chirality_score(local.right) > 0.1 and chirality_score(local.left) < -0.1
    assert local.right[:, 0].mean() < local.left[:, 0].mean()  # right hand on the image's left
    cam = Camera.default_for_image(640, 480)
    box = (200.0, 150.0, 440.0, 330.0)
    kp = template_in_box(box, cam)
    uv = cam.project(np.concatenate([kp.left, kp.right]))
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    assert lo[0] > box[0] - 5 and lo[1] > box[1] - 5 and hi[0] < box[2] + 5 and hi[1] < box[3] + 5
    assert max((hi - lo) / (box[2] - box[0], box[3] - box[1])) > 0.9  # fills the box
    one = template_in_box(box, cam, sides=("left",))
    assert one.right is None and chirality_score(one.left) < 0
    wrist_to_middle_tip = np.linalg.norm(one.left[12] - one.left[0])
    assert 0.17 < wrist_to_middle_tip < 0.20
