"""The re-associated inference paths of the point networks equal their direct formulas:
the folded HALO part decoder, R's fused anchor cross-attention and the encoder's all-pairs
attention (random weights; the golden tests check the official weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.geometry.sampling import gather_points, knn_indices
from core.models.airnet import AnchorCrossAttention, AnchorEncoding, PointSelfAttention, vector_attention
from core.models.config import HaloDecoderConfig
from core.models.halo_decoder import HaloPartDecoder


def _part_mats(rng: np.random.Generator, B: int) -> torch.Tensor:
    """Random rigid part matrices with the 0.4 scale of Im2Hands (B, 16, 4, 4)."""
    mats = np.tile(np.eye(4), (B, 16, 1, 1))
    for b in range(B):
        for p in range(16):
            q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
            mats[b, p, :3, :3] = q * 0.4
            mats[b, p, :3, 3] = rng.normal(scale=0.3, size=3)
    return torch.from_numpy(mats)


def _halo_inputs(seed: int, B: int = 2, N: int = 700):
    rng = np.random.default_rng(seed)
    mats = _part_mats(rng, B)
    lengths = torch.from_numpy(rng.uniform(0.02, 0.05, size=(B, 16)).astype(np.float32))
    x = torch.from_numpy(rng.uniform(-0.6, 0.6, size=(B, N, 3)).astype(np.float32))
    return mats, lengths, x


def test_folded_halo_decoder_matches_exact_order():
    torch.manual_seed(0)
    for inject in (19, 0):
        dec = HaloPartDecoder(HaloDecoderConfig(add_feature_dim=inject)).eval()
        assert dec.fold  # float64 projection: Im2Hands' decoder, folded by default
        mats, lengths, x = _halo_inputs(1)
        f = torch.randn(2, 700, inject) if inject else None
        with torch.no_grad():
            exact = dec(x, mats, lengths, f, fold=False)
            folded = dec(x, mats, lengths, f)
            folded_small_chunks = dec(x, mats, lengths, f, chunk_points=96)
        assert exact.abs().max() > 0.3  # logits of a useful size, not all near zero
        torch.testing.assert_close(folded, exact, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(folded_small_chunks, folded, atol=1e-5, rtol=1e-6)
        # with autograd on, the same values and gradients flow through the folded weights
        x_grad = x.clone().requires_grad_(True)
        out = dec(x_grad, mats, lengths, f)
        torch.testing.assert_close(out.detach(), folded, atol=1e-5, rtol=1e-6)
        out.sum().backward()
        assert x_grad.grad is not None and torch.isfinite(x_grad.grad).all()
        assert dec.lin3_1.weight.grad is not None and dec.lin3_1.weight.grad.abs().sum() > 0


def test_halo_base_decoder_keeps_exact_order_by_default():
    dec = HaloPartDecoder(HaloDecoderConfig(add_feature_dim=0, projection_dtype="float32"))
    assert not dec.fold


def _direct_cross_attention(ct: AnchorCrossAttention, xyz: torch.Tensor, enc: AnchorEncoding) -> torch.Tensor:
    """The textbook formula: softmax over [k neighbours, global token] per channel."""
    z = enc.z.unsqueeze(1)
    q = ct.w_qs(z)
    nbr = knn_indices(xyz, enc.anchors, ct.k)
    delta = ct.fc_delta(xyz.unsqueeze(2) - gather_points(enc.anchors, nbr))
    keys = gather_points(ct.w_ks(enc.anchor_feats), nbr)
    values = gather_points(ct.w_vs(enc.anchor_feats), nbr) + delta
    logits = ct.fc_gamma(q.unsqueeze(2) - keys + delta)
    g_logit = ct.fc_gamma(q - ct.w_k_global(z)).unsqueeze(2).expand(-1, xyz.shape[1], 1, -1)
    g_value = ct.w_v_global(z).unsqueeze(2).expand(-1, xyz.shape[1], 1, -1)
    return vector_attention(torch.cat([logits, g_logit], 2), torch.cat([values, g_value], 2))


def test_fused_cross_attention_matches_direct_formula():
    torch.manual_seed(2)
    ct = AnchorCrossAttention(latent_dim=32, dim=24, k=9)
    enc = AnchorEncoding(
        z=torch.randn(2, 32), anchors=torch.rand(2, 128, 3) - 0.5, anchor_feats=torch.randn(2, 128, 32)
    )
    xyz = torch.rand(2, 300, 3) - 0.5
    with torch.no_grad():
        reference = _direct_cross_attention(ct, xyz, enc)
        fused = ct(xyz, enc)
        with_tables = ct(xyz, enc, ct.tables(enc))
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_tables, fused, atol=0, rtol=0)
    fused_grad_path = ct(xyz, enc)  # autograd on: the out-of-place branch
    torch.testing.assert_close(fused_grad_path.detach(), fused, atol=1e-6, rtol=1e-6)
    fused_grad_path.sum().backward()
    assert ct.fc_delta[2].weight.grad.abs().sum() > 0 and ct.w_ks.weight.grad.abs().sum() > 0


def test_all_pairs_attention_inference_matches_training_path():
    torch.manual_seed(3)
    attn = PointSelfAttention(dim=40, k=32, group_all=True).eval()
    xyz, feats = torch.rand(2, 50, 3) - 0.5, torch.randn(2, 50, 40)
    training_path = attn(xyz, feats).detach()  # grad enabled: the direct formula
    with torch.no_grad():
        fast = attn(xyz, feats)
    torch.testing.assert_close(fast, training_path, atol=2e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_paths_on_cuda_match_cpu():
    torch.manual_seed(4)
    dec = HaloPartDecoder(HaloDecoderConfig()).eval()
    ct = AnchorCrossAttention(latent_dim=32, dim=24, k=9)
    mats, lengths, x = _halo_inputs(5)
    f = torch.randn(2, 700, 19)
    enc = AnchorEncoding(torch.randn(2, 32), torch.rand(2, 128, 3) - 0.5, torch.randn(2, 128, 32))
    xyz = torch.rand(2, 300, 3) - 0.5
    with torch.no_grad():
        cpu = (dec(x, mats, lengths, f), ct(xyz, enc))
        dec.cuda(), ct.cuda()
        cuda_enc = AnchorEncoding(enc.z.cuda(), enc.anchors.cuda(), enc.anchor_feats.cuda())
        gpu = (dec(x.cuda(), mats.cuda(), lengths.cuda(), f.cuda()), ct(xyz.cuda(), cuda_enc))
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(b.cpu(), a, atol=1e-3, rtol=1e-3)  # TF32 matmuls allowed
