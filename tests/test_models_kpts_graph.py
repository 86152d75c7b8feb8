"""K's skeleton graph: the official directed parent->child matrix and our undirected option."""

from __future__ import annotations

import torch

from core.hand.joints import HALO_EDGES
from core.models.config import EncoderConfig
from core.models.gcn import hand_joint_adjacency
from core.models.kpts_ref import KeypointRefiner, KptsRefConfig
from core.models.registry import build_network

WRIST, MIDDLE_TIP = 0, 18  # halo order: middle finger 0-4-5-6-18


def test_undirected_adjacency_is_the_skeleton_both_ways():
    directed = hand_joint_adjacency()
    undirected = hand_joint_adjacency(undirected=True)
    assert torch.equal(undirected, directed + directed.T)
    assert int(undirected.sum()) == 2 * len(HALO_EDGES) == 40
    assert directed[0, 4] == 1 and directed[4, 0] == 0


def _input_gradient(cfg: KptsRefConfig, out_joint: int, in_joint: int) -> float:
    """|d out[out_joint] / d in[in_joint]| of the right hand through K (zero image features)."""
    torch.manual_seed(0)
    net = KeypointRefiner(cfg).eval()
    left = torch.randn(1, 21, 3) * 30
    right = (torch.randn(1, 21, 3) * 30).requires_grad_(True)
    feat = torch.randn(1, cfg.image_feature_dim, 64, 64)
    out = net(None, left, right, img_feat=feat)
    out.right_mm[0, out_joint].sum().backward()
    return float(right.grad[0, in_joint].abs().sum())


def test_only_the_undirected_graph_lets_a_fingertip_see_the_rest_of_the_hand():
    base = dict(encoder=EncoderConfig(backbone="resnet18"), image_feature_dim=32, dropout=0.0)
    directed = KptsRefConfig(**base)
    undirected = KptsRefConfig(**base, undirected_graph=True)
    # official matrix: a joint aggregates its descendants only, and the image attention mixes
    # joints with image tokens, never with each other -- so the tip ignores the wrist exactly
    assert _input_gradient(directed, MIDDLE_TIP, WRIST) == 0.0
    assert _input_gradient(directed, WRIST, MIDDLE_TIP) > 0.0
    assert _input_gradient(undirected, MIDDLE_TIP, WRIST) > 0.0


def test_configs_without_the_field_mean_the_official_directed_graph():
    # an earlier checkpoint's stored config: no undirected_graph
    stored = {"encoder": {"backbone": "resnet18"}, "image_feature_dim": 32}
    assert build_network("kpts_ref", stored).cfg.undirected_graph is False
    assert KptsRefConfig.official().undirected_graph is False
