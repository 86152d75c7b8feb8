"""Detector-like keypoint noise for network K (core.synth.detector_noise): each term does
what it says, on a real synthetic hand, and K's recipe reads it as a typed config section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import TrainConfigError
from core.hand.joints import MANO_PARENTS
from core.synth import detector_noise as dn
from core.synth.samples import SynthConfig, generate_sample
from core.training.datasets import DatasetError, InterHandDataset, ItemSpec, SynthOnTheFlyDataset
from core.training.recipes import make_recipe
from core.training.recipes.config import TrainConfig
from core.types import Camera

CAMERA = Camera(K=np.array([[1200.0, 0, 140.0], [0, 1210.0, 110.0], [0, 0, 1]]), width=256, height=256)
ONLY = dict(depth_offset_sd_mm=0.0, scale_log_sd=0.0, rotation_in_plane_sd_deg=0.0,
            rotation_out_of_plane_sd_deg=0.0, swap_prob_per_hand=0.0, failed_finger_prob=0.0)  # fmt: skip
ZERO = dn.DetectorNoise(**ONLY)


def only(**terms) -> dn.DetectorNoise:
    """All terms off but ``terms``."""
    return dn.DetectorNoise(**{**ONLY, **terms})


@pytest.fixture(scope="module")
def sample():
    return generate_sample(21, SynthConfig(n_uniform=8, n_surface=8))


@pytest.fixture(scope="module")
def hand(sample):
    return np.asarray(sample.keypoints.right, dtype=np.float64)


def _bones(j):
    return np.array([np.linalg.norm(j[c] - j[p]) for c, p in enumerate(MANO_PARENTS) if p >= 0])


def test_depth_offset_keeps_every_projection(hand):
    for offset_m in (-0.15, 0.04, 0.3):
        moved = dn.slide_along_rays(hand, offset_m)
        assert np.abs(CAMERA.project(moved) - CAMERA.project(hand)).max() < 1e-6  # pixels
        np.testing.assert_allclose(moved[:, 2] - hand[:, 2], offset_m, atol=1e-12)  # same depth step
    with pytest.raises(ValueError, match="in front of the camera"):
        dn.slide_along_rays(hand, -float(hand[:, 2].min()) - 0.01)


def test_rigid_depth_offset_keeps_size_and_the_wrist_projection(hand):
    """The measured default: the hand slides rigidly along its wrist's ray; its 2D shrinks
    about the wrist's projection by z_wrist / (z_wrist + d) (exactly for a flat-on hand)."""
    moved = dn.slide_along_wrist_ray(hand, 0.12)
    np.testing.assert_allclose(_bones(moved), _bones(hand), rtol=1e-12)  # rigid
    assert np.abs(CAMERA.project(moved[0]) - CAMERA.project(hand[0])).max() < 1e-6
    assert moved[0, 2] - hand[0, 2] == pytest.approx(0.12, abs=1e-12)
    uv, uv0 = CAMERA.project(moved), CAMERA.project(hand)
    shrink = np.linalg.norm(uv - uv[0], axis=1)[1:] / np.linalg.norm(uv0 - uv0[0], axis=1)[1:]
    z = hand[0, 2]
    assert np.allclose(shrink, z / (z + 0.12), rtol=0.08)
    noise = only(depth_offset_sd_mm=50.0, depth_offset_keeps_projection=False)
    rigid = dn.detector_noise_hand(hand, np.random.default_rng(2), noise)
    np.testing.assert_allclose(_bones(rigid), _bones(hand), rtol=1e-12)
    exact = dn.detector_noise_hand(hand, np.random.default_rng(2), only(depth_offset_sd_mm=50.0))
    assert np.abs(CAMERA.project(exact) - CAMERA.project(hand)).max() < 1e-6
    np.testing.assert_allclose(exact[0, 2], rigid[0, 2], atol=1e-12)  # the same draw


def test_scale_about_the_wrist_keeps_bone_ratios_and_projection(hand):
    scaled = dn.scale_about_wrist_along_ray(hand, 1.13)
    ratios = _bones(scaled) / _bones(hand)
    np.testing.assert_allclose(ratios, 1.13, rtol=1e-12)  # every bone by the same factor
    assert np.abs(CAMERA.project(scaled) - CAMERA.project(hand)).max() < 1e-6
    # the wrist slid along its own ray, to 1.13 x its depth
    np.testing.assert_allclose(scaled[0], 1.13 * hand[0], atol=1e-12)


