"""HALO piecewise part decoder: 16 part MLPs over per-bone canonical coordinates.

Official key layout (module attribute ``left_decoder`` / ``right_decoder`` in I,
``decoder`` in the HALO base model): ``global_proj{b}`` (48 -> 8), ``bone_encoder.linear1``
(16 -> 40) / ``linear2`` (40 -> 16), and ``lin{b}_{0..4}`` per part b.

Per query point x and part b (../shared/reference/official_code.md §A.3.3):

* x_b = (C_b [x; 1])[:3] (float64 in Im2Hands, float32 in HALO: ``projection_dtype``);
* input h0 = [x_b (3), bone length l_b (1), bone latent (16), global_proj_b(G) (8)], where
  G = the 16 translation columns of C (48) and the bone latent = bone_encoder(all 16 lengths);
* layer 0: LeakyReLU(0.1); layers 1..3 residual *before* the activation; layer 2 also
  takes the injected feature f (19-d image attention in I; absent in HALO base);
* layer 4: logit. Sigmoid and the max over parts are left to the caller.

The 16 MLPs are evaluated together with batched matmuls over stacked weights, on blocks of
points (``chunk_points``). Two evaluation orders:

* exact (``fold=False``): each layer sees exactly the official input vector, which keeps
  the HALO base model within ~8e-6 of the official float32 outputs (its golden needs 1e-5);
* folded (``fold=True``, the default for Im2Hands' float64-projection decoder): the same
  function re-associated for speed -- the part projection and the point-independent layer-0
  inputs are folded into one 3 -> 64 affine map per part (composed in float64), the
  injected feature's columns of layer 2 become one per-point term shared by the parts'
  batched matmul, and the residuals are folded into the weights (``W + I``). Logits move
  by ~1e-5 (float32 re-association); several times less memory traffic per point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.models.config import HaloDecoderConfig


def points_in_part_frames(
    points: torch.Tensor, part_mats: torch.Tensor, compute_dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """(B, N, 3) points and (B, P, 4, 4) part matrices -> (B, N, P, 3) = (C_p [x; 1])[:3].

    ``compute_dtype`` float64 is what Im2Hands' decoder does; the HALO repo computes in
    float32, summing x, y, z terms and then the translation (that order matters at the
    1e-5 level of saturated logits). Returned in the points' dtype."""
    x = points.to(compute_dtype)[:, :, None, :]  # (B, N, 1, 3)
    mats = part_mats.to(compute_dtype)[:, None]  # (B, 1, P, 4, 4)
    out = mats[..., :3, 0] * x[..., 0:1] + mats[..., :3, 1] * x[..., 1:2]
    out = out + mats[..., :3, 2] * x[..., 2:3]
    return (out + mats[..., :3, 3]).to(points.dtype)


def global_pose_code(part_mats: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, P, 4, 4) -> (B, 3P): the translation columns C_p[:3, 3] (C_p applied to the origin)."""
    return part_mats[..., :3, 3].reshape(part_mats.shape[0], -1).to(dtype)


class TwoLayerNet(nn.Module):
    """Bone-length encoder: linear1 -> ReLU -> linear2 (official ``TwoLayerNet``)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_hidden)
        self.linear2 = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x).clamp(min=0))


