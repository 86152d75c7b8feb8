"""The anthropometric skeleton fit (core/detect/skeleton_fit.py) on synthetic hands with
known ground truth: random size, proportions and pose, projected with 3 px noise."""

import time

import numpy as np
import pytest

from core.detect import hand_prior as HP
from core.detect import skeleton_model as M
from core.detect.handedness import chirality_score
from core.detect.skeleton_fit import FitOptions, HandObservation, fit_hand, fit_hands, joint_confidence
from core.synth import pose_sampler as PS
from core.types import Camera

CAMERA = Camera(K=np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]]), width=640, height=480)
STYLES = ("relaxed", "flat", "spread", "grip", "point", "pinch", "claw", "random")


def _rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _true_hand(rng, side: str, log_size: float) -> tuple[np.ndarray, np.ndarray]:
    """A hand of the skeleton model with ``log_size``, bone proportions drawn from the prior's
    spread and a pose from the synthetic pose sampler; random orientation with the palm side
    within 75 degrees of the camera, 0.4-0.7 m away. Returns (params, (21, 3) camera joints)."""
    p = np.zeros(M.NUM_PARAMS)
    p[M.SCALE] = log_size
    p[M.BONES] = rng.normal(scale=0.04, size=M.NUM_BONES)
    p[M.ANGLES] = PS.sample_pose(rng, STYLES[rng.integers(len(STYLES))]).angles.ravel()
    p[M.CUP] = np.deg2rad(rng.uniform(0, 15))
    while True:
        R = _rotation(rng)
        palm_normal = R @ np.array([0.0, 0.0, 1.0])  # palmar direction of the hand frame
        if palm_normal[2] < -np.cos(np.deg2rad(75)):
            break
    p[M.ROT] = M.rotation_to_axis_angle(R)
    z = rng.uniform(0.4, 0.7)
    p[3:6] = (rng.uniform(-0.12, 0.12), rng.uniform(-0.1, 0.1), np.log(z))
    return p, M.camera_joints(p, side)[0]


def _observe(rng, joints: np.ndarray, side: str, noise_px: float = 3.0) -> HandObservation:
    """2D landmarks with ``noise_px`` Gaussian noise; a MediaPipe-like relative 3D shape:
    the true shape at 0.7x its size (MediaPipe's world hands are too small) with 6 mm noise."""
    uv = CAMERA.project(joints) + rng.normal(scale=noise_px, size=(21, 2))
    hint = (joints - joints.mean(0)) * 0.7 + rng.normal(scale=0.006, size=(21, 3))
    return HandObservation(side, uv, hint, detector_score=0.95)


def _mpjpe_mm(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.linalg.norm((pred - pred[0]) - (true - true[0]), axis=1).mean() * 1000)


def test_skeleton_model_is_a_right_or_left_hand_of_the_prior_size():
    p = np.zeros(M.NUM_PARAMS)
    right, left = M.local_joints(p, "right")[0], M.local_joints(p, "left")[0]
    assert chirality_score(right) > 0.05 and chirality_score(left) < -0.05
    # the straight middle finger spans the hand length, wrist to tip
    assert np.linalg.norm(right[12] - right[0]) == pytest.approx(HP.HAND_LENGTH_MEAN_M, rel=1e-9)
    # index proximal phalanx = Buchholz fraction x hand length
    assert np.linalg.norm(right[6] - right[5]) == pytest.approx(0.245 * HP.HAND_LENGTH_MEAN_M, rel=1e-9)
    # angles back from the joints they produce
    rng = np.random.default_rng(3)
    p[M.ANGLES] = PS.sample_pose(rng, "grip").angles.ravel()
    for side in ("right", "left"):
        back = M.angles_from_directions(M.local_joints(p, side)[0], side)
        np.testing.assert_allclose(back.ravel(), p[M.ANGLES], atol=1e-9)


@pytest.fixture(scope="module")
def synthetic_fits():
    """16 hands of random size (the adult population's spread, clipped at 2 SD = +-12 %),
    proportions and pose, with their fits."""
    rng = np.random.default_rng(17)
    out = []
    for i in range(16):
        side = ("left", "right")[i % 2]
        log_size = np.clip(rng.normal(scale=HP.HAND_LENGTH_LOG_SD), -0.124, 0.124)
        p, joints = _true_hand(rng, side, log_size)
        out.append((p, joints, fit_hand(_observe(rng, joints, side), CAMERA)))
    return out


