"""Unit tests (no golden data) of config, attention, camera ops, HALO decoder and network I."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ImageError, InputError
from core.geometry import camera_ops
from core.models.attention import ImgEx, SelfAttn
from core.models.config import EncoderConfig, HaloDecoderConfig, ImgExConfig, InitOccConfig
from core.models.halo_base import HaloBaseNet
from core.models.halo_decoder import HaloPartDecoder, points_in_part_frames
from core.models.image_encoder import ResNetSimple, normalize_image
from core.models.init_occ import HandInputs, InitOccNet


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _hand(rng: np.random.Generator, B: int = 2, dtype=torch.float32) -> HandInputs:
    mats = np.tile(np.eye(4), (B, 16, 1, 1))
    for b in range(B):
        for k in range(16):
            mats[b, k, :3, :3] = _rotation(rng) * 2.5
            mats[b, k, :3, 3] = rng.normal(0, 0.3, 3)
    root = np.tile(np.eye(4), (B, 1, 1))
    root[:, :3, :3] = np.stack([_rotation(rng) for _ in range(B)])
    return HandInputs(
        unpose_mats=torch.tensor(mats, dtype=torch.float64),
        bone_lengths=torch.tensor(rng.uniform(0.02, 0.1, (B, 16)), dtype=dtype),
        root_rot_mat=torch.tensor(root, dtype=dtype),
        root_xyz=torch.tensor(rng.normal(0, 0.1, (B, 3)), dtype=dtype),
        cam_R=torch.tensor(np.stack([_rotation(rng) for _ in range(B)]), dtype=dtype),
        cam_T=torch.tensor(rng.normal(0, 0.1, (B, 3)) + [0, 0, 0.6], dtype=dtype),
    )


@pytest.fixture(scope="module")
def small_net() -> InitOccNet:
    torch.manual_seed(0)
    return InitOccNet(InitOccConfig(encoder=EncoderConfig(backbone="resnet18"))).eval()


# --- config ------------------------------------------------------------------------------


def test_config_defaults_are_official_and_bad_values_raise():
    cfg = InitOccConfig.official()
    assert cfg.encoder.backbone == "resnet50" and cfg.encoder.trunk_channels == 2048
    assert cfg.img_ex.patch_size == 16 and cfg.img_ex.num_tokens == 16
    assert cfg.decoder.part_input_size == 28 and cfg.depth_reference == "first_query"
    with pytest.raises(InputError, match="backbone"):
        EncoderConfig(backbone="vit")
    with pytest.raises(InputError, match="depth_reference"):
        InitOccConfig(depth_reference="middle")
    with pytest.raises(InputError, match="grid_size"):
        ImgExConfig(img_size=64, grid_size=5)


def test_official_parameter_counts_and_keys():
    net = InitOccNet()
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(net) == 28_043_162
    assert count(net.image_encoder) == 26_974_554
    assert count(net.img_ex_left) == 272_056
    assert count(net.left_decoder) == 257_480
    assert count(net.left_pt_embeddings) == 656
    keys = net.state_dict()
    assert tuple(keys["left_decoder.lin7_2.weight"].shape) == (64, 83)
    assert tuple(keys["img_ex_right.attn.Attn.w_qs.weight"].shape) == (18, 19)  # floor head dims (Q14)
    assert tuple(keys["image_encoder.hms_decoder.models.3.1.weight"].shape) == (128, 128, 3, 3)
    assert tuple(keys["image_encoder.dp_decoder.final_layer.weight"].shape) == (8, 128, 1, 1)
    assert "image_encoder.resnet.fc.weight" in keys and "right_pt_embeddings.3.bias" in keys
    assert count(HaloBaseNet()) == 238_024


def test_small_trunk_decoder_input_follows_trunk(small_net):
    assert small_net.image_encoder.hms_decoder.models[0][0].in_channels == 512
    img = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        enc = small_net.image_encoder(img)
    assert [tuple(f.shape[1:]) for f in enc.hms_fmaps] == [
        (128, 8, 8),
        (128, 16, 16),
        (128, 32, 32),
        (128, 64, 64),
    ]
    assert tuple(enc.hms.shape) == (1, 42, 64, 64) and tuple(enc.mask.shape) == (1, 2, 64, 64)
    assert tuple(enc.dp.shape) == (1, 6, 64, 64) and tuple(enc.img_fmaps[-1].shape) == (1, 64, 64, 64)


def test_normalize_image_accepts_hwc_uint8_and_rejects_gray():
    rgb = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    x = normalize_image(rgb)
    assert x.shape == (1, 3, 8, 8) and x.is_contiguous()
    np.testing.assert_allclose(
        x[0, :, 0, 0].numpy(), (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], 1e-6
    )
    with pytest.raises(ImageError):
        normalize_image(torch.zeros(1, 8, 8, 1))
    with pytest.raises(ImageError):
        ResNetSimple(EncoderConfig("resnet18"))(torch.zeros(1, 1, 64, 64))


# --- attention ---------------------------------------------------------------------------


def test_query_token_shortcut_equals_full_block():
    torch.manual_seed(1)
    block = SelfAttn(19, n_heads=2, hid_dim=19).eval()
    q = torch.randn(3, 50, 19)
    ctx = torch.randn(3, 16, 19)
    fast = block.forward_query_token(q, ctx)
    seq = torch.cat([q.reshape(150, 1, 19), ctx.repeat_interleave(50, dim=0)], dim=1)
    full = block(seq)[:, 0].reshape(3, 50, 19)
    torch.testing.assert_close(fast, full, atol=2e-6, rtol=0)
    # and query slots are independent of each other
    torch.testing.assert_close(block.forward_query_token(q[:, :7], ctx), fast[:, :7], atol=1e-6, rtol=0)


def test_img_ex_k_configuration_shapes():
    """Network K's variant: 256-channel map, patch 8 -> 64 tokens, 82-d grid -> 4 x 20 heads."""
    cfg = ImgExConfig(img_f_dim=256, grid_size=8, grid_f_dim=82, verts_f_dim=80, n_heads=4)
    m = ImgEx(cfg).eval()
    assert tuple(m.encoder.self_attn.w_qs.weight.shape) == (80, 82)
    out = m(torch.randn(1, 256, 64, 64), torch.randn(1, 21, 80))
    assert tuple(out.shape) == (1, 21, 80) and torch.isfinite(out).all()