class HaloPartDecoder(nn.Module):
    """16 part MLPs -> per-part occupancy logits (B, N, 16)."""

    def __init__(self, cfg: HaloDecoderConfig | None = None, fold: bool | None = None):
        """``fold``: default evaluation order of :meth:`forward` (see the module docstring);
        None = folded unless ``cfg.projection_dtype`` is float32 (the HALO-repo model, whose
        golden tolerance needs the official operation order)."""
        super().__init__()
        self.cfg = cfg = cfg or HaloDecoderConfig()
        self.fold = cfg.projection_dtype != "float32" if fold is None else bool(fold)
        P = cfg.num_bones
        for b in range(P):
            setattr(self, f"global_proj{b}", nn.Linear(3 * P, cfg.global_pose_projection_size))
        self.bone_encoder = TwoLayerNet(P, cfg.bone_hidden_size, cfg.bone_latent_size)
        widths = [cfg.part_input_size, *cfg.dims, 1]
        for b in range(P):
            for k in range(len(widths) - 1):
                d_in = widths[k] + (cfg.add_feature_dim if k == cfg.add_feature_layer_idx else 0)
                setattr(self, f"lin{b}_{k}", nn.Linear(d_in, widths[k + 1]))
        self.num_layers = len(widths) - 1

    def _stacked(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer k of all parts: weights (P, out, in), biases (P, out)."""
        layers = [getattr(self, f"lin{b}_{k}") for b in range(self.cfg.num_bones)]
        return torch.stack([m.weight for m in layers]), torch.stack([m.bias for m in layers])

    def forward(
        self,
        points: torch.Tensor,
        part_mats: torch.Tensor,
        bone_lengths: torch.Tensor,
        feature: torch.Tensor | None = None,
        chunk_points: int | None = None,
        fold: bool | None = None,
    ) -> torch.Tensor:
        """points (B, N, 3) in the decoder's input units; part_mats (B, 16, 4, 4);
        bone_lengths (B, 16); feature (B, N, add_feature_dim) or None -> logits (B, N, 16).

        Points are processed ``chunk_points`` (over the batch) at a time: the hidden
        activations are 16 x 64 floats per point, so blocks that stay in cache are fastest
        (default: 1024 for the folded order, 2048 for the exact one). ``fold``: evaluation
        order (None: ``self.fold``)."""
        cfg = self.cfg
        P = cfg.num_bones
        B, N, _ = points.shape
        if part_mats.shape != (B, P, 4, 4) or bone_lengths.shape != (B, P):
            raise ValueError(
                f"decoder expects part matrices (B, {P}, 4, 4) and bone lengths (B, {P}), got "
                f"{tuple(part_mats.shape)} and {tuple(bone_lengths.shape)} for B={B}"
            )
        if (feature is None) != (cfg.add_feature_dim == 0):
            raise ValueError(f"decoder built for a {cfg.add_feature_dim}-d injected feature")
        dtype = self.lin0_0.weight.dtype
        lengths = bone_lengths.to(dtype)
        code = global_pose_code(part_mats, dtype)  # (B, 48)
        global_proj = torch.stack(
            [getattr(self, f"global_proj{b}")(code) for b in range(P)], dim=1
        )  # (B, P, 8)
        bone_latent = self.bone_encoder(lengths)  # (B, 16)
        # Layer-0 input columns that do not depend on the point: [l_b, latent, global_proj_b].
        const_in = torch.cat(
            [lengths.unsqueeze(-1), bone_latent.unsqueeze(1).expand(B, P, -1), global_proj], dim=-1
        )  # (B, P, 25)
        weights = [self._stacked(k) for k in range(self.num_layers)]
        fold = self.fold if fold is None else fold
        if chunk_points is None:
            chunk_points = FOLDED_CHUNK_POINTS if fold else EXACT_CHUNK_POINTS
        step = max(1, chunk_points // max(B, 1))
        if fold:
            folded = self._folded_weights(part_mats, const_in, weights)
            chunks = [
                self._part_mlps_folded(
                    points[:, s : s + step].to(dtype),
                    None if feature is None else feature[:, s : s + step],
                    folded,
                )
                for s in range(0, N, step)
            ]
            return torch.cat(chunks, dim=1) if len(chunks) > 1 else chunks[0]
        chunks = []
        for start in range(0, N, step):
            sl = slice(start, min(N, start + step))
            x_parts = points_in_part_frames(points[:, sl].to(dtype), part_mats, _DTYPES[cfg.projection_dtype])
            f = None if feature is None else feature[:, sl].to(dtype)
            chunks.append(self._part_mlps(x_parts, const_in, f, weights))
        return torch.cat(chunks, dim=1) if len(chunks) > 1 else chunks[0]

    def _part_mlps(
        self,
        x_parts: torch.Tensor,
        const_in: torch.Tensor,
        feature: torch.Tensor | None,
        weights: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """x_parts (B, n, P, 3), const_in (B, P, 25), feature (B, n, F) -> logits (B, n, P)."""
        cfg = self.cfg
        B, n, P, _ = x_parts.shape
        slope = cfg.leaky_slope
        w0, b0 = weights[0]
        h0 = torch.cat([x_parts, const_in.unsqueeze(1).expand(B, n, P, -1)], dim=-1)  # (B, n, P, 28)
        h0 = h0.permute(2, 0, 1, 3).reshape(P, B * n, -1)
        h = F.leaky_relu(torch.baddbmm(b0.unsqueeze(1), h0, w0.transpose(1, 2)), slope)  # (P, B*n, 64)
        for k in range(1, self.num_layers - 1):
            w, bias = weights[k]
            layer_in = h
            if k == cfg.add_feature_layer_idx and cfg.add_feature_dim:
                f = feature.reshape(1, B * n, cfg.add_feature_dim).expand(P, -1, -1)
                layer_in = torch.cat([h, f], dim=-1)
            pre = torch.baddbmm(bias.unsqueeze(1), layer_in, w.transpose(1, 2))
            h = F.leaky_relu(pre.add_(h), slope, inplace=True)  # residual before the activation
        w_out, b_out = weights[-1]  # (P, 1, 64)
        logits = torch.baddbmm(b_out.unsqueeze(1), h, w_out.transpose(1, 2))  # (P, B*n, 1)
        return logits.reshape(P, B, n).permute(1, 2, 0)

    def _folded_weights(
        self,
        part_mats: torch.Tensor,
        const_in: torch.Tensor,
        weights: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> _FoldedWeights:
        """Per-call weights of the folded order, batch-major over (B * P) matmul batches."""
        cfg = self.cfg
        B, P = part_mats.shape[:2]
        dtype = weights[0][0].dtype
        w0, b0 = weights[0]  # (P, 64, 28), (P, 64)
        # layer 0: W0 [R_b x + t_b; c_b] + b0 = (W0x R_b) x + (W0x t_b + W0c c_b + b0)
        w0x = w0[..., :3].double()
        mats = part_mats.double()
        lin0 = torch.einsum("poi,bpij->bpoj", w0x, mats[..., :3, :3])  # (B, P, 64, 3)
        off0 = (
            torch.einsum("poi,bpi->bpo", w0x, mats[..., :3, 3])
            + torch.einsum("poc,bpc->bpo", w0[..., 3:].double(), const_in.double())
            + b0.double()
        )  # (B, P, 64)
        width = w0.shape[1]
        eye = torch.eye(width, dtype=dtype, device=w0.device)
        hidden = []
        feature_weight = None
        for k in range(1, self.num_layers - 1):
            w, bias = weights[k]
            if k == cfg.add_feature_layer_idx and cfg.add_feature_dim:
                # [W_f^T; b]: applied to [f, 1] the bias comes out of the matmul
                feature_weight = torch.cat([w[..., width:].transpose(1, 2), bias[:, None]], dim=1).repeat(
                    B, 1, 1
                )
                w = w[..., :width]
            # residual before the activation: (W + I) h + b = W h + b + h
            hidden.append(((w + eye).transpose(1, 2).repeat(B, 1, 1), bias.repeat(B, 1)[:, None]))
        w_out, b_out = weights[-1]
        # [(W0x R_b)^T; offset]: applied to [x, 1] (the offset comes out of the matmul)
        lin0 = torch.cat([lin0.transpose(-1, -2), off0.unsqueeze(-2)], dim=-2)  # (B, P, 4, 64)
        return _FoldedWeights(
            lin0=lin0.to(dtype).reshape(B * P, 4, width),
            hidden=hidden,
            feature=feature_weight,
            out=(w_out.transpose(1, 2).repeat(B, 1, 1), b_out.repeat(B, 1)[:, None]),
        )

    def _part_mlps_folded(
        self, points: torch.Tensor, feature: torch.Tensor | None, w: _FoldedWeights
    ) -> torch.Tensor:
        """points (B, n, 3), feature (B, n, F) or None -> logits (B, n, P); activations are
        laid out (B * P, n, 64) so every layer is one batched matmul."""
        cfg = self.cfg
        B, n, _ = points.shape
        P = cfg.num_bones
        slope = cfg.leaky_slope
        inplace = not torch.is_grad_enabled()

        def act(x: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(x, slope, inplace=inplace)

        def rep(x: torch.Tensor) -> torch.Tensor:  # (B, n, c) -> (B * P, n, c)
            return x.unsqueeze(1).expand(B, P, n, x.shape[-1]).reshape(B * P, n, x.shape[-1])

        def with_ones(x: torch.Tensor) -> torch.Tensor:  # (B, n, c) -> (B * P, n, c + 1)
            return rep(torch.cat([x, x.new_ones(B, n, 1)], dim=-1))

        h = act(torch.bmm(with_ones(points), w.lin0))
        for k, (weight, bias) in enumerate(w.hidden, start=1):
            if w.feature is not None and k == cfg.add_feature_layer_idx:
                pre = torch.bmm(with_ones(feature.to(h.dtype)), w.feature)  # W_f f + b
                pre = (
                    pre.baddbmm_(h, weight)
                    if inplace and pre.dtype == weight.dtype
                    else pre.baddbmm(h, weight)
                )
            else:
                pre = torch.baddbmm(bias, h, weight)
            h = act(pre)
        out_weight, out_bias = w.out
        logits = torch.baddbmm(out_bias, h, out_weight)  # (B * P, n, 1)
        return logits.reshape(B, P, n).transpose(1, 2)


@dataclass
class _FoldedWeights:
    lin0: torch.Tensor  # (B*P, 4, 64): [(W0x R_b)^T; point-independent layer-0 terms]
    hidden: list[tuple[torch.Tensor, torch.Tensor]]  # layers 1..: ((W + I)^T (B*P, 64, 64), b (B*P, 1, 64))
    feature: torch.Tensor | None  # injected layer: [W_f^T; b] (B*P, F + 1, 64)
    out: tuple[torch.Tensor, torch.Tensor]  # (W^T (B*P, 64, 1), b (B*P, 1, 1))


# Points (over the batch) per block: the folded order keeps a block's activations in cache.
FOLDED_CHUNK_POINTS = 1024
EXACT_CHUNK_POINTS = 2048

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def occupancy_from_logits(part_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, P) part logits -> (occupancy (B, N) = max_p sigmoid, part probabilities (B, N, P))."""
    probs = torch.sigmoid(part_logits)
    return probs.max(dim=-1).values, probs
