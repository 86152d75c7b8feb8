"""Graph convolution over the 21-joint hand skeleton, as used by network K.

* :func:`hand_joint_adjacency` -- the directed parent->child adjacency in the ``halo`` order
  (``A[parent, child] = 1``; not symmetrised, no self loops, not normalised), or with
  ``undirected=True`` the same skeleton with edges both ways (ours, see the function).
* :func:`chebyshev_features` -- the order-2 Chebyshev basis ``[x, A @ x]``: a pure function.
* :class:`GraphResBlock` / :class:`GraphLayer` -- two residual graph-conv blocks (state-dict
  names ``GCN_blocks.{0,1}.{norm1, fc1, norm2, fc2, shortcut, norm3}``).
* :class:`DualGraphLayer` -- one K layer: per hand, a graph layer then joint-image attention.
"""

from __future__ import annotations

import torch
from torch import nn

from core.hand.joints import HALO_EDGES, HAND_SIDES, NUM_JOINTS
from core.models.attention import ImgEx
from core.models.config import ImgExConfig

# Chebyshev order: the basis is [x, A x] (two terms).
CHEBYSHEV_ORDER = 2
# LayerNorm epsilon of the graph blocks (the official value; 1e-5 moves outputs by ~3e-5).
LAYER_NORM_EPS = 1e-6


def hand_joint_adjacency(dtype: torch.dtype = torch.float32, undirected: bool = False) -> torch.Tensor:
    """(21, 21) adjacency over ``halo``-order joints with ``A[parent, child] = 1`` (official).

    ``undirected`` also sets ``A[child, parent] = 1`` (ours). With the official matrix a joint
    only ever aggregates its descendants: fingertips see nothing but themselves and cannot
    average their noise against the rest of the hand. Same weights, so either can be used
    with any checkpoint, but a network must run with the matrix it was trained with."""
    adjacency = torch.zeros(NUM_JOINTS, NUM_JOINTS, dtype=dtype)
    for parent, child in HALO_EDGES:
        adjacency[parent, child] = 1.0
        if undirected:
            adjacency[child, parent] = 1.0
    return adjacency


def chebyshev_features(x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """Order-2 Chebyshev basis of node features ``x`` (B, J, C) -> (B, J, 2C).

    The two terms ``x`` and ``A x`` are **interleaved per channel** -- output channel
    ``2c + k`` is term ``k`` of input channel ``c`` -- which is the layout the official
    weights expect. With the directed parent->child matrix, row ``j`` of ``A x`` sums the
    features of ``j``'s children (fingertips get zeros)."""
    terms = torch.stack([x, torch.matmul(adjacency, x)], dim=-1)  # (B, J, C, K)
    return terms.flatten(-2)


class GraphResBlock(nn.Module):
    """Residual block of two Chebyshev graph convolutions:
    ``norm3(fc2(cheb(relu(norm2(fc1(cheb(x)))))) + shortcut(x))``.

    ``norm1`` is kept only so that official checkpoints load: the original block computes
    it and then discards the result, so it has no effect on the output."""

    def __init__(self, in_dim: int, out_dim: int, mid_dim: int, dropout: float = 0.01):
        super().__init__()
        self.norm1 = nn.LayerNorm(in_dim, eps=LAYER_NORM_EPS)  # unused (see class docstring)
        self.fc1 = nn.Linear(CHEBYSHEV_ORDER * in_dim, mid_dim)
        self.norm2 = nn.LayerNorm(mid_dim, eps=LAYER_NORM_EPS)
        self.fc2 = nn.Linear(CHEBYSHEV_ORDER * mid_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Linear(in_dim, out_dim)
        self.norm3 = nn.LayerNorm(out_dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.norm2(self.fc1(chebyshev_features(x, adjacency))))
        hidden = self.dropout(self.fc2(chebyshev_features(hidden, adjacency)))
        return self.norm3(hidden + self.shortcut(x))


class GraphLayer(nn.Module):
    """Two :class:`GraphResBlock` with a ReLU in between, over a fixed adjacency.

    The adjacency is a non-persistent buffer: it is a constant of the skeleton, not a
    weight, and official checkpoints do not contain it."""

    def __init__(
        self, in_dim: int, out_dim: int, adjacency: torch.Tensor | None = None, dropout: float = 0.01
    ):
        super().__init__()
        if adjacency is None:
            adjacency = hand_joint_adjacency()
        self.register_buffer("adjacency", adjacency.clone(), persistent=False)
        self.GCN_blocks = nn.ModuleList(
            [
                GraphResBlock(in_dim, out_dim, out_dim, dropout),
                GraphResBlock(out_dim, out_dim, out_dim, dropout),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 21, in_dim) joint features -> (B, 21, out_dim)."""
        adjacency = self.adjacency.to(dtype=x.dtype)
        x = torch.relu(self.GCN_blocks[0](x, adjacency))
        return self.GCN_blocks[1](x, adjacency)


class DualGraphLayer(nn.Module):
    """One layer of K: for each hand separately, a :class:`GraphLayer` adds ``graph_dim``
    channels, then joint-image attention (``img_ex``) mixes ``[f, graph(f)]`` with patch
    tokens of the image feature map. (B, 21, in_dim) -> (B, 21, in_dim + graph_dim) per hand.

    The two hands never exchange information here (as in the official network)."""

    def __init__(
        self,
        in_dim: int,
        grid_f_dim: int,
        *,
        graph_dim: int = 16,
        img_f_dim: int = 256,
        img_size: int = 64,
        grid_size: int = 8,
        n_heads: int = 4,
        dropout: float = 0.01,
        adjacency: torch.Tensor | None = None,
    ):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim + graph_dim
        img_ex_cfg = ImgExConfig(
            img_size=img_size,
            img_f_dim=img_f_dim,
            grid_size=grid_size,
            grid_f_dim=grid_f_dim,
            verts_f_dim=self.out_dim,
            n_heads=n_heads,
            dropout=dropout,
        )
        self.graph_left = GraphLayer(in_dim, graph_dim, adjacency, dropout=dropout)
        self.graph_right = GraphLayer(in_dim, graph_dim, adjacency, dropout=dropout)
        self.img_ex_left = ImgEx(img_ex_cfg)
        self.img_ex_right = ImgEx(img_ex_cfg)

    def forward_hand(self, side: str, joint_feats: torch.Tensor, img_feat: torch.Tensor) -> torch.Tensor:
        """One hand: joint features (B, 21, in_dim), image feature map (B, C, H, W)."""
        if side not in HAND_SIDES:
            raise ValueError(f"side must be one of {HAND_SIDES}, got {side!r}")
        graph: GraphLayer = getattr(self, f"graph_{side}")
        img_ex: ImgEx = getattr(self, f"img_ex_{side}")
        tokens = torch.cat([joint_feats, graph(joint_feats)], dim=-1)
        return img_ex(img_feat, tokens)

    def forward(
        self, left_feats: torch.Tensor, right_feats: torch.Tensor, img_feat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self.forward_hand("left", left_feats, img_feat),
            self.forward_hand("right", right_feats, img_feat),
        )