# --- camera ops --------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_canonical_to_camera_matches_numpy_chain(side):
    rng = np.random.default_rng(2)
    hand = _hand(rng, B=2, dtype=torch.float64)
    p = rng.uniform(-0.55, 0.55, (2, 7, 3))
    cam = camera_ops.canonical_to_camera(
        torch.tensor(p), hand.root_rot_mat, hand.root_xyz, hand.cam_R, hand.cam_T, side
    ).numpy()
    for b in range(2):
        M = hand.root_rot_mat[b].numpy()[:3, :3]
        posed = np.linalg.inv(M) @ (p[b] * 0.4).T  # canonical metres -> posed (mirrored)
        world = posed.T + hand.root_xyz[b].numpy()
        if side == "left":
            world[:, 0] *= -1
        expected = world @ hand.cam_R[b].numpy().T + hand.cam_T[b].numpy()
        np.testing.assert_allclose(cam[b], expected, atol=1e-12)
    wrist = camera_ops.wrist_to_camera(hand.root_xyz, hand.cam_R, hand.cam_T, side)
    at_origin = camera_ops.canonical_to_camera(
        torch.zeros(2, 1, 3, dtype=torch.float64),
        hand.root_rot_mat,
        hand.root_xyz,
        hand.cam_R,
        hand.cam_T,
        side,
    )
    torch.testing.assert_close(wrist, at_origin[:, 0])