def test_recovers_shape_and_depth_of_random_hands(synthetic_fits):
    """A single view cannot tell a big far hand from a small near one (scaling the scene about
    the camera centre leaves every projection unchanged), so the fitted size is the prior's;
    what the image determines is the shape and the depth per unit size. Both must be right."""
    scaled, depth_errors = [], []
    for p, joints, fit in synthetic_fits:
        k = np.exp(p[M.SCALE] - fit.params[M.SCALE])  # true size / fitted size
        scaled.append(_mpjpe_mm(fit.joints_m * k, joints))
        depth_errors.append(abs(fit.joints_m[0, 2] * k / joints[0, 2] - 1))
    assert np.mean(scaled) < 10.0 and np.max(scaled) < 20.0
    # measured: mean 2.7 %, worst 6 % (the pose's foreshortening is what sets it)
    assert np.mean(depth_errors) < 0.04 and np.max(depth_errors) < 0.08


def test_hands_of_typical_size_recovered_within_10mm_and_5_percent(synthetic_fits):
    """Hands within one prior SD (6 %) of the mean size: MPJPE without any rescaling < 10 mm
    on average and the hand length within 5 %."""
    typical = [(p, j, f) for p, j, f in synthetic_fits if abs(p[M.SCALE]) < HP.HAND_LENGTH_LOG_SD]
    assert len(typical) >= 8
    errors = [_mpjpe_mm(f.joints_m, j) for _, j, f in typical]
    assert np.mean(errors) < 10.0
    for p, _, f in typical:
        assert f.hand_length_m == pytest.approx(M.hand_length_m(p), rel=0.05)


def test_prior_size_is_used_when_nothing_else_is_known(synthetic_fits):
    for _, _, fit in synthetic_fits:
        assert fit.hand_length_m == pytest.approx(HP.HAND_LENGTH_MEAN_M, rel=0.02)
        assert fit.bone_lengths_m.shape == (20,) and np.all(fit.bone_lengths_m > 0.01)


def test_missing_joints_degrade_gracefully():
    """Hiding 4 and then 8 of the 21 landmarks (NaN) keeps the fit close; the hidden joints
    get zero confidence and the fit still returns all 21 joints."""
    rng = np.random.default_rng(5)
    errors = {0: [], 4: [], 8: []}
    for i in range(6):
        side = ("left", "right")[i % 2]
        p, joints = _true_hand(rng, side, 0.0)
        obs = _observe(rng, joints, side)
        for hidden in errors:
            uv = obs.landmarks_px.copy()
            gone = rng.choice(np.arange(1, 21), size=hidden, replace=False)
            uv[gone] = np.nan
            fit = fit_hand(HandObservation(side, uv, obs.shape_hint, obs.detector_score), CAMERA)
            assert fit.joints_m.shape == (21, 3) and np.all(np.isfinite(fit.joints_m))
            assert np.all(fit.confidence[gone] == 0.0) and np.all(np.isnan(fit.residual_px[gone]))
            errors[hidden].append(_mpjpe_mm(fit.joints_m, joints))
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    assert mean[0] < 10.0 and mean[4] < 14.0 and mean[8] < 20.0
    # a hand with only its palm and 0 fingertips seen still gets a plausible hand
    uv = np.full((21, 2), np.nan)
    uv[[0, 5, 9, 13, 17]] = CAMERA.project(joints)[[0, 5, 9, 13, 17]]
    fit = fit_hand(HandObservation(side, uv, None), CAMERA)
    assert _mpjpe_mm(fit.joints_m, joints) < 60.0
    with pytest.raises(ValueError, match="at least 4"):
        fit_hand(HandObservation(side, np.full((21, 2), np.nan), None), CAMERA)


def test_confidence_is_lower_on_perturbed_joints():
    """Moving 3 landmarks by 25 % of the hand's size: the fit cannot follow them (bone lengths
    and joint limits), so their residuals and confidences single them out."""
    rng = np.random.default_rng(11)
    for i in range(6):
        side = ("left", "right")[i % 2]
        _, joints = _true_hand(rng, side, 0.0)
        obs = _observe(rng, joints, side)
        size = np.ptp(obs.landmarks_px, axis=0).max()
        moved = rng.choice(np.arange(1, 21), size=3, replace=False)
        uv = obs.landmarks_px.copy()
        angle = rng.uniform(0, 2 * np.pi, size=3)
        uv[moved] += 0.25 * size * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        fit = fit_hand(HandObservation(side, uv, obs.shape_hint, 0.9), CAMERA)
        others = np.setdiff1d(np.arange(21), moved)
        assert fit.confidence[moved].max() < fit.confidence[others].mean()
        assert fit.confidence[moved].mean() < 0.5 and fit.confidence[others].mean() > 0.6
        assert np.all(fit.confidence <= 0.9)  # never above the detector's score
        # the perturbation barely moves the rest of the hand (robust loss)
        assert _mpjpe_mm(fit.joints_m[others], joints[others]) < 15.0
    assert joint_confidence(np.array([0.0, 2.5, np.nan]), 0.8) == pytest.approx([0.8, 0.4, 0.0])


