"""Engine behaviour through its public API: modes, progressive results, cancelling, the
feature cache, bad inputs. HALO-only tests use the official HALO checkpoint (skipped when
absent); the image path uses small randomly initialised networks (behaviour, not accuracy)."""

import time

import numpy as np
import pytest
import torch

from core.engine import Engine, ReconstructionSettings, SettingsError
from core.errors import ImageError, InputError, KeypointError
from core.models.config import EncoderConfig, InitOccConfig
from core.models.ref_occ import RefOccConfig, RefOccNet
from core.types import Camera, HandMesh, TwoHandKeypoints
from tests import golden

FAST = ReconstructionSettings(resolution=64, preview_resolution=32, anchor_resolution=32, device="cpu")


def _two_hands():
    """Two real hands (HALO's demo poses), 5 cm apart, 50 cm in front of the camera."""
    seq = np.load(golden.realdata_dir() / "keypoints_3d" / "halo_kps_seq_170x21x3_m.npy").astype(np.float64)
    right = seq[40] + [0.03, 0.0, 0.5]
    left = seq[90] * [-1.0, 1.0, 1.0] + [-0.03, 0.0, 0.5]  # mirrored: a left hand
    return TwoHandKeypoints(left=left, right=right)


@pytest.fixture(scope="module")
def keypoints():
    path = golden.realdata_dir() / "keypoints_3d" / "halo_kps_seq_170x21x3_m.npy"
    if not path.is_file():
        pytest.skip("realdata keypoints not present")
    return _two_hands()


@pytest.fixture(scope="module")
def camera():
    return Camera.default_for_image(320, 240)


@pytest.fixture(scope="module")
def halo_engine():
    path = golden.halo_checkpoint_path()
    if not path.is_file():
        pytest.skip(f"official HALO checkpoint not present: {path}")
    return Engine(path, device="cpu")


@pytest.fixture(scope="module")
def image_engine():
    torch.manual_seed(0)
    cfg = RefOccConfig(init_occ=InitOccConfig.small("resnet18"), encoder=EncoderConfig(backbone="resnet18"))
    return Engine.from_networks(ref=RefOccNet(cfg).eval(), device="cpu")


def _image(camera, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (camera.height, camera.width, 3), dtype=np.uint8)


def test_halo_only_mode_reconstructs_both_hands_in_the_camera_frame(halo_engine, keypoints, camera):
    assert halo_engine.mode == "halo_only"
    rec = halo_engine.reconstruct(None, camera, keypoints, FAST)
    assert rec.stage == "final" and rec.resolution == 64
    for side in ("left", "right"):
        mesh = getattr(rec, side)
        joints = keypoints.hand(side)
        assert len(mesh.faces) > 500 and mesh.inside_other.shape == (len(mesh.vertices),)
        # The mesh wraps its own hand: every joint is within 2 cm of the surface.
        from scipy.spatial import cKDTree

        assert cKDTree(mesh.vertices).query(joints)[0].max() < 0.02
        # Outward faces: positive enclosed volume of roughly a hand (100 - 800 cm^3).
        from core.engine.penetration import mesh_volume

        assert 1e-4 < mesh_volume(mesh.vertices, mesh.faces) < 8e-4
    assert {"validate", "init_occupancy", "meshes", "penetration", "total"} <= set(rec.timings_s)


def test_progressive_yields_preview_then_final_and_reuses_values(halo_engine, keypoints, camera):
    stages = list(halo_engine.reconstruct_progressive(None, camera, keypoints, FAST))
    assert [r.stage for r in stages] == ["preview", "final"]
    assert [r.resolution for r in stages] == [32, 64]
    assert stages[1].diagnostics["evaluations"]["reused"] > 0  # preview values fed the final grid
    assert len(stages[1].right.vertices) > len(stages[0].right.vertices)


def test_progressive_stops_when_cancelled(halo_engine, keypoints, camera):
    halo_engine.clear_cache()  # else the per-hand cache serves every value without a round to cancel
    calls = {"n": 0}

    def cancel_after_preview():
        calls["n"] += 1
        return calls["n"] > 2

    stages = list(halo_engine.reconstruct_progressive(None, camera, keypoints, FAST, cancel_after_preview))
    assert [r.stage for r in stages] == ["preview"]
    assert list(halo_engine.reconstruct_progressive(None, camera, keypoints, FAST, lambda: True)) == []


def test_interpenetrating_hands_are_measured(halo_engine, keypoints, camera):
    apart = halo_engine.reconstruct(None, camera, keypoints, FAST)
    pushed = keypoints.copy()
    pushed.left = pushed.left + [0.05, 0.0, 0.0]  # slide the left hand into the right one
    overlap = halo_engine.reconstruct(None, camera, pushed, FAST)
    assert overlap.penetration_volume_cm3 > apart.penetration_volume_cm3 + 5.0
    assert overlap.left.inside_other.sum() > 0 and overlap.right.inside_other.sum() > 0
    assert overlap.penetration_mesh is not None and len(overlap.penetration_mesh.faces) > 0


