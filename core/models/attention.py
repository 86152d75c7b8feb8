"""Transformer blocks shared by networks I and K.

* :class:`SelfAttn` -- one pre-LayerNorm transformer block (multi-head attention + MLP),
  official key names ``w_qs, w_ks, w_vs, fc, layer_norm, ff.{layer_norm, fc1, fc2}``.
  Head width is ``f_dim // n_heads`` (floor, quirk Q14: 19 dims / 2 heads -> 2 x 9 = 18).
* :class:`ImgEx` -- query-image attention (official ``img_ex``): a feature map is cut into
  patch tokens by one strided conv (``encoder``), and every query token attends to
  ``[itself, image tokens]``; only the query slot's output is kept (``attn``).

Because only the query slot is kept and the image tokens are shared by all queries of an
image, :meth:`SelfAttn.forward_query_token` computes that slot directly: image-token keys
and values once per image, then one (1 + T)-way attention per query. It equals running the
full block on ``[query, tokens]`` and taking output 0 (checked in the tests).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.models.config import ImgExConfig

LAYER_NORM_EPS = 1e-6


class FeedForwardResidual(nn.Module):
    """Pre-LN residual MLP (official ``MLP_res_block``): x + Drop(fc2(Drop(ReLU(fc1(LN(x))))))."""

    def __init__(self, f_dim: int, hid_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layer_norm = nn.LayerNorm(f_dim, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(f_dim, hid_dim)
        self.fc2 = nn.Linear(hid_dim, f_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.relu(self.fc1(self.layer_norm(x))))
        return x + self.dropout(self.fc2(h))


class SelfAttn(nn.Module):
    """Pre-LN transformer block over a token sequence (B, T, f_dim) -> (B, T, f_dim)."""

    def __init__(self, f_dim: int, n_heads: int = 2, hid_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.f_dim = f_dim
        self.n_heads = n_heads
        self.head_dim = f_dim // n_heads  # floor: quirk Q14
        if self.head_dim < 1:
            raise ValueError(f"f_dim {f_dim} is smaller than n_heads {n_heads}")
        inner = self.n_heads * self.head_dim
        self.w_qs = nn.Linear(f_dim, inner)
        self.w_ks = nn.Linear(f_dim, inner)
        self.w_vs = nn.Linear(f_dim, inner)
        self.fc = nn.Linear(inner, f_dim)
        self.layer_norm = nn.LayerNorm(f_dim, eps=LAYER_NORM_EPS)
        self.ff = FeedForwardResidual(f_dim, hid_dim if hid_dim is not None else f_dim, dropout)
        self.dropout = nn.Dropout(dropout)  # after the output projection
        self.attn_dropout = nn.Dropout(dropout)  # on the attention weights

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, h*d) -> (..., T, h, d)."""
        return x.unflatten(-1, (self.n_heads, self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.layer_norm(x)
        q = self._heads(self.w_qs(normed)).transpose(-3, -2)  # (B, h, T, d)
        k = self._heads(self.w_ks(normed)).transpose(-3, -2)
        v = self._heads(self.w_vs(normed)).transpose(-3, -2)
        scores = torch.matmul(q / math.sqrt(self.head_dim), k.transpose(-1, -2))  # (B, h, T, T)
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, v).transpose(-3, -2).flatten(-2)  # (B, T, h*d)
        y = x + self.dropout(self.fc(out))
        return self.ff(y)

    def forward_query_token(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Output at slot 0 of ``forward(cat([q, context]))`` for every query independently.

        query: (B, N, f) -- N independent query tokens per batch item;
        context: (B, T, f) -- tokens shared by the N queries of that batch item.
        Returns (B, N, f).
        """
        scale = 1.0 / math.sqrt(self.head_dim)
        q_normed = self.layer_norm(query)
        c_normed = self.layer_norm(context)
        q = self._heads(self.w_qs(q_normed)) * scale  # (B, N, h, d)
        k_self = self._heads(self.w_ks(q_normed))
        v_self = self._heads(self.w_vs(q_normed))
        k_ctx = self._heads(self.w_ks(c_normed))  # (B, T, h, d)
        v_ctx = self._heads(self.w_vs(c_normed))
        score_self = (q * k_self).sum(-1, keepdim=True)  # (B, N, h, 1)
        score_ctx = torch.einsum("bnhd,bthd->bnht", q, k_ctx)  # (B, N, h, T)
        weights = torch.softmax(torch.cat([score_self, score_ctx], dim=-1), dim=-1)
        weights = self.attn_dropout(weights)
        out = weights[..., :1] * v_self + torch.einsum("bnht,bthd->bnhd", weights[..., 1:], v_ctx)
        y = query + self.dropout(self.fc(out.flatten(-2)))
        return self.ff(y)


class ImageTokenEncoder(nn.Module):
    """Feature map -> patch tokens (official ``img_feat_to_grid``).

    ``proj`` is a Conv2d with kernel = stride = patch size, then ReLU, plus a learned
    position embedding per token (row-major over the grid), then one :class:`SelfAttn`.
    """

    def __init__(self, cfg: ImgExConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Conv2d(
            cfg.img_f_dim, cfg.grid_f_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.position_embeddings = nn.Embedding(cfg.num_tokens, cfg.grid_f_dim)
        self.self_attn = SelfAttn(cfg.grid_f_dim, cfg.n_heads, cfg.grid_f_dim, cfg.dropout)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """(B, img_f_dim, img_size, img_size) -> (B, grid_size**2, grid_f_dim)."""
        expected = (self.cfg.img_f_dim, self.cfg.img_size, self.cfg.img_size)
        if feature_map.dim() != 4 or tuple(feature_map.shape[1:]) != expected:
            raise ValueError(f"img_ex expects a feature map (B, {expected}), got {tuple(feature_map.shape)}")
        tokens = F.relu(self.proj(feature_map)).flatten(2).transpose(1, 2)  # (B, T, C)
        tokens = tokens + self.position_embeddings.weight.unsqueeze(0)
        return self.self_attn(tokens)


class QueryImageAttention(nn.Module):
    """Every query token attends to ``[itself, image tokens]`` (official ``img_attn``)."""

    def __init__(self, cfg: ImgExConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.grid_f_dim, cfg.verts_f_dim)
        self.Attn = SelfAttn(cfg.verts_f_dim, cfg.n_heads, cfg.verts_f_dim, cfg.dropout)  # noqa: N815 (official key)

    def forward(self, image_tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """image_tokens (B, T, grid_f_dim), queries (B, N, verts_f_dim) -> (B, N, verts_f_dim)."""
        return self.Attn.forward_query_token(queries, self.fc(image_tokens))


class ImgEx(nn.Module):
    """Query-image attention (official ``img_ex``): ``encoder`` + ``attn``.

    Use :meth:`encode` once per image and :meth:`attend` per batch of queries, or
    ``forward(feature_map, queries)`` for both at once.
    """

    def __init__(self, cfg: ImgExConfig | None = None):
        super().__init__()
        self.cfg = cfg or ImgExConfig()
        self.encoder = ImageTokenEncoder(self.cfg)
        self.attn = QueryImageAttention(self.cfg)
        self.apply(_xavier_uniform_init)

    def encode(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.encoder(feature_map)

    def attend(self, image_tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        if queries.dim() != 3 or queries.shape[-1] != self.cfg.verts_f_dim:
            raise ValueError(
                f"img_ex expects queries (B, N, {self.cfg.verts_f_dim}), got {tuple(queries.shape)}"
            )
        return self.attn(image_tokens, queries)

    def forward(self, feature_map: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        return self.attend(self.encode(feature_map), queries)


def _xavier_uniform_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Conv2d | nn.Conv1d):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