def test_two_hands_share_size_and_do_not_interpenetrate():
    """Two hands placed side by side, 4 cm apart, fitted jointly: the same size, their
    right-to-left root vector close to the truth, no joints closer than contact distance."""
    rng = np.random.default_rng(23)
    errors = []
    for _ in range(4):
        p_r, right = _true_hand(rng, "right", 0.0)
        p_l = p_r.copy()
        p_l[M.ANGLES] = PS.sample_pose(rng, "relaxed").angles.ravel()
        flip = np.diag([1.0, -1.0, -1.0])  # turned about the x axis
        p_l[M.ROT] = M.rotation_to_axis_angle(flip @ M.rotation_matrices(p_r[None, M.ROT])[0])
        left = M.camera_joints(p_l, "left")[0]
        gap = right[:, 0].max() - left[:, 0].min() + 0.04  # put the left hand 4 cm to the right
        left = left + np.array([gap, 0.0, 0.0])
        fits = fit_hands([_observe(rng, left, "left"), _observe(rng, right, "right")], CAMERA)
        assert fits[0].hand_length_m == pytest.approx(fits[1].hand_length_m, rel=0.05)
        v_fit = fits[0].joints_m[0] - fits[1].joints_m[0]
        errors.append(np.linalg.norm(v_fit - (left[0] - right[0])) * 1000)
        d = np.linalg.norm(fits[0].joints_m[:, None] - fits[1].joints_m[None], axis=-1)
        assert d.min() > 0.012
    assert np.mean(errors) < 25.0


def test_fit_takes_under_50_ms_per_hand():
    """CPU time (not wall time: the test machine is shared) of one-hand and two-hand fits;
    measured 10-35 ms per hand here. The bound is generous against a slow machine."""
    rng = np.random.default_rng(2)
    _, joints = _true_hand(rng, "right", 0.0)
    obs = _observe(rng, joints, "right")
    fit_hand(obs, CAMERA)  # warm-up
    start = time.process_time()
    for _ in range(5):
        fit_hand(obs, CAMERA)
    per_hand = (time.process_time() - start) / 5
    assert per_hand < 0.1  # the requirement is 50 ms; twice that so a loaded machine does not flake
    assert per_hand < 0.05 or pytest.skip(f"{per_hand * 1000:.0f} ms per hand: a slow or loaded machine")


def test_options_validate_input():
    with pytest.raises(ValueError, match="one or two"):
        fit_hands([], CAMERA)
    with pytest.raises(ValueError, match="side"):
        M.local_joints(np.zeros(M.NUM_PARAMS), "middle")
    assert FitOptions().shared_scale


def test_skeleton_lifting_of_a_detection_uses_the_world_shape_and_fixes_its_chirality():
    """lift_detection (default method) on a synthetic detection whose MediaPipe-like world
    shape is mirrored in depth (wrong chirality): the hint is corrected, the fit lands on
    the hand, the confidences come back with the keypoints."""
    from core.detect.detector import HandDetection, ImageDetection
    from core.detect.lifting import lift_detection, lift_detection_with_fits

    rng = np.random.default_rng(4)
    _, right = _true_hand(rng, "right", 0.03)
    uv = CAMERA.project(right) + rng.normal(scale=2.0, size=(21, 2))
    world = (right - right.mean(0)) * 0.6 * np.array([1.0, 1.0, -1.0])
    depth_px = (right[:, 2] - right[0, 2]) * 600
    det = ImageDetection([HandDetection(uv, depth_px, world, "right", 0.8, 0.97)], 640, 480)
    lifted = lift_detection_with_fits(det, CAMERA)
    assert lifted.keypoints.left is None and set(lifted.fits) == {"right"}
    assert _mpjpe_mm(lifted.keypoints.right, right) < 15.0
    assert chirality_score(lifted.keypoints.right) > 0
    assert lifted.confidence("right").shape == (21,) and lifted.confidence("left") is None
    snapped = lift_detection(det, CAMERA, snap_to_2d=True)
    np.testing.assert_allclose(CAMERA.project(snapped.right), uv, atol=1e-6)
    with pytest.raises(ValueError, match="lifting method"):
        lift_detection(det, CAMERA, method="magic")