def test_projection_helpers():
    K = torch.tensor([[[500.0, 0, 128], [0, 500.0, 128], [0, 0, 1]]])
    pts = torch.tensor([[[0.0, 0.0, 0.5], [0.1, -0.05, 0.5]]])
    uv = camera_ops.project_to_pixels(pts, K)
    torch.testing.assert_close(uv, torch.tensor([[[128.0, 128.0], [228.0, 78.0]]]))
    torch.testing.assert_close(
        camera_ops.pixels_to_grid(uv, 256), torch.tensor([[[0.0, 0.0], [0.78125, -0.390625]]])
    )
    shifted = camera_ops.subtract_depth(pts, torch.tensor([0.5]))
    torch.testing.assert_close(shifted[..., 2], torch.zeros(1, 2))
    torch.testing.assert_close(shifted[..., :2], pts[..., :2])


# --- HALO decoder ------------------------------------------------------------------------


def _reference_part_logits(dec: HaloPartDecoder, x, mats, lengths, feature=None):
    """Plain per-part loop straight from the spec (one Linear call per layer and part)."""
    cfg = dec.cfg
    B, N, _ = x.shape
    xh = torch.cat([x.double(), torch.ones(B, N, 1, dtype=torch.float64)], -1)
    xb = torch.einsum("bpij,bnj->bnpi", mats.double(), xh)[..., :3].float()
    code = mats[..., :3, 3].reshape(B, 48).float()
    latent = dec.bone_encoder(lengths)
    outs = []
    for b in range(cfg.num_bones):
        gp = getattr(dec, f"global_proj{b}")(code)
        h = torch.cat(
            [xb[:, :, b], lengths[:, None, b : b + 1].expand(B, N, 1), latent[:, None].expand(B, N, 16),
             gp[:, None].expand(B, N, 8)], -1,
        )  # fmt: skip
        h = torch.nn.functional.leaky_relu(getattr(dec, f"lin{b}_0")(h), 0.1)
        for k in (1, 2, 3):
            inp = torch.cat([h, feature], -1) if (k == 2 and feature is not None) else h
            h = torch.nn.functional.leaky_relu(getattr(dec, f"lin{b}_{k}")(inp) + h, 0.1)
        outs.append(getattr(dec, f"lin{b}_4")(h))
    return torch.cat(outs, -1)


@pytest.mark.parametrize("inject", [19, 0])
def test_halo_decoder_matches_per_part_reference_and_chunking(inject):
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    dec = HaloPartDecoder(HaloDecoderConfig(add_feature_dim=inject)).eval()
    hand = _hand(rng, B=2)
    x = torch.rand(2, 301, 3) - 0.5
    f = torch.randn(2, 301, 19) if inject else None
    with torch.no_grad():
        out = dec(x, hand.unpose_mats, hand.bone_lengths, f)
        chunked = dec(x, hand.unpose_mats, hand.bone_lengths, f, chunk_points=64)
        ref = _reference_part_logits(dec, x, hand.unpose_mats, hand.bone_lengths, f)
    assert out.shape == (2, 301, 16)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(chunked, out, atol=1e-5, rtol=1e-6)
    with pytest.raises(ValueError, match="part matrices"):
        dec(x, hand.unpose_mats[:, :15], hand.bone_lengths, f)


def test_points_in_part_frames_float32_and_float64_agree():
    rng = np.random.default_rng(4)
    mats = _hand(rng, B=1).unpose_mats
    x = torch.rand(1, 20, 3)
    a = points_in_part_frames(x, mats, torch.float64)
    b = points_in_part_frames(x, mats.float(), torch.float32)
    assert a.dtype == torch.float32 and a.shape == (1, 20, 16, 3)
    torch.testing.assert_close(a, b, atol=2e-6, rtol=0)
    R, t = mats[0, 5, :3, :3], mats[0, 5, :3, 3]
    torch.testing.assert_close(a[0, :, 5].double(), x[0].double() @ R.T + t, atol=1e-6, rtol=0)


