"""HALO piecewise part decoder: 16 part MLPs over per-bone canonical coordinates.

Official key layout (module attribute ``left_decoder`` / ``right_decoder`` in I,
``decoder`` in the HALO base model): ``global_proj{b}`` (48 -> 8), ``bone_encoder.linear1``
(16 -> 40) / ``linear2`` (40 -> 16), and ``lin{b}_{0..4}`` per part b.

Per query point x and part b (official_code.md §A.3.3):

* x_b = (C_b [x; 1])[:3] (float64 in Im2Hands, float32 in HALO: ``projection_dtype``);
* input h0 = [x_b (3), bone length l_b (1), bone latent (16), global_proj_b(G) (8)], where
  G = the 16 translation columns of C (48) and the bone latent = bone_encoder(all 16 lengths);
* layer 0: LeakyReLU(0.1); layers 1..3 residual *before* the activation; layer 2 also
  takes the injected feature f (19-d image attention in I; absent in HALO base);
* layer 4: logit. Sigmoid and the max over parts are left to the caller.

The 16 MLPs are evaluated together with batched matmuls over stacked weights, on blocks of
points (``chunk_points``). Each layer sees exactly the official input vector (no algebraic
splitting), which keeps the HALO base model within ~8e-6 of the official float32 outputs.
"""

from __future__ import annotations

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

    def __init__(self, cfg: HaloDecoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or HaloDecoderConfig()
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
        chunk_points: int = 16384,
    ) -> torch.Tensor:
        """points (B, N, 3) in the decoder's input units; part_mats (B, 16, 4, 4);
        bone_lengths (B, 16); feature (B, N, add_feature_dim) or None -> logits (B, N, 16).

        Points are processed ``chunk_points`` (over the batch) at a time: the hidden
        activations are 16 x 64 floats per point, so large blocks only cost memory traffic."""
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
        step = max(1, chunk_points // max(B, 1))
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


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def occupancy_from_logits(part_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, P) part logits -> (occupancy (B, N) = max_p sigmoid, part probabilities (B, N, P))."""
    probs = torch.sigmoid(part_logits)
    return probs.max(dim=-1).values, probs