def test_detector_depth_ratio_steadies_the_relative_depth_of_two_hands():
    """One hand's landmarks spread 12 % too wide about their centre (as MediaPipe's were on a
    real frame): alone, the 2D makes it 12 % too close. The detector's own 3D hands, placed at
    0.7x the true depths (a shared bias), keep the ratio of the two depths, and the root
    vector error drops (measured 58 -> 28 mm)."""
    rng = np.random.default_rng(29)
    with_cue, without = [], []
    for _ in range(3):
        p_r, right = _true_hand(rng, "right", 0.0)
        left = right * np.array([-1.0, 1.0, 1.0]) + np.array([0.0, 0.0, 0.05])  # mirror, 5 cm deeper
        left[:, 0] += right[:, 0].max() - left[:, 0].min() + 0.03
        obs_l, obs_r = _observe(rng, left, "left"), _observe(rng, right, "right")
        centre = obs_l.landmarks_px.mean(0)
        obs_l.landmarks_px = centre + 1.12 * (obs_l.landmarks_px - centre)
        truth = (left[0] - right[0]) * 1000
        plain = fit_hands([obs_l, obs_r], CAMERA)
        without.append(np.linalg.norm((plain[0].joints_m[0] - plain[1].joints_m[0]) * 1000 - truth))
        obs_l.detector_depth_m, obs_r.detector_depth_m = 0.7 * left[0, 2], 0.7 * right[0, 2]
        cued = fit_hands([obs_l, obs_r], CAMERA)
        with_cue.append(np.linalg.norm((cued[0].joints_m[0] - cued[1].joints_m[0]) * 1000 - truth))
    assert np.mean(with_cue) < 0.6 * np.mean(without)


def _detection_of(joints: np.ndarray, side: str, world_m: np.ndarray, depth_px: np.ndarray, rng,
                  noise_px: float = 1.0):
    from core.detect.detector import HandDetection

    uv = CAMERA.project(joints) + rng.normal(scale=noise_px, size=(21, 2))
    return HandDetection(uv, depth_px, world_m, side, 0.8 if side == "right" else -0.8, 0.97)


def _dz_error(shape: np.ndarray, joints: np.ndarray) -> float:
    from core.detect.skeleton_fit import _bone_dirs

    return float(np.abs(_bone_dirs(shape)[:, 2] - _bone_dirs(joints)[:, 2]).mean())


def test_landmark_shape_reads_mediapipe_depth_in_pixels_like_x():
    """MediaPipe's image-landmark z is depth relative to the wrist, scaled like x (pixels at
    the wrist's depth): exact landmarks and depths give the true hand, in wrist depths."""
    from core.detect.lifting import landmark_shape_in_camera

    rng = np.random.default_rng(11)
    for side in ("right", "left"):
        _, joints = _true_hand(rng, side, 0.0)
        depth_px = (joints[:, 2] - joints[0, 2]) * CAMERA.K[0, 0] / joints[0, 2]
        det = _detection_of(joints, side, joints - joints.mean(0), depth_px, rng, noise_px=0.0)
        shape = landmark_shape_in_camera(det, CAMERA)
        np.testing.assert_allclose(shape, (joints - joints.mean(0)) / joints[0, 2], atol=1e-9)
        assert chirality_score(shape) * (1 if side == "right" else -1) > 0


def test_both_depth_cues_average_and_a_contradicting_relief_is_left_out():
    """The default cue is the mean of MediaPipe's two reliefs (world landmarks, image-landmark
    z): with independent errors in each it is closer to the truth than either. A landmark
    relief of the other chirality (the side was decided against it) is not averaged in."""
    from core.detect.lifting import DEFAULT_DEPTH_CUE, depth_hint, world_shape_in_camera

    assert DEFAULT_DEPTH_CUE == "both"
    rng = np.random.default_rng(12)
    errors = {"world": [], "landmarks": [], "both": []}
    for k in range(20):
        side = ("right", "left")[k % 2]
        _, joints = _true_hand(rng, side, 0.0)
        world = (joints - joints.mean(0)) * 0.7 + rng.normal(scale=0.7 * 0.008, size=(21, 3))
        rel = (joints[:, 2] - joints[0, 2]) + rng.normal(scale=0.008, size=21)
        depth_px = rel * CAMERA.K[0, 0] / joints[0, 2]
        det = _detection_of(joints, side, world, depth_px, rng)
        for cue in errors:
            errors[cue].append(_dz_error(depth_hint(det, CAMERA, depth_cue=cue), joints))
    mean = {cue: float(np.mean(e)) for cue, e in errors.items()}
    assert mean["both"] < 0.9 * min(mean["world"], mean["landmarks"]), mean

    mirrored = _detection_of(joints, side, world, -depth_px, rng)  # the last hand, relief flipped
    np.testing.assert_allclose(depth_hint(mirrored, CAMERA), world_shape_in_camera(mirrored, CAMERA))
    flat = _detection_of(joints, side, world, np.zeros(21), rng)  # a detector without depth
    np.testing.assert_allclose(depth_hint(flat, CAMERA), world_shape_in_camera(flat, CAMERA))
    flipped_back = depth_hint(mirrored, CAMERA, depth_cue="landmarks")
    assert chirality_score(flipped_back) * (1 if side == "right" else -1) > 0
    with pytest.raises(ValueError, match="depth cue"):
        depth_hint(det, CAMERA, depth_cue="sonar")
