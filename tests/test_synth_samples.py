"""Training samples: determinism, render sanity, occupancy labels, noise, disk format, dataset,
the ``synth`` CLI, the bundled sample and the generation speed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import main
from core.geometry.canonical import canon_norm_to_posed_m, canonicalize_hand
from core.io.keypoints import load_keypoints_json
from core.synth import render as rd
from core.synth.make_bundled_sample import CONFIG as BUNDLED_CONFIG
from core.synth.make_bundled_sample import DEFAULT_OUT, write_bundled_sample
from core.synth.noise import KeypointNoise, mpjpe_middle_aligned_m, perturb_hand
from core.synth.samples import (
    BOX_HALF_NORM,
    SynthConfig,
    SynthDataset,
    generate_sample,
    load_sample,
    save_sample,
)
from core.synth.scenes import resolved_sdfs

PLAIN = SynthConfig(occluder_prob=0.0, forearm_prob=0.0, n_uniform=1024, n_surface=1024)


@pytest.fixture(scope="module")
def samples():
    return [generate_sample(seed, PLAIN) for seed in (0, 1, 2)]


def test_generate_sample_is_deterministic_by_seed(samples):
    again = generate_sample(1, PLAIN)
    ref = samples[1]
    assert np.array_equal(again.image, ref.image)
    assert np.array_equal(again.camera.K, ref.camera.K)
    for side in ("left", "right"):
        assert np.array_equal(again.keypoints.hand(side), ref.keypoints.hand(side))
        assert np.array_equal(again.noisy_keypoints.hand(side), ref.noisy_keypoints.hand(side))
        assert np.array_equal(again.occupancy[side].points_canon_norm, ref.occupancy[side].points_canon_norm)
        assert np.array_equal(again.occupancy[side].occupancy, ref.occupancy[side].occupancy)
    assert not np.array_equal(samples[0].image, samples[1].image)


def test_render_hands_fill_the_crop_and_keypoints_project_onto_hand_pixels(samples):
    for s in samples:
        assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
        hands = (s.labels == rd.LABEL_LEFT) | (s.labels == rd.LABEL_RIGHT)
        ys, xs = np.nonzero(hands)
        extent = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / 256
        assert 0.6 <= extent <= 0.9, extent  # the crop makes the hands' box 80 % of the side
        grown = cv2.dilate(hands.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        on_hand = []
        for side in ("left", "right"):
            uv = s.camera.project(s.keypoints.hand(side))
            assert np.all((uv > 0) & (uv < 256))
            px = np.clip(np.floor(uv).astype(int), 0, 255)
            on_hand += list(grown[px[:, 1], px[:, 0]])
        assert np.mean(on_hand) >= 0.95, np.mean(on_hand)
        # Hand pixels are skin-shaded, not background: they differ from the image border statistics.
        assert s.image[hands].std() > 3


def test_occupancy_samples_follow_the_reference_recipe(samples):
    # A ~400 cm^3 hand fills ~0.5 % of the (0.44 m)^3 box: pool the uniform labels of all hands.
    pooled = np.concatenate(
        [s.occupancy[h].occupancy[: s.occupancy[h].n_uniform] for s in samples for h in s.occupancy]
    )
    assert 0.001 < pooled.mean() < 0.012, pooled.mean()
    for s in samples:
        for side in ("left", "right"):
            occ = s.occupancy[side]
            n_u = occ.n_uniform
            uniform, near = occ.points_canon_norm[:n_u], occ.points_canon_norm[n_u:]
            assert np.all(np.abs(uniform) <= BOX_HALF_NORM)
            assert 0.3 < occ.occupancy[n_u:].mean() < 0.7  # near-surface points: about half inside
            assert not np.any(occ.occupancy & ~occ.occupancy_raw)  # resolution only removes
            # Near-surface points: surface samples + N(0, 0.01) noise, so they lie near the hand.
            assert np.abs(near).max() < BOX_HALF_NORM


def test_occupancy_labels_agree_with_the_solids_in_camera_frame(samples):
    s = samples[2]
    models = {}
    from core.synth.hand_model import HandModel

    for side in ("left", "right"):
        models[side] = HandModel.from_keypoints(s.keypoints.hand(side), side, s.shapes[side])
    for side in ("left", "right"):
        halo = canonicalize_hand(s.keypoints.hand(side), side)
        posed = canon_norm_to_posed_m(
            torch.as_tensor(s.occupancy[side].points_canon_norm, dtype=torch.float64),
            halo.root_rot_mat,
            halo.wrist_m,
            side,
        )
        res_l, res_r = resolved_sdfs(models["left"].sdf(posed), models["right"].sdf(posed))
        expected = (res_l if side == "left" else res_r) < 0
        assert np.array_equal(expected.numpy(), s.occupancy[side].occupancy)
        other = (res_r if side == "left" else res_l) < 0
        assert not np.any(other.numpy() & s.occupancy[side].occupancy)  # never inside both hands


def test_noisy_keypoints_have_detector_like_errors():
    rng = np.random.default_rng(0)
    s = generate_sample(3, PLAIN)
    gt = s.keypoints.right
    errors = [mpjpe_middle_aligned_m(perturb_hand(gt, rng), gt) for _ in range(200)]
    mean_mm = 1000 * float(np.mean(errors))
    assert 6 < mean_mm < 25, mean_mm
    assert 1000 * mpjpe_middle_aligned_m(perturb_hand(gt, rng, KeypointNoise(level=0.0)), gt) < 1e-6
    # Depth offsets: whole-hand shifts along the viewing ray happen (not removed by alignment).
    shifts = [np.linalg.norm((perturb_hand(gt, rng) - gt).mean(0)) for _ in range(50)]
    assert np.median(shifts) > 0.005


def test_save_and_load_roundtrip(tmp_path, samples):
    s = samples[0]
    path = save_sample(s, tmp_path)
    back = load_sample(path)
    assert np.array_equal(back.image, s.image)
    assert np.allclose(back.camera.K, s.camera.K)
    assert np.array_equal(back.keypoints.left, s.keypoints.left)
    assert np.array_equal(back.occupancy["right"].occupancy, s.occupancy["right"].occupancy)
    assert back.interaction == s.interaction
    assert np.allclose(back.shapes["left"].as_vector(), s.shapes["left"].as_vector())


def test_dataset_items_are_tensors_with_documented_shapes():
    ds = SynthDataset(first_seed=10, length=2, config=PLAIN)
    item = ds[1]
    assert len(ds) == 2
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.uint8
    assert item["camera_K"].shape == (3, 3)
    assert item["points_left"].shape == (2048, 3) and item["occ_left"].shape == (2048,)
    assert item["joints_right"].shape == (21, 3) and item["noisy_joints_right"].dtype == torch.float32
    assert int(item["seed"]) == 11
    with pytest.raises(IndexError):
        ds[2]


def test_sample_generation_speed():
    cfg = SynthConfig()
    generate_sample(100, cfg)
    start = time.process_time()
    n = 3
    for seed in range(101, 101 + n):
        generate_sample(seed, cfg)
    per_sample = (time.process_time() - start) / n
    print(
        f"\nsynthetic sample (256 px, 2 x 4096 occupancy points): {per_sample:.2f} s CPU "
        f"-> {3600 / per_sample:.0f} samples/hour per core"
    )
    assert per_sample < 3.0


def test_cli_preview_and_out(tmp_path, capsys):
    png = tmp_path / "preview.png"
    assert main.main(["synth", "--preview", str(png), "--count", "2", "--seed", "5"]) == 0
    sheet = cv2.imread(str(png))
    assert sheet.shape == (256, 1536, 3)
    assert (
        main.main(["synth", "--out", str(tmp_path / "data"), "--count", "1", "--seed", "9", "--points", "64"])
        == 0
    )
    assert (tmp_path / "data" / "00000009.png").is_file()
    assert load_sample(tmp_path / "data" / "00000009.npz").occupancy["left"].points_canon_norm.shape == (
        128,
        3,
    )
    assert main.main(["synth"]) == 2
    assert main.main(["synth", "--preview", str(png), "--interaction", "hugging"]) == 2
    assert "unknown interaction" in capsys.readouterr().err


def test_bundled_sample_is_small_valid_and_reproducible(tmp_path):
    image_path = DEFAULT_OUT / "image.png"
    assert image_path.is_file() and image_path.stat().st_size < 200_000
    kp_file = load_keypoints_json(DEFAULT_OUT / "keypoints.json")
    image = cv2.imread(str(image_path))
    assert (
        image.shape[:2] == (kp_file.camera.height, kp_file.camera.width) == (BUNDLED_CONFIG.image_size,) * 2
    )
    frame = kp_file.frames[0]
    for side in ("left", "right"):
        uv = kp_file.camera.project(frame.keypoints.hand(side))
        assert np.all((uv > 0) & (uv < kp_file.camera.width))
    regenerated = load_keypoints_json(write_bundled_sample(tmp_path))
    for side in ("left", "right"):
        assert np.allclose(regenerated.frames[0].keypoints.hand(side), frame.keypoints.hand(side), atol=1e-9)
    doc = json.loads(Path(DEFAULT_OUT / "keypoints.json").read_text())
    assert doc["format"] == "im2hands-studio/keypoints" and doc["frames"][0]["image"] == "image.png"


def test_synth_budget_stops_early_and_keeps_only_whole_samples(tmp_path, capsys):
    """``synth --budget-minutes``: a timed render run (the GPU sprint's first stage) stops when
    its time is up; each written sample is whole (png + npz, the npz loads)."""
    from main import main

    out = tmp_path / "renders"
    args = ["synth", "--out", str(out), "--count", "50", "--seed", "7", "--points", "8"]
    assert main([*args, "--budget-minutes", "0.01"]) == 0
    written = sorted(out.glob("*.npz"))
    assert 1 <= len(written) < 50
    assert "the budget ran out" in capsys.readouterr().out
    for npz in written:
        assert npz.with_suffix(".png").is_file() and load_sample(npz).seed == int(npz.stem)
    assert main([*args, "--budget-minutes", "0"]) == 2