def test_swap_exchanges_exactly_two_neighbouring_fingers(hand):
    swapped = dn.swap_fingers(hand, 2, 3)
    middle, ring = list(dn.FINGER_CHAINS[2]), list(dn.FINGER_CHAINS[3])
    np.testing.assert_array_equal(swapped[middle], hand[ring])
    np.testing.assert_array_equal(swapped[ring], hand[middle])
    changed = np.flatnonzero(np.any(swapped != hand, axis=1))
    assert sorted(changed) == sorted(middle + ring)  # nothing else moves


def test_collapsed_finger_lies_in_the_palm(hand):
    collapsed = dn.collapse_finger(hand, 1)
    chain = list(dn.FINGER_CHAINS[1])
    changed = np.flatnonzero(np.any(collapsed != hand, axis=1))
    assert sorted(changed) == chain[1:]  # PIP, DIP, tip; the MCP stays
    centre = hand[list(dn.PALM_CENTRE_JOINTS)].mean(axis=0)
    base = hand[chain[0]]
    for joint, f in zip(chain[1:], (0.35, 0.6, 0.8), strict=True):  # on the MCP -> palm centre segment
        np.testing.assert_allclose(collapsed[joint], base + f * (centre - base), atol=1e-12)
    # the tip ends inside the palm: nearer its centre than any finger's MCP is
    mcps = hand[[5, 9, 13, 17]]
    assert np.linalg.norm(collapsed[chain[3]] - centre) < np.linalg.norm(mcps - centre, axis=1).min()


def test_noise_is_deterministic_given_the_seed(hand):
    cfg = dn.DetectorNoise(swap_prob_per_hand=0.5, failed_finger_prob=0.3)
    a = dn.detector_noise_hand(hand, np.random.default_rng(5), cfg)
    b = dn.detector_noise_hand(hand, np.random.default_rng(5), cfg)
    c = dn.detector_noise_hand(hand, np.random.default_rng(6), cfg)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_zero_magnitudes_and_disabled_are_the_identity(hand):
    np.testing.assert_array_equal(dn.detector_noise_hand(hand, np.random.default_rng(1), ZERO), hand)
    off = dn.DetectorNoise(enabled=False)
    np.testing.assert_array_equal(dn.detector_noise_hand(hand, np.random.default_rng(1), off), hand)


def test_item_share_mixes_detector_terms_with_the_plain_jitter(sample):
    from core.synth.noise import perturb_keypoints

    deep = only(depth_offset_sd_mm=300.0)  # an unmistakable wrist depth change
    truth = sample.keypoints
    # The share below 1: each item either gets the terms or is the plain jitter, exactly.
    mixed = dn.DetectorNoise(**{**ONLY, "depth_offset_sd_mm": 300.0, "item_share": 0.3})
    with_terms = 0
    for seed in range(200):
        got = dn.training_noise(truth, np.random.default_rng(seed), mixed)
        rng = np.random.default_rng(seed)
        rng.random()  # the share draw
        plain = perturb_keypoints(truth, rng, None)
        if np.allclose(got.right, plain.right) and np.allclose(got.left, plain.left):
            continue
        with_terms += 1
    assert 0.22 < with_terms / 200 < 0.38
    # At share 1 there is no extra draw: the stream is the one before the option existed.
    a = dn.training_noise(truth, np.random.default_rng(7), deep)
    rng = np.random.default_rng(7)
    jittered = perturb_keypoints(truth, rng, dn.JITTER_BESIDE_DETECTOR_NOISE)
    np.testing.assert_array_equal(a.right, dn.apply_detector_noise(jittered, rng, deep).right)
    with pytest.raises(ValueError, match="item_share"):
        dn.DetectorNoise(item_share=1.5)


def test_drawn_magnitudes_follow_the_config(hand):
    """Over many draws the depth step, scale and rotation have the configured spread and the
    swaps and collapses their configured rates."""
    rng = np.random.default_rng(0)
    cfg = only(depth_offset_sd_mm=30.0, swap_prob_per_hand=0.2, depth_offset_keeps_projection=True)
    draws = [dn.detector_noise_hand(hand, rng, cfg) for _ in range(2000)]
    depth_mm = np.array([(d[0, 2] - hand[0, 2]) * 1000 for d in draws])
    assert abs(depth_mm.std() - 30.0) < 2.0 and abs(depth_mm.mean()) < 2.0
    swapped = np.mean([not np.allclose(d[5:] / d[5:, 2:3], hand[5:] / hand[5:, 2:3]) for d in draws])
    assert abs(swapped - 0.2) < 0.03
    scale_only = only(scale_log_sd=0.1)
    logs = [np.log(_bones(dn.detector_noise_hand(hand, rng, scale_only)).sum() / _bones(hand).sum())
            for _ in range(2000)]  # fmt: skip
    assert abs(np.std(logs) - 0.1) < 0.007
    rotated = dn.detector_noise_hand(hand, rng, only(rotation_in_plane_sd_deg=10.0))
    np.testing.assert_allclose(_bones(rotated), _bones(hand), rtol=1e-9)  # rigid
    np.testing.assert_array_equal(rotated[0], hand[0])  # about the wrist


