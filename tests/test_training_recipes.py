"""Losses, datasets and recipe details of the training code (real numbers, small inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.hand.joints import convert_joints
from core.synth.samples import SynthConfig, generate_sample
from core.training import losses
from core.training.datasets import ItemSpec, contact_subsample, engine_crop, sample_item
from core.training.netconfigs import init_occ_config, ref_occ_config
from core.training.recipes.base import hand_inputs_from_joints
from core.training.recipes.init import init_decoders_from_halo
from core.training.recipes.ref import IDENTITY_OFFSET, identity_init_ref_decoder


@pytest.fixture(scope="module")
def sample():
    return generate_sample(7, SynthConfig(n_uniform=256, n_surface=256, keep_meshes=True))


def test_occupancy_mse_and_penetration_sum():
    pred = {"left": torch.tensor([[1.0, 0.0]]), "right": torch.tensor([[0.5, 0.5]])}
    gt = {"left": torch.tensor([[1.0, 1.0]]), "right": torch.tensor([[0.0, 1.0]])}
    assert float(losses.occupancy_mse(pred, gt)) == pytest.approx(0.5 + 0.25)
    # P = sum oL(xL) oR(xL) + oR(xR) oL(xR): a sum over batch and points, not a mean
    p = losses.penetration_sum(
        torch.tensor([[1.0, 0.5]]),
        torch.tensor([[0.5, 1.0]]),
        torch.tensor([[0.2, 0.0]]),
        torch.tensor([[1.0, 1.0]]),
    )
    assert float(p) == pytest.approx(0.5 + 0.5 + 0.2)
    out = {"left": pred["left"], "right": pred["right"], "right_at_left": torch.ones(1, 2),
           "left_at_right": torch.zeros(1, 2)}  # fmt: skip
    loss, parts = losses.ref_occ_loss(out, gt, pen_weight=0.001)
    assert parts["pen"] == pytest.approx(1.0)
    assert float(loss) == pytest.approx(0.75 + 0.001)


def test_keypoint_loss_ignores_each_hands_position():
    rng = np.random.default_rng(0)
    gt = {s: torch.as_tensor(rng.normal(0, 50, (2, 21, 3))) for s in ("left", "right")}
    shifted = {s: gt[s] + torch.tensor([10.0, -20.0, 5.0]) for s in gt}
    assert float(losses.keypoint_mse_mm(shifted, gt)) == pytest.approx(0.0, abs=1e-12)
    moved = {s: gt[s].clone() for s in gt}
    moved["left"][:, 8] += torch.tensor([3.0, 0.0, 4.0])  # one joint 5 mm off
    assert float(losses.keypoint_mse_mm(moved, gt)) == pytest.approx(25.0 / (21 * 3))
    assert float(losses.mpjpe_mm(moved["left"], gt["left"])) == pytest.approx(5.0 / 21)


def test_items_are_a_function_of_index_and_draw(sample):
    spec = ItemSpec(points_per_hand=100, num_anchors=512, seed=3)
    a = sample_item(sample, spec, np.random.default_rng([3, 0, 1]))
    b = sample_item(sample, spec, np.random.default_rng([3, 0, 1]))
    c = sample_item(sample, spec, np.random.default_rng([3, 0, 2]))
    for k in a:
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["points_left"], c["points_left"])
    assert a["anchors_left_mm"].shape == (512, 3)
    # anchors: mm from the wrist, on the hand (within a hand's reach of the wrist)
    assert 20 < a["anchors_left_mm"].norm(dim=-1).mean() < 200


def test_engine_crop_frames_the_keypoints(sample):
    crop, K = engine_crop(sample.image, sample.camera, sample.keypoints)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    joints = np.concatenate([sample.keypoints.left, sample.keypoints.right])
    uv = joints @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    extent = (uv.max(0) - uv.min(0)).max()
    assert 0.75 * 256 < extent <= 0.81 * 256  # hands fill 80 % of the crop, as the engine does
    assert uv.min() > 0 and uv.max() < 256


def test_contact_subsample_takes_the_contact_set():
    rng = np.random.default_rng(0)
    points = np.arange(300, dtype=np.float32)[:, None].repeat(3, 1)
    occ = np.zeros(300, bool)
    raw = np.zeros(300, bool)
    raw[:10] = True  # 10 contact points: raw inside, resolved outside
    p, o = contact_subsample(points, occ, raw, 40, 0.25, rng)
    assert len(p) == 40 and (p[:10, 0] < 10).all()
    p, _ = contact_subsample(points, occ, raw, 40, 0.0, rng)
    assert len(p) == 40


def test_i_starts_exactly_as_the_halo_baseline(sample):
    from core.models.halo_base import HaloBaseNet
    from core.models.init_occ import InitOccNet
    from core.training.recipes.base import halo_inputs_from_joints

    torch.manual_seed(0)
    halo = HaloBaseNet().eval()
    net = InitOccNet(init_occ_config("resnet18")).eval()
    with torch.no_grad():
        assert init_decoders_from_halo(net, halo.state_dict()) > 0
    joints = {
        s: torch.as_tensor(sample.keypoints.hand(s), dtype=torch.float32)[None] for s in ("left", "right")
    }
    hands = hand_inputs_from_joints(joints["left"], joints["right"], "cpu")
    p = torch.as_tensor(sample.occupancy["right"].points_canon_norm[:200])[None]
    img = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        occ_i = net(img, {"right": hands["right"]}, {"right": p})["right"]
        mats, lengths = halo_inputs_from_joints(joints["right"], "right", "cpu")
        occ_h = halo(p, mats, lengths)
    assert torch.allclose(occ_i, occ_h, atol=1e-5)


def test_identity_init_makes_r_follow_i():
    from core.models.ref_occ import RefOccNet

    torch.manual_seed(0)
    net = RefOccNet(ref_occ_config("resnet18")).eval()
    with torch.no_grad():
        identity_init_ref_decoder(net)
    enc = net.trans_dec
    occ = torch.tensor([0.0, 0.3, 0.5, 0.9, 1.0])
    q = torch.cat([torch.randn(5, 3 + 32), occ[:, None].expand(5, 32)], dim=1)[None]
    from core.models.airnet import AnchorEncoding

    encoding = AnchorEncoding(torch.randn(1, 256), torch.randn(1, 128, 3), torch.randn(1, 128, 256))
    with torch.no_grad():
        logits = enc(q, encoding)[0, :, 0]
    expected = 12.0 * (occ - IDENTITY_OFFSET)
    assert torch.allclose(logits, expected, atol=1e-4)
    assert torch.sigmoid(logits[2]) == pytest.approx(0.45, abs=1e-4)  # R's 0.45 level = I's 0.5 level


def test_hand_inputs_match_the_engine(sample):
    from core.engine.hands import hand_frames

    frames = hand_frames(sample.keypoints)
    joints = {s: torch.as_tensor(sample.keypoints.hand(s))[None] for s in ("left", "right")}
    batch = hand_inputs_from_joints(joints["left"], joints["right"], "cpu")
    for s in ("left", "right"):
        ref = frames[s].network_inputs(torch.device("cpu"))
        for name in ("unpose_mats", "bone_lengths", "root_rot_mat", "root_xyz", "cam_R", "cam_T"):
            assert torch.allclose(getattr(batch[s], name).double(), getattr(ref, name).double(), atol=1e-5), (
                name
            )


def test_kpts_frame_is_halo_order_mm():
    from core.training.recipes.base import kpts_frame_mm

    j = torch.as_tensor(np.random.default_rng(1).normal(0, 0.05, (1, 21, 3)))
    out = kpts_frame_mm({"left": j}, j[:, 9:10])["left"]
    assert torch.allclose(out, convert_joints((j - j[:, 9:10]) * 1000.0, "mano", "halo"))
    assert torch.allclose(out[0, 4], torch.zeros(3, dtype=out.dtype))  # halo joint 4 = middle MCP


def test_init_keep_from_keeps_the_shared_encoder_and_takes_halo_decoders(tmp_path):
    """init_keep_from: every non-decoder weight of an earlier I (here inside an R), decoders from
    HALO, and training leaves the encoder (BatchNorm statistics included) bit-identical."""
    from core.checkpoints import save_checkpoint
    from core.models.halo_base import HaloBaseNet
    from core.models.ref_occ import RefOccNet
    from core.training.recipes import make_recipe
    from core.training.recipes.config import TrainConfig

    torch.manual_seed(0)
    halo = HaloBaseNet()
    earlier = RefOccNet(ref_occ_config("resnet18"))
    save_checkpoint(tmp_path / "halo.safetensors", halo, "halo_base")
    save_checkpoint(tmp_path / "ref.safetensors", earlier, "ref_occ", config=earlier.cfg)
    cfg = TrainConfig.of("init", data={"kind": "synth", "first_seed": 0, "count": 2},
                          init_from="halo.safetensors", init_keep_from="ref.safetensors",
                          freeze_encoder=True, batch_size=1, points_per_hand=64)  # fmt: skip
    recipe = make_recipe(cfg, tmp_path)
    net = recipe.build()
    state, before, halo_state = net.state_dict(), earlier.init_occ.state_dict(), halo.state_dict()
    decoders = ("left_decoder.", "right_decoder.")
    for key, value in state.items():
        if key.startswith(decoders):
            src = halo_state["decoder." + key.split("_decoder.", 1)[1]]
            if src.shape == value.shape:
                assert torch.equal(value, src), key
        else:
            assert torch.equal(value, before[key]), key
    # One training forward in train mode: the encoder's BatchNorm statistics do not move.
    from core.training.datasets import dataset_from_spec

    item = dataset_from_spec(cfg.data, recipe.item_spec())[(0, 0)]
    batch = torch.utils.data.default_collate([item])
    encoder_before = {k: v.clone() for k, v in net.image_encoder.state_dict().items()}
    net.train()
    loss, _ = recipe.loss(net, batch, "cpu")
    assert torch.isfinite(loss)
    for key, value in net.image_encoder.state_dict().items():
        assert torch.equal(value, encoder_before[key]), key


def test_every_shipped_training_config_parses():
    """The configs/*.json files are the recipes of the shipped weights: each network section
    must still be a valid TrainConfig (a renamed or removed option would fail here)."""
    import json
    from pathlib import Path

    from core.training.recipes import RECIPE_MODULES
    from core.training.recipes.config import TrainConfig

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))
    assert {f.name for f in files} >= {"shipped.json", "shipped_kpts_finetune.json", "gpu.json", "tiny.json"}
    parsed = 0
    for path in files:
        sections = json.loads(path.read_text())
        for network in set(sections) & set(RECIPE_MODULES):
            cfg = TrainConfig.from_sections(sections, network)
            assert cfg.network == network
            parsed += 1
    assert parsed >= 10
    shipped_k = TrainConfig.from_sections(json.loads((files[0].parent / "shipped.json").read_text()), "kpts")
    assert shipped_k.options.kpts_graph == "undirected" and shipped_k.options.identity_init


def test_an_option_of_another_network_is_an_error():
    from core.errors import TrainConfigError
    from core.training.recipes.config import TrainConfig

    with pytest.raises(TrainConfigError, match=r"kpts_loss \(an option of kpts, not of ref\)"):
        TrainConfig.of("ref", data={}, kpts_loss="mpjpe")
    with pytest.raises(TrainConfigError, match=r"identity_init \(an option of kpts and ref, not of init\)"):
        TrainConfig.of("init", data={}, identity_init=True)
    with pytest.raises(TrainConfigError, match="no_such_key"):
        TrainConfig.of("halo", data={}, no_such_key=1)
    cfg = TrainConfig.of("ref", data={}, pen_weight=0.5, lr=0.01)
    assert cfg.options.pen_weight == 0.5 and cfg.lr == 0.01
    assert cfg.flat()["pen_weight"] == 0.5 and "kpts_loss" not in cfg.flat()
