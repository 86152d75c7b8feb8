"""``evaluate --shuffle-images``: the derangement, the swap seam (the engine's feature cache
follows the swapped image), figures equal for a network that ignores the image and different
for one that reads it, the JSON shape, and the error with a single sample."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.engine.backends import Im2HandsBackend
from core.engine.engine import Engine
from core.engine.image_input import crop_for_keypoints, make_network_crop
from core.errors import InputError
from core.training import evaluation
from core.training.image_shuffle import derangement, image_partner, with_partner_images

REPO = Path(__file__).resolve().parents[1]
ROWS = ("HALO", "I", "K+I")  # one row per kind: keypoints only, image, image + K
TINY = evaluation.EvalConfig(resolution=32, anchor_resolution=32, n_points=1500, rows=ROWS)


# ----------------------------------------------------------------------------------------
# The pairing
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [2, 3, 5, 20, 201])
def test_derangement_is_a_permutation_without_fixed_points(count):
    partner = derangement(count)
    assert sorted(partner) == list(range(count))
    assert all(p != i for i, p in enumerate(partner))


def test_streamed_pairs_follow_the_derangement():
    samples = [SimpleNamespace(name=i, image=np.full((2, 2, 3), i, np.uint8)) for i in range(5)]
    pairs = list(with_partner_images(iter(samples)))
    assert [s.name for s, _ in pairs] == [0, 1, 2, 3, 4]  # every sample once, in order
    assert [int(img[0, 0, 0]) for _, img in pairs] == derangement(5) == [1, 2, 3, 4, 0]


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_samples_is_a_clear_error(count):
    samples = [SimpleNamespace(image=np.zeros((2, 2, 3), np.uint8))] * count
    with pytest.raises(InputError, match="at least 2 test samples"):
        list(with_partner_images(samples))
    with pytest.raises(InputError, match="at least 2 test samples"):
        image_partner(0, count)


def test_evaluate_command_with_one_sample_says_there_is_nothing_to_shuffle(capsys):
    sys.path.insert(0, str(REPO))
    from main import main

    code = main(["evaluate", "--data", "synthetic:seed=1234,count=1", "--shuffle-images"])
    assert code == 2
    assert "no other image to shuffle with" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# Through the engine, with the shipped networks
# ----------------------------------------------------------------------------------------
class ImageBlindBackend(Im2HandsBackend):
    """The real networks fed one constant grey crop whatever the image: they ignore it."""

    def image_features(self, crop_u8, cam_K_crop, with_kpts):
        return super().image_features(np.full_like(crop_u8, 128), cam_K_crop, with_kpts)


@pytest.fixture(scope="module")
def networks():
    """The shipped networks (I without R, to be quick): their K and I read the image (their
    figures move with it even while the encoder is untrained), unlike fresh identity-initialised
    ones, and their meshes are hand-sized, so a reconstruction takes seconds."""
    from core.engine.backends import SHIPPED_WEIGHTS_DIR
    from core.models.registry import load_weights_folder

    nets = load_weights_folder(SHIPPED_WEIGHTS_DIR, "cpu")
    return SimpleNamespace(init=nets["ref_occ"].init_occ, kpts=nets["kpts_ref"], halo=nets["halo_base"])


@pytest.fixture(scope="module")
def samples():
    return list(evaluation.synthetic_samples(1234, 2))


def _evaluate(networks, samples, backend_class):
    device = torch.device("cpu")
    im2hands = Engine(device="cpu", backend=backend_class(device, init=networks.init, kpts=networks.kpts))
    halo = Engine.from_networks(halo=networks.halo, device="cpu")
    return evaluation.evaluate(iter(samples), im2hands=im2hands, halo=halo, config=TINY, shuffle_images=True)


@pytest.fixture(scope="module")
def image_reading_result(networks, samples):
    return _evaluate(networks, samples, Im2HandsBackend)


def test_a_network_that_ignores_the_image_scores_the_same_on_shuffled_images(networks, samples):
    result = _evaluate(networks, samples, ImageBlindBackend)
    assert set(result.rows_shuffled_image) == {"I", "K+I"}  # HALO reads no image: not repeated
    for name, shuffled in result.rows_shuffled_image.items():
        for key in ("iou", "cd_mm", "pen_cm3"):
            assert shuffled[key] == pytest.approx(result.rows[name][key], abs=1e-9), (name, key)
    assert result.mpjpe_mm_shuffled_image["refined"] == pytest.approx(result.mpjpe_mm["refined"], abs=1e-9)
    assert 0.0 < result.rows["I"]["iou"] < 1.0  # real figures, not an empty reconstruction


def test_a_network_that_reads_the_image_scores_differently_on_shuffled_images(image_reading_result):
    result = image_reading_result
    true_i, shuffled_i = result.rows["I"], result.rows_shuffled_image["I"]
    assert abs(true_i["iou"] - shuffled_i["iou"]) + abs(true_i["cd_mm"] - shuffled_i["cd_mm"]) > 1e-4
    assert abs(result.mpjpe_mm_shuffled_image["refined"] - result.mpjpe_mm["refined"]) > 1e-4
    # the input keypoints are the sample's own in both runs
    assert result.mpjpe_mm_shuffled_image["noisy"] == result.mpjpe_mm["noisy"]
    table = evaluation.format_tables(result)
    assert "Image ablation" in table
    ablation = table[table.index("Image ablation") :]
    assert "HALO" not in ablation and "K's MPJPE (mm): true" in ablation
    i_line = next(line for line in ablation.splitlines() if line.startswith("I "))
    diff = 100 * (shuffled_i["iou"] - true_i["iou"])
    assert f"{diff:+.2f}" in i_line


def test_json_shuffled_figures_are_shaped_like_the_true_ones(image_reading_result, tmp_path):
    out = json.loads(json.dumps(image_reading_result.to_json()))
    assert set(out["rows_shuffled_image"]) == {"I", "K+I"}
    for name, row in out["rows_shuffled_image"].items():
        assert set(row) == set(out["rows"][name])
        assert all(isinstance(v, (int, float)) for v in row.values())
    assert set(out["mpjpe_mm_shuffled_image"]) == set(out["mpjpe_mm"]) == {"noisy", "refined"}
    assert out["config"]["shuffle_images"] is True


def test_the_feature_cache_follows_the_swapped_image(networks, samples):
    """The same keypoints and camera on another image: a cache miss, and the crop encoded is
    the foreign image's pixels at this sample's crop."""
    seen = []

    class Recording(Im2HandsBackend):
        def image_features(self, crop_u8, cam_K_crop, with_kpts):
            seen.append(crop_u8.copy())
            return super().image_features(crop_u8, cam_K_crop, with_kpts)

    engine = Engine(device="cpu", backend=Recording(torch.device("cpu"), init=networks.init))
    own, other = samples
    settings = evaluation.row_plans(engine, None, TINY)["I"].settings
    engine.reconstruct(own.image, own.camera, own.keypoints, settings)
    engine.reconstruct(other.image, own.camera, own.keypoints, settings)
    assert engine.cache_misses == 2 and engine.cache_hits == 0
    frames = [own.keypoints.left, own.keypoints.right]
    transform = crop_for_keypoints(own.camera, frames)
    np.testing.assert_array_equal(seen[1], make_network_crop(other.image, own.camera, transform).crop_u8)
    assert not np.array_equal(seen[0], seen[1])


def test_k_alone_row_gives_the_k_plus_i_mpjpe_without_meshes(networks, samples, image_reading_result):
    """``--rows K``: network K alone, true and shuffled, equals what the K+I row measures."""
    device = torch.device("cpu")
    im2hands = Engine(device="cpu", backend=Im2HandsBackend(device, init=networks.init, kpts=networks.kpts))
    cfg = evaluation.EvalConfig(resolution=32, anchor_resolution=32, n_points=1500, rows=("K",))
    result = evaluation.evaluate(iter(samples), im2hands=im2hands, halo=None, config=cfg, shuffle_images=True)
    assert result.rows == {} and result.rows_shuffled_image == {}
    for key in ("refined", "noisy"):
        assert result.mpjpe_mm[key] == pytest.approx(image_reading_result.mpjpe_mm[key], abs=1e-6)
    assert result.mpjpe_mm_shuffled_image["refined"] == pytest.approx(
        image_reading_result.mpjpe_mm_shuffled_image["refined"], abs=1e-6
    )


def test_rows_option_rejects_unknown_rows():
    from core.cli.evaluate import parse_rows

    assert parse_rows("K, HALO,K") == ("K", "HALO")
    with pytest.raises(InputError, match="choose from HALO, I, I\\+R, K\\+I, K\\+I\\+R, K"):
        parse_rows("K+J")


def test_tables_without_a_k_row_print_no_k_figures(image_reading_result):
    """Rows without K (``--rows I``) leave K's MPJPE NaN: the tables say K did not run
    instead of printing "nan" figures."""
    result = dataclasses.replace(
        image_reading_result,
        mpjpe_mm={"noisy": image_reading_result.mpjpe_mm["noisy"], "refined": math.nan},
        mpjpe_mm_shuffled_image={"noisy": image_reading_result.mpjpe_mm["noisy"], "refined": math.nan},
    )
    table = evaluation.format_tables(result)
    assert "nan" not in table and "K not run" in table and "K's MPJPE" not in table
    assert "K's MPJPE (mm): true" in evaluation.format_tables(image_reading_result)


def test_k_figures_come_from_k_i_r_when_k_i_is_not_asked(samples):
    """``--rows I+R,K+I+R`` runs K too: its MPJPE is the one the K+I row gives (same
    keypoints), not a missing figure."""
    from core.engine.backends import SHIPPED_WEIGHTS_DIR
    from core.models.registry import load_weights_folder

    nets = load_weights_folder(SHIPPED_WEIGHTS_DIR, "cpu")
    device = torch.device("cpu")
    engine = Engine(device="cpu", backend=Im2HandsBackend(device, ref=nets["ref_occ"], kpts=nets["kpts_ref"]))
    got = {}
    for rows in (("K+I",), ("K+I+R",)):
        config = dataclasses.replace(TINY, rows=rows)
        got[rows[0]] = evaluation.evaluate(iter(samples), im2hands=engine, halo=None, config=config)
    k_i, k_i_r = got["K+I"].mpjpe_mm["refined"], got["K+I+R"].mpjpe_mm["refined"]
    assert not math.isnan(k_i_r) and k_i_r == pytest.approx(k_i, abs=1e-9)
