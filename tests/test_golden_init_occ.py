"""Golden test of network I (``init_occ.npz``) with the official weights, compat settings
(``depth_reference="first_query"``, quirk Q2)."""

from __future__ import annotations

import pytest
import torch

from core.hand.joints import HAND_SIDES
from core.models.config import InitOccConfig
from core.models.init_occ import InitOccNet
from tests import golden

FILE = "init_occ.npz"


@pytest.fixture(scope="module")
def run():
    batch = golden.load("two_hand_batch.npz")
    net = InitOccNet(InitOccConfig.official()).eval()
    net.load_state_dict(golden.official_state_dict("init_occ"), strict=True)
    hands = golden.two_hand_batch_hands()
    with torch.no_grad():
        features = net.encode_image(torch.from_numpy(batch["img"]).contiguous())
        results = {
            s: net.query(features, s, hands[s], torch.from_numpy(batch[f"{s}_p"]), details=True)
            for s in HAND_SIDES
        }
    return net, features, hands, results


def test_golden_init_occ_image_feature(run):
    _, features, _, _ = run
    golden.assert_matches(features.feature_map, FILE, "img_feat")


@pytest.mark.parametrize("side", HAND_SIDES)
def test_golden_init_occ_outputs(run, side):
    _, _, _, results = run
    r = results[side]
    golden.assert_matches(r.query_cam, FILE, f"{side}_query_cam_rootz")
    golden.assert_matches(r.image_feature, FILE, f"{side}_img_ex_out")
    golden.assert_matches(r.part_probs, FILE, f"{side}_part_probs")
    golden.assert_matches(r.occupancy, FILE, f"{side}_occ")


@pytest.mark.parametrize("side", HAND_SIDES)
def test_golden_init_occ_rolled_queries_chunked(run, side):
    """Q2: rolling the queries changes the depth reference; chunking must not change it."""
    net, features, hands, results = run
    p = torch.roll(torch.from_numpy(golden.load("two_hand_batch.npz")[f"{side}_p"]), 1, dims=1)
    with torch.no_grad():
        occ = net.query(features, side, hands[side], p, chunk_size=300)
    golden.assert_matches(occ, FILE, f"{side}_occ_rolled_queries")
    # and the quirk is real: the rolled result is not the roll of the original result
    assert (occ - torch.roll(results[side].occupancy, 1, dims=1)).abs().max() > 1e-2


def test_golden_init_occ_forward_both_hands(run):
    net, _, hands, results = run
    batch = golden.load("two_hand_batch.npz")
    with torch.no_grad():
        occ = net(
            torch.from_numpy(batch["img"]).contiguous(),
            hands,
            {s: torch.from_numpy(batch[f"{s}_p"]) for s in HAND_SIDES},
            chunk_size=1000,
        )
    for s in HAND_SIDES:
        golden.assert_matches(occ[s], FILE, f"{s}_occ")