def test_one_hand_missing_reconstructs_the_other(halo_engine, image_engine, keypoints, camera):
    only_right = TwoHandKeypoints(left=None, right=keypoints.right)
    rec = halo_engine.reconstruct(None, camera, only_right, FAST)
    assert rec.left is None and len(rec.right.faces) > 500 and rec.penetration_volume_cm3 == 0.0
    rec = image_engine.reconstruct(_image(camera), camera, only_right, FAST)
    assert rec.left is None and rec.right is not None
    assert any("one hand only" in n for n in rec.diagnostics["notes"])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda k: setattr(k, "right", k.right * np.nan), "NaN"),
        (
            lambda k: setattr(k, "left", np.where(np.eye(21, 3, dtype=bool), np.inf, k.left)),
            "NaN or infinite",
        ),
        (lambda k: setattr(k, "right", np.tile(k.right[:1], (21, 1))), "collapsed"),
        (lambda k: setattr(k, "right", k.right - [0, 0, 1.0]), "in front of the camera"),
        (lambda k: (setattr(k, "left", None), setattr(k, "right", None)), "no hand"),
    ],
)
def test_bad_keypoints_raise_clear_errors(halo_engine, keypoints, camera, mutate, message):
    bad = keypoints.copy()
    mutate(bad)
    with pytest.raises(KeypointError, match=message):
        halo_engine.reconstruct(None, camera, bad, FAST)


@pytest.mark.parametrize(
    "make_image, message",
    [
        (
            lambda c: np.zeros((c.height + 10, c.width, 3), np.uint8),
            "is 320x250 pixels but the camera is for 320x240",
        ),
        (lambda c: np.zeros((c.height, c.width, 4), np.uint8), "3 colour channels"),
        (lambda c: np.zeros((c.height, c.width), np.uint8), "3 colour channels"),
        (lambda c: np.zeros((c.height, c.width, 3), np.float32), "uint8"),
        (lambda c: None, "needs the image"),
    ],
)
def test_bad_images_raise_clear_errors(image_engine, keypoints, camera, make_image, message):
    with pytest.raises(ImageError, match=message):
        image_engine.reconstruct(make_image(camera), camera, keypoints, FAST)


def test_bad_settings_and_weights_raise_input_errors(tmp_path):
    with pytest.raises(SettingsError, match="power of two"):
        ReconstructionSettings(resolution=100)
    with pytest.raises(SettingsError, match="device"):
        ReconstructionSettings(device="tpu")
    with pytest.raises(InputError, match="not found"):
        Engine(tmp_path / "missing.pt", device="cpu")
    assert issubclass(SettingsError, ValueError)


def test_image_features_are_cached_when_only_keypoints_change(image_engine, keypoints, camera):
    image = _image(camera, seed=1)
    image_engine.clear_cache()
    settings = FAST.with_(resolution=32)
    first = image_engine.reconstruct(image, camera, keypoints, settings)
    moved = keypoints.copy()
    moved.right[8] += [0.004, 0.0, 0.0]  # drag the right index fingertip 4 mm
    t = time.perf_counter()
    second = image_engine.reconstruct(image, camera, moved, settings)
    second_s = time.perf_counter() - t
    assert not first.diagnostics["cache_hit"] and second.diagnostics["cache_hit"]
    assert second.timings_s["image_features"] < 0.2 * first.timings_s["image_features"]
    print(
        f"image features: cold {first.timings_s['image_features']:.3f} s, cached "
        f"{second.timings_s['image_features'] * 1000:.2f} ms; whole second call {second_s:.2f} s"
    )
    # A different image is not served from the cache.
    third = image_engine.reconstruct(_image(camera, seed=2), camera, moved, settings)
    assert not third.diagnostics["cache_hit"]
    assert second.right is not None and second.left is not None and first.stage == "final"