def test_rotation_splits_into_in_plane_turns_and_depth_only_tilts(hand):
    """In-plane draws turn the hand rigidly about the wrist's ray, of the set size; out-of-plane
    draws (about axes across that ray) change only the depths: the 2D stays, each joint takes
    the depth it has in the rigidly tilted hand."""
    from core.detect.detector_errors import best_rotation, rotation_vector

    rng = np.random.default_rng(3)
    ray = hand[0] / np.linalg.norm(hand[0])
    vecs = []
    for _ in range(400):
        moved = dn.detector_noise_hand(hand, rng, only(rotation_in_plane_sd_deg=6.0))
        vecs.append(np.degrees(rotation_vector(best_rotation(hand - hand[0], moved - moved[0]))))
    along = np.array([v @ ray for v in vecs])
    across = np.array([np.linalg.norm(v - (v @ ray) * ray) for v in vecs])
    assert np.sqrt(np.mean(along**2)) == pytest.approx(6.0, abs=0.6) and across.max() < 1e-6
    rotation = dn.rotation_about_ray(hand[0], 0.0, np.deg2rad([25.0, -10.0]))
    tilted = dn.tilt_depths_about_wrist(hand, rotation)
    assert np.abs(CAMERA.project(tilted) - CAMERA.project(hand)).max() < 1e-6
    np.testing.assert_allclose(tilted[:, 2], dn.rotate_about_wrist(hand, rotation)[:, 2], atol=1e-12)
    assert np.abs(tilted[:, 2] - hand[:, 2]).max() > 0.01  # the relief turned by cm
    drawn = dn.detector_noise_hand(hand, rng, only(rotation_out_of_plane_sd_deg=30.0))
    assert np.abs(CAMERA.project(drawn) - CAMERA.project(hand)).max() < 1e-6