# --- network I ---------------------------------------------------------------------------


def test_init_occ_query_chunking_and_shapes(small_net):
    rng = np.random.default_rng(5)
    hand = _hand(rng, B=2)
    p = torch.rand(2, 700, 3) * 1.1 - 0.55
    with torch.no_grad():
        feats = small_net.encode_image(torch.randn(2, 3, 256, 256))
        whole = small_net.query(feats, "left", hand, p, chunk_size=None, details=True)
        chunked = small_net.query(feats, "left", hand, p, chunk_size=128)
    assert whole.occupancy.shape == (2, 700) and whole.part_probs.shape == (2, 700, 16)
    assert whole.image_feature.shape == (2, 700, 19)
    torch.testing.assert_close(chunked, whole.occupancy, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole.occupancy, whole.part_probs.max(-1).values)
    assert float(whole.query_cam[:, 0, 2].abs().max()) == 0.0  # first_query: query 0 at depth 0


def test_init_occ_wrist_depth_reference_is_order_independent():
    torch.manual_seed(6)
    rng = np.random.default_rng(6)
    net = InitOccNet(InitOccConfig.small("resnet18", depth_reference="wrist")).eval()
    hand = _hand(rng, B=1)
    p = torch.rand(1, 200, 3) - 0.5
    perm = torch.randperm(200)
    with torch.no_grad():
        feats = net.encode_image(torch.randn(1, 3, 256, 256))
        occ = net.query(feats, "right", hand, p)
        occ_perm = net.query(feats, "right", hand, p[:, perm])
        res = net.query(feats, "right", hand, p[:, :1] * 0, details=True)  # the wrist itself
    torch.testing.assert_close(occ_perm, occ[:, perm], atol=1e-6, rtol=0)
    assert float(res.query_cam[0, 0, 2].abs()) < 1e-6


def test_init_occ_bad_inputs_raise(small_net):
    rng = np.random.default_rng(7)
    hand = _hand(rng, B=1)
    with pytest.raises(ImageError, match="256"):
        small_net.encode_image(torch.randn(1, 3, 128, 128))
    with torch.no_grad():
        feats = small_net.encode_image(torch.randn(1, 3, 256, 256))
    with pytest.raises(InputError, match="query points"):
        small_net.query(feats, "left", hand, torch.rand(1, 10, 2))
    with pytest.raises(InputError, match="query points"):
        small_net.query(feats, "left", hand, torch.rand(1, 0, 3))
    bad = HandInputs(**{**hand.__dict__, "root_xyz": torch.full((1, 3), float("nan"))})
    with pytest.raises(InputError, match="NaN"):
        bad.validate()
    with pytest.raises(ValueError, match="side"):
        small_net.query(feats, "middle", hand, torch.rand(1, 10, 3))


def test_init_occ_trains():
    """Gradients reach the encoder, the attention and the decoder; one Adam step lowers the MSE."""
    torch.manual_seed(8)
    rng = np.random.default_rng(8)
    net = InitOccNet(InitOccConfig.small("resnet18"))
    net.train()
    hand = _hand(rng, B=1)
    img = torch.randn(1, 3, 256, 256)
    p = torch.rand(1, 256, 3) - 0.5
    target = (p.norm(dim=-1) < 0.3).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(2):
        occ = net(img, {"right": hand}, {"right": p})["right"]
        loss = torch.mean((occ - target) ** 2)
        opt.zero_grad()
        loss.backward()
        losses.append(float(loss.detach()))
        for name in (
            "image_final_layer.weight",
            "img_ex_right.encoder.proj.weight",
            "right_decoder.lin3_2.weight",
        ):
            assert net.get_parameter(name).grad.abs().sum() > 0, name
        opt.step()
    assert losses[-1] < losses[0]