def test_refine_keypoints_alone_runs_k_on_the_engine_crop_and_fills_the_cache(keypoints, camera):
    from core.models.kpts_ref import KeypointRefiner, KptsRefConfig
    from core.training.recipes.kpts import identity_init_kpts_ref

    torch.manual_seed(0)
    cfg = RefOccConfig(init_occ=InitOccConfig.small("resnet18"), encoder=EncoderConfig(backbone="resnet18"))
    kpts = KeypointRefiner(KptsRefConfig(encoder=EncoderConfig(backbone="resnet18"), image_feature_dim=32))
    with torch.no_grad():
        identity_init_kpts_ref(kpts)  # K = identity: random K would collapse the hands
        kpts.left_reg[3].bias += torch.tensor([1.0, 0.0, 0.0])  # ... then moves the left hand 1 mm in x
    engine = Engine.from_networks(ref=RefOccNet(cfg).eval(), kpts=kpts.eval(), device="cpu")
    image = _image(camera, seed=3)
    refined = engine.refine_keypoints(image, camera, keypoints)
    assert engine.cache_misses == 1 and engine.cache_hits == 0
    np.testing.assert_allclose(refined.left - keypoints.left, np.tile([0.001, 0.0, 0.0], (21, 1)), atol=1e-5)
    np.testing.assert_allclose(refined.right, keypoints.right, atol=1e-5)
    # The same K through reconstruct gives the same keypoints, from the cached features.
    rec = engine.reconstruct(image, camera, keypoints, FAST.with_(resolution=32, use_keypoint_refiner=True))
    assert rec.diagnostics["cache_hit"]
    np.testing.assert_allclose(rec.keypoints.left, refined.left, atol=1e-9)
    # One hand: K needs both, the keypoints come back unchanged (a copy).
    one = TwoHandKeypoints(left=None, right=keypoints.right.copy())
    same = engine.refine_keypoints(image, camera, one)
    assert same.left is None and np.array_equal(same.right, one.right) and same.right is not one.right
    with pytest.raises(ImageError):
        engine.refine_keypoints(image[:10], camera, keypoints)


def test_refine_keypoints_without_k_is_a_clear_error(image_engine, keypoints, camera):
    with pytest.raises(InputError, match="no network K"):
        image_engine.refine_keypoints(_image(camera), camera, keypoints)


def test_unusable_k_output_falls_back_to_the_input_keypoints(keypoints, camera):
    from core.models.kpts_ref import KeypointRefiner, KptsRefConfig

    torch.manual_seed(0)  # a random K collapses each hand to a few millimetres
    cfg = RefOccConfig(init_occ=InitOccConfig.small("resnet18"), encoder=EncoderConfig(backbone="resnet18"))
    kpts = KeypointRefiner(KptsRefConfig(encoder=EncoderConfig(backbone="resnet18"), image_feature_dim=32))
    engine = Engine.from_networks(ref=RefOccNet(cfg).eval(), kpts=kpts.eval(), device="cpu")
    rec = engine.reconstruct(
        _image(camera), camera, keypoints, FAST.with_(resolution=32, use_keypoint_refiner=True)
    )
    assert np.array_equal(rec.keypoints.left, keypoints.left)
    assert any("network K's output was unusable" in n and "collapsed" in n for n in rec.diagnostics["notes"])


def _without_hand_cache(engine):
    from core.engine.engine import _HandState
    from core.engine.mise import LatticeValues

    engine._hand_state = lambda key, frame, settings, res: _HandState(LatticeValues(res))
    return engine


@pytest.mark.parametrize("mode", ["halo_only", "im2hands"])
def test_dragging_one_hand_recomputes_nothing_for_the_other(mode, keypoints, camera):
    """A drag moves one joint of the right hand: the left hand's I values, anchors and anchor
    encoding come from the per-hand cache, and the meshes equal those of an engine without it."""
    from core.training.recipes.ref import identity_init_ref_decoder

    def make():
        if mode == "halo_only":
            path = golden.halo_checkpoint_path()
            if not path.is_file():
                pytest.skip(f"official HALO checkpoint not present: {path}")
            return Engine(path, device="cpu")
        torch.manual_seed(0)
        cfg = RefOccConfig(
            init_occ=InitOccConfig.small("resnet18"),
            encoder=EncoderConfig(backbone="resnet18"),
            fps_skip_near_origin=False,
        )
        net = RefOccNet(cfg)
        with torch.no_grad():
            identity_init_ref_decoder(net)  # R passes I's random blob through: a non-empty surface
        return Engine.from_networks(ref=net.eval(), device="cpu")

    image = _image(camera, seed=4)
    moved = keypoints.copy()
    moved.right[8] += [0.004, 0.0, 0.0]
    # I's random blob is big; R's network path (anchors) is under test, not its closed form
    settings = FAST if mode == "halo_only" else FAST.with_(resolution=32, closed_form_ref=False)
    runs, encoded = {}, {}
    for cached in (True, False):
        engine = make() if cached else _without_hand_cache(make())
        engine.reconstruct(image, camera, keypoints, settings)
        calls = []
        if mode == "im2hands":  # count the anchor encoder's runs during the drag
            encoder = engine.backend.ref.trans_enc
            encoder.register_forward_hook(lambda module, args, out, calls=calls: calls.append(1))
        runs[cached] = engine.reconstruct(image, camera, moved, settings)
        encoded[cached] = len(calls)
        if cached:
            assert engine.hand_cache_hits == 1  # the left hand, on the second call
    with_cache, without = runs[True], runs[False]
    ev, ev0 = with_cache.diagnostics["evaluations"], without.diagnostics["evaluations"]
    assert ev["init_occ"] < 0.7 * ev0["init_occ"]  # only the moved right hand's I points are new
    if mode == "halo_only":  # the left grid found its values in the cached store
        assert ev["reused"] > ev0["reused"]
    else:  # only the moved hand's anchors were encoded again
        assert encoded == {True: 1, False: 2}
    for side in ("left", "right"):
        a, b = getattr(with_cache, side), getattr(without, side)
        assert len(a.vertices) > 100 and a.vertices.shape == b.vertices.shape
        np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)