def test_a_straightened_finger_keeps_its_bone_lengths_in_a_line(hand):
    out = dn.straighten_finger(hand, 2)
    chain = list(dn.FINGER_CHAINS[2])
    bones = [c - 1 for c in chain[1:]]  # the bones ending at PIP, DIP, tip
    np.testing.assert_allclose(_bones(out)[bones], _bones(hand)[bones], rtol=1e-12)
    d = np.diff(out[chain], axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    np.testing.assert_allclose(d, np.repeat(d[:1], 3, axis=0), atol=1e-12)  # one straight line
    np.testing.assert_allclose(np.cross(d[0], out[chain[0]] - out[0]), 0, atol=1e-12)  # along wrist->MCP


def test_recipe_reads_a_typed_section_and_refuses_unknown_keys():
    data = {"kind": "synth", "first_seed": 0, "count": 2}
    default = TrainConfig.of("kpts", data=data)
    assert default.options.detector_noise == dn.DetectorNoise() and default.options.detector_noise.enabled
    section = {"depth_offset_sd_mm": 12.5, "swap_prob_per_hand": 0.1}
    cfg = TrainConfig.of("kpts", data=data, detector_noise=section)
    assert cfg.options.detector_noise.depth_offset_sd_mm == 12.5
    assert cfg.options.detector_noise.swap_prob_per_hand == 0.1
    assert json.loads(json.dumps(cfg.flat()))["detector_noise"]["depth_offset_sd_mm"] == 12.5  # checkpoints
    with pytest.raises(TrainConfigError, match="detector_noise: unknown key.*depth_mm"):
        TrainConfig.of("kpts", data=data, detector_noise={"depth_mm": 3})
    with pytest.raises(TrainConfigError, match="swap_prob_per_hand must lie in"):
        TrainConfig.of("kpts", data=data, detector_noise={"swap_prob_per_hand": 2})
    with pytest.raises(TrainConfigError, match="detector_noise must be an object"):
        TrainConfig.of("kpts", data=data, detector_noise=0.5)


def test_recipe_adds_detector_noise_to_synthetic_items_only(tmp_path):
    data = {"kind": "synth", "first_seed": 30, "count": 1, "points": 8}
    on = make_recipe(TrainConfig.of("kpts", data=data, renoise=True), tmp_path).item_spec()
    off = make_recipe(TrainConfig.of("kpts", data=data, renoise=True, detector_noise={"enabled": False}),
                      tmp_path).item_spec()  # fmt: skip
    assert on.adds_detector_noise and not off.adds_detector_noise
    real = {"kind": "interhand", "img_root": "x", "occ_root": "y"}
    assert not make_recipe(TrainConfig.of("kpts", data=real), tmp_path).item_spec().adds_detector_noise
    for sub in ("img", "anno", "points"):  # the reference layout, one (unread) annotation
        (tmp_path / "train" / sub).mkdir(parents=True)
    (tmp_path / "train" / "anno" / "0.json").write_text("{}")
    with pytest.raises(DatasetError, match="detector_noise"):
        InterHandDataset(tmp_path, tmp_path, "train", on)
    spec_on = ItemSpec(**{**on.__dict__, "needs_image": False, "crop_with": "none"})
    spec_off = ItemSpec(**{**off.__dict__, "needs_image": False, "crop_with": "none"})
    a = SynthOnTheFlyDataset(30, 1, spec_on, points=8)[(0, 0)]
    b = SynthOnTheFlyDataset(30, 1, spec_off, points=8)[(0, 0)]
    assert a["joints_left"].equal(b["joints_left"])  # ground truth untouched
    assert not a["noisy_joints_left"].allclose(b["noisy_joints_left"])


def test_a_quick_k_training_run_with_detector_noise(tmp_path):
    """Three iterations of K on two on-the-fly samples with fresh jitter + detector noise: the
    run finishes, logs finite errors, and the export records the noise it was trained with."""
    from core.checkpoints import read_checkpoint_info
    from core.training.trainer import METRICS_CSV, train

    cfg = TrainConfig.of("kpts", data={"kind": "synth", "first_seed": 40, "count": 2, "points": 8},
                         renoise=True, identity_init=True, dropout=0.0, max_iters=3, batch_size=2,
                         log_every=1, checkpoint_every=3, torch_threads=1,
                         detector_noise={"swap_prob_per_hand": 0.5, "failed_finger_prob": 0.2})  # fmt: skip
    result = train(cfg, tmp_path / "kpts", progress=False)
    assert result.iterations == 3
    rows = (tmp_path / "kpts" / METRICS_CSV).read_text().strip().splitlines()
    head = rows[0].split(",")
    mpjpe_in = [float(r.split(",")[head.index("mpjpe_in")]) for r in rows[1:]]
    assert len(mpjpe_in) == 3 and all(5.0 < e < 200.0 for e in mpjpe_in)
    recorded = read_checkpoint_info(result.export_path).metadata["train_config"]["detector_noise"]
    assert recorded["swap_prob_per_hand"] == 0.5 and recorded["enabled"] is True


def test_the_measurement_reads_back_each_term(hand):
    """core.detect.detector_errors, which chose the magnitudes, recovers each term from a
    hand perturbed by that term alone."""
    from core.detect.detector_errors import hand_errors

    scaled = hand_errors("right", dn.scale_about_wrist_along_ray(hand, 1.1), hand, CAMERA)
    assert scaled.scale_ratio == pytest.approx(1.1, rel=1e-9)
    assert scaled.depth_offset_mm == pytest.approx(100.0 * hand[0, 2], rel=1e-9)
    assert abs(scaled.depth_offset_unexplained_mm) < 1e-6 and scaled.rotation_deg < 1e-5
    slid = hand_errors("right", dn.slide_along_rays(hand, 0.05), hand, CAMERA)
    assert slid.depth_offset_mm == pytest.approx(50.0, abs=1e-9)
    turned = dn.rotate_about_wrist(hand, dn.rotation_about_ray(hand[0], np.deg2rad(12.0), np.zeros(2)))
    rot = hand_errors("right", turned, hand, CAMERA)
    assert rot.rotation_in_plane_deg == pytest.approx(12.0, abs=1e-6) and rot.rotation_out_of_plane_deg < 1e-6
    swapped = hand_errors("right", dn.swap_fingers(hand, 2, 3), hand, CAMERA)
    assert swapped.swapped_pairs == [(2, 3)] and swapped.failed_fingers == []
    off = hand.copy()
    off[list(dn.FINGER_CHAINS[4][1:])] += np.array([0.06, 0.0, 0.0])  # pinky drawn 6 cm away
    assert hand_errors("right", off, hand, CAMERA).failed_fingers == [4]
    clean = hand_errors("right", hand, hand, CAMERA)
    assert clean.swapped_pairs == [] and clean.failed_fingers == [] and clean.mpjpe_wrist_aligned_mm < 1e-9