def test_engine_leaves_the_callers_network_config_alone():
    """The engine queries I with a wrist depth reference per call instead of rewriting the
    network's config (official checkpoints keep their Q2 setting for other users)."""
    cfg = RefOccConfig(init_occ=InitOccConfig.small("resnet18", depth_reference="first_query"))
    net = RefOccNet(cfg).eval()
    Engine.from_networks(ref=net, device="cpu")
    assert net.init_occ.cfg.depth_reference == "first_query"


def test_refinement_inputs_are_what_r_reads(image_engine, keypoints, camera):
    image = _image(camera, seed=3)
    inputs = image_engine.refinement_inputs(image, camera, keypoints, FAST)
    assert set(inputs.frames) == {"left", "right"}
    for side in ("left", "right"):
        anchors = inputs.anchors_cam_m[side]
        assert anchors.shape == (FAST.num_anchors, 3) and np.isfinite(anchors).all()
        # on I's surface near that hand: within the hand's reach of its wrist (metres)
        wrist = getattr(keypoints, side)[0]
        assert np.linalg.norm(anchors - wrist, axis=1).max() < 0.35
    assert inputs.anchor_context is not None
    assert set(inputs.anchor_context.z_ctx) == {"left", "right"}
    one = TwoHandKeypoints(left=None, right=keypoints.right)
    assert image_engine.refinement_inputs(image, camera, one, FAST).anchor_context is None


def test_resolve_contact_removes_the_overlap_and_keeps_the_rest(halo_engine, keypoints, camera):
    """Hands pushed 4 cm into each other: with ``resolve_contact`` the interpenetration volume
    drops to a sliver of the lattice step and mesh parts away from the contact stay exactly."""
    from scipy.spatial import cKDTree

    from core.engine.penetration import mesh_volume

    shift = np.array([0.02, 0.0, 0.0])
    pushed = TwoHandKeypoints(left=keypoints.left + shift, right=keypoints.right - shift)
    raw = halo_engine.reconstruct(None, camera, pushed, FAST)
    resolved = halo_engine.reconstruct(None, camera, pushed, FAST.with_(resolve_contact=True))
    assert raw.penetration_volume_cm3 > 5.0
    assert resolved.penetration_volume_cm3 < 0.1 * raw.penetration_volume_cm3
    assert "contact" in resolved.timings_s and "contact" not in raw.timings_s
    for side in ("left", "right"):
        before, after = getattr(raw, side), getattr(resolved, side)
        other = getattr(resolved, "right" if side == "left" else "left")
        vol_before = mesh_volume(before.vertices, before.faces)
        vol_after = mesh_volume(after.vertices, after.faces)
        assert 0.5 * vol_before < vol_after < vol_before  # the hand gave up part of the overlap
        far = cKDTree(other.vertices).query(after.vertices)[0] > 0.015
        assert far.sum() > 200
        assert cKDTree(before.vertices).query(after.vertices[far])[0].max() < 1e-7


def test_short_anchor_draws_are_filled_without_trimesh_warnings(caplog):
    """The even sampler returns fewer points than asked on small or split meshes; the
    anchors are then filled by repetition (as the reference does), without trimesh's
    "only got N/M samples!" warning on every call."""
    import logging

    from core.engine.engine import sample_anchors

    # one triangle stacked four times: the sampler's area, hence its spacing, is 4x too large
    tri = HandMesh(np.array([[0, 0, 0.5], [0.01, 0, 0.5], [0, 0.01, 0.5]], float), np.array([[0, 1, 2]] * 4))
    with caplog.at_level(logging.WARNING):
        anchors = sample_anchors(tri, 512, seed=0)
    assert anchors.shape == (512, 3)
    assert len(np.unique(anchors, axis=0)) < 512  # short draw, repeated
    assert not [r for r in caplog.records if "only got" in r.getMessage()]
    assert logging.getLogger("trimesh.sample").level == logging.NOTSET  # left as it was
