"""AIR-Net point-transformer encoder and occupancy decoder, as configured in network R.

Clean-room implementation after the description of AIR-Nets (Giebenhain & Goldluecke 2021)
and Im2Hands' modified copy. Attribute names equal the official state-dict keys
(``trans_enc.*`` / ``trans_dec.*`` inside R), so official weights load with ``strict=True``.

Vector attention throughout: attention weights are a softmax **per channel** over the
neighbours of a point, computed from ``fc_gamma(q - k + delta)`` where ``delta`` is a learned
encoding of relative positions. Points are ``(B, N, 3)`` in whatever frame the caller uses
(R: camera frame with y and z negated, metres, centred on the anchors' bounding box).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from core.geometry.sampling import farthest_point_sampling, gather_points, knn_indices

# Queries decoded per chunk: bounds the (chunk, 9, 400) attention tensors to ~120 MB (the
# engine sets a few hundred on CPU, where blocks that stay in cache are fastest).
DECODER_QUERY_CHUNK = 8192
# Queries per call of the decoder's narrow (32-wide) MLP tail.
MLP_TAIL_BLOCK = 8192


def _two_layer_mlp(in_dim: int, dim: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear; indices 0 and 2 hold the weights (official key layout)."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Linear(dim, dim))


def _batch_norm_points(bn: nn.BatchNorm1d, feats: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over the channel axis of point features (B, N, C)."""
    return bn(feats.transpose(1, 2)).transpose(1, 2)


def vector_attention(gamma_logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Softmax over the neighbour axis (-2), separately per channel, then the weighted sum
    of ``values`` (same shape (..., K, C)) -> (..., C)."""
    weights = torch.softmax(gamma_logits, dim=-2)
    return (weights * values).sum(dim=-2)


@dataclass
class AnchorEncoding:
    """What the encoder returns for one hand's anchor set.

    ``anchors`` are in the frame of the encoder's input points; ``fps_indices`` are the
    farthest-point-sampling indices of each down-sampling stage (into that stage's input)."""

    z: torch.Tensor  # (B, 256) global latent
    anchors: torch.Tensor  # (B, 128, 3) down-sampled anchor positions
    anchor_feats: torch.Tensor  # (B, 128, 256) per-anchor features
    fps_indices: tuple[torch.Tensor, ...] = ()

    def detach(self) -> AnchorEncoding:
        return AnchorEncoding(
            self.z.detach(), self.anchors.detach(), self.anchor_feats.detach(), self.fps_indices
        )


class PointSelfAttention(nn.Module):
    """Vector self-attention over each point's ``k`` nearest neighbours (or over all points
    when ``group_all``), with a residual connection and BatchNorm (AIR-Net TransformerBlock)."""

    def __init__(self, dim: int, k: int, group_all: bool = False):
        super().__init__()
        self.k = k
        self.group_all = group_all
        self.bn = nn.BatchNorm1d(dim)
        self.fc_delta = _two_layer_mlp(3, dim)
        self.fc_gamma = _two_layer_mlp(dim, dim)
        self.w_qs = nn.Linear(dim, dim, bias=False)
        self.w_ks = nn.Linear(dim, dim, bias=False)
        self.w_vs = nn.Linear(dim, dim, bias=False)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """xyz (B, N, 3), feats (B, N, C) -> (B, N, C)."""
        if self.group_all and not torch.is_grad_enabled():
            return _batch_norm_points(self.bn, self._all_pairs_inference(xyz, feats) + feats)
        q = self.w_qs(feats)
        if self.group_all:
            # Every point attends to every point: neighbours are the whole set.
            k = self.w_ks(feats).unsqueeze(1)  # (B, 1, N, C), broadcast over queries
            v = self.w_vs(feats).unsqueeze(1)
            rel_xyz = xyz.unsqueeze(2) - xyz.unsqueeze(1)  # (B, N, N, 3)
        else:
            nbr = knn_indices(xyz, xyz, min(self.k, xyz.shape[1]))  # (B, N, k)
            k = gather_points(self.w_ks(feats), nbr)
            v = gather_points(self.w_vs(feats), nbr)
            rel_xyz = xyz.unsqueeze(2) - gather_points(xyz, nbr)
        delta = self.fc_delta(rel_xyz)
        out = vector_attention(self.fc_gamma(q.unsqueeze(2) - k + delta), v + delta)
        return _batch_norm_points(self.bn, out + feats)

    def _all_pairs_inference(self, xyz: torch.Tensor, feats: torch.Tensor, rows: int = 16) -> torch.Tensor:
        """The ``group_all`` attention without autograd, re-associated like
        :class:`AnchorCrossAttention`: with h_ij = relu(fc_delta.0(x_i - x_j)), one matmul by
        ``[W1 D2; D2]`` gives both ``W1 delta_ij`` and ``delta_ij - d2``; the per-point
        terms ``W1 (q_i + d2) + b1``, ``-W1 k_j`` and ``v_j + d2`` are added by broadcasting;
        fc_gamma.2's bias cancels in the softmax. ``rows`` query points at a time keep the
        (rows, N, 2C) block in cache. Equal to the direct formula up to float rounding."""
        B, N, C = feats.shape
        gamma1, delta2 = self.fc_gamma[0], self.fc_delta[2]
        d2 = delta2.bias
        fused = torch.cat([(gamma1.weight.double() @ delta2.weight.double()).to(d2.dtype), delta2.weight])
        per_query = F.linear(self.w_qs(feats) + d2, gamma1.weight, gamma1.bias)  # (B, N, C)
        per_key = torch.cat(
            [-F.linear(self.w_ks(feats), gamma1.weight), self.w_vs(feats) + d2], dim=-1
        )  # (B, N, 2C)
        out = torch.empty_like(feats)
        for s in range(0, N, rows):
            e = min(N, s + rows)
            hidden = self.fc_delta[0](xyz[:, s:e].unsqueeze(2) - xyz.unsqueeze(1)).clamp_min_(0)
            both = torch.matmul(hidden, fused.t()).add_(per_key.unsqueeze(1))  # (B, r, N, 2C)
            gamma_hidden, value = both[..., :C], both[..., C:]
            gamma_hidden.add_(per_query[:, s:e].unsqueeze(2)).clamp_min_(0)
            logits = F.linear(gamma_hidden, self.fc_gamma[2].weight)  # (B, r, N, C)
            weights = logits.sub_(logits.amax(dim=2, keepdim=True)).exp_()
            denominator = weights.sum(dim=2)
            out[:, s:e] = weights.mul_(value).sum(dim=2).div_(denominator)
        return out


class AttentiveSetAbstraction(nn.Module):
    """Down-sampling by farthest point sampling, then two rounds of vector attention from
    each sampled centre to its ``k`` nearest input points (AIR-Net TransformerSetAbstraction)."""

    def __init__(self, num_centres: int, k: int, dim: int, fps_skip_near_origin: bool = False):
        super().__init__()
        self.num_centres = num_centres
        self.k = k
        self.fps_skip_near_origin = fps_skip_near_origin
        self.fc_delta1 = _two_layer_mlp(3, dim)
        self.fc_gamma1 = _two_layer_mlp(dim, dim)
        self.fc_gamma2 = _two_layer_mlp(dim, dim)
        for name in ("w_qs", "w_ks", "w_vs", "w_qs2", "w_ks2", "w_vs2"):
            setattr(self, name, nn.Linear(dim, dim, bias=False))
        self.bnorm0 = nn.BatchNorm1d(dim)
        self.bnorm1 = nn.BatchNorm1d(dim)
        self.bnorm2 = nn.BatchNorm1d(dim)
        self.conv1 = nn.Conv1d(dim, dim, 1)
        self.bn1 = nn.BatchNorm1d(dim)
        self.conv2 = nn.Conv1d(dim, dim, 1)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor):
        """xyz (B, N, 3), feats (B, N, C) -> centres (B, M, 3), features (B, M, C), fps (B, M)."""
        fps = farthest_point_sampling(xyz, self.num_centres, skip_near_origin=self.fps_skip_near_origin)
        centres = gather_points(xyz, fps)
        centre_feats = gather_points(feats, fps)
        nbr = knn_indices(centres, xyz, min(self.k, xyz.shape[1]))  # (B, M, k)
        delta = self.fc_delta1(gather_points(xyz, nbr) - centres.unsqueeze(2))

        q1 = gather_points(self.w_qs(feats), fps)
        k1 = gather_points(self.w_ks(feats), nbr)
        v1 = gather_points(self.w_vs(feats), nbr)
        res1 = vector_attention(self.fc_gamma1(q1.unsqueeze(2) - k1 + delta), v1 + delta)
        res1_t = res1.transpose(1, 2)
        res1_t = res1_t + self.conv2(torch.relu(self.bn1(self.conv1(res1_t))))
        res1 = self.bnorm0(res1_t).transpose(1, 2)

        q2 = self.w_qs2(res1)
        k2 = gather_points(self.w_ks2(feats), nbr)
        v2 = gather_points(self.w_vs2(feats), nbr)
        res2 = vector_attention(self.fc_gamma2(q2.unsqueeze(2) - k2 + delta), v2 + delta)

        out = _batch_norm_points(self.bnorm1, res1 + res2) + centre_feats
        return centres, _batch_norm_points(self.bnorm2, out), fps


class TransitionDown(nn.Module):
    """Thin wrapper kept for the official key layout (``transition_downs.i.sa.*``)."""

    def __init__(self, num_centres: int, k: int, dim: int, fps_skip_near_origin: bool = False):
        super().__init__()
        self.sa = AttentiveSetAbstraction(num_centres, k, dim, fps_skip_near_origin)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor):
        return self.sa(xyz, feats)


class ElementwiseMLP(nn.Module):
    """Per-point residual MLP of 1x1 convolutions with BatchNorm:
    ``bn3(x + relu(bn2(conv2(relu(bn1(conv1(x)))))))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, dim, 1)
        self.bn1 = nn.BatchNorm1d(dim)
        self.conv2 = nn.Conv1d(dim, dim, 1)
        self.bn2 = nn.BatchNorm1d(dim)
        self.bn3 = nn.BatchNorm1d(dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, N, C) -> (B, N, C)."""
        x = feats.transpose(1, 2)
        h = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.bn3(x + h).transpose(1, 2)


class PointTransformerEncoder(nn.Module):
    """R's anchor encoder (``PointTransformerEncoderV2`` configuration of Im2Hands):
    512 anchors with ``feat_dim`` features -> 256 -> 128 anchors, widths 120 then 256, three
    full self-attention rounds, and a 256-d global latent from max-pooling.

    Input ``points`` (B, N, 3 + feat_dim) = [xyz, per-anchor features]."""

    def __init__(
        self,
        feat_dim: int = 34,
        points_per_layer: tuple[int, ...] = (512, 256, 128),
        k: int = 16,
        k_reduced: int = 16,
        num_final_transformers: int = 3,
        dim: int = 256,
        dim_reduced: int = 120,
        k_final: int = 32,
        fps_skip_near_origin: bool = False,
    ):
        super().__init__()
        self.feat_dim = feat_dim
        self.points_per_layer = tuple(points_per_layer)
        self.enc_sdf = nn.Linear(feat_dim, dim_reduced)
        self.transformer_begin = PointSelfAttention(dim_reduced, k)
        stages = len(points_per_layer) - 1
        stage_dims = [dim_reduced] + [dim] * (stages - 1)
        self.transition_downs = nn.ModuleList(
            TransitionDown(
                points_per_layer[i + 1], min(k, points_per_layer[i]), stage_dims[i], fps_skip_near_origin
            )
            for i in range(stages)
        )
        self.elementwise_extras = nn.ModuleList(ElementwiseMLP(d) for d in stage_dims)
        self.transformer_downs = nn.ModuleList(PointSelfAttention(d, k_reduced) for d in stage_dims)
        self.fc1 = nn.Linear(dim_reduced, dim)
        self.elementwise = nn.ModuleList(ElementwiseMLP(dim) for _ in range(stages))
        self.final_transformers = nn.ModuleList(
            PointSelfAttention(dim, k_final, group_all=True) for _ in range(num_final_transformers)
        )
        self.final_elementwise = nn.ModuleList(ElementwiseMLP(dim) for _ in range(num_final_transformers))
        self.fc_middle = _two_layer_mlp(dim, dim)

    @property
    def fps_skip_near_origin(self) -> bool:
        return self.transition_downs[0].sa.fps_skip_near_origin

    @fps_skip_near_origin.setter
    def fps_skip_near_origin(self, value: bool) -> None:
        for td in self.transition_downs:
            td.sa.fps_skip_near_origin = bool(value)

    def forward(self, points: torch.Tensor) -> AnchorEncoding:
        if points.dim() != 3 or points.shape[-1] != 3 + self.feat_dim:
            raise ValueError(f"encoder input must be (B, N, {3 + self.feat_dim}), got {tuple(points.shape)}")
        if points.shape[1] != self.points_per_layer[0]:
            raise ValueError(f"encoder expects {self.points_per_layer[0]} anchors, got {points.shape[1]}")
        xyz = points[..., :3]
        feats = self.transformer_begin(xyz, self.enc_sdf(points[..., 3:]))
        fps_all = []
        for i, down in enumerate(self.transition_downs):
            xyz, feats, fps = down(xyz, feats)
            fps_all.append(fps)
            feats = self.elementwise_extras[i](feats)
            feats = self.transformer_downs[i](xyz, feats)
            if i == 0:
                feats = self.fc1(feats)
            feats = self.elementwise[i](feats)
        for attention, mlp in zip(self.final_transformers, self.final_elementwise, strict=True):
            feats = mlp(attention(xyz, feats))
        z = self.fc_middle(feats.max(dim=1).values)
        return AnchorEncoding(z=z, anchors=xyz, anchor_feats=feats, fps_indices=tuple(fps_all))


@dataclass
class CrossAttentionTables:
    """Everything of :class:`AnchorCrossAttention` that depends on the anchors and the
    latent but not on the query points; computed once per decoder call.

    ``anchor_table`` (B, M, 2C) = per anchor ``[W1 (q - k + d2) + b1, v + d2]`` where W1 / b1
    are ``fc_gamma.0`` and d2 the bias of ``fc_delta.2``; ``fused_weight`` (2C, C) =
    ``[W1 D2; D2]`` with D2 the weight of ``fc_delta.2``. One matmul of the query-anchor
    hidden code ``relu(fc_delta.0(x_q - x_a))`` by ``fused_weight`` plus the gathered table
    row gives both the first fc_gamma pre-activation and ``v + delta``."""

    anchors: torch.Tensor  # (B, M, 3)
    anchor_table: torch.Tensor  # (B, M, 2C)
    fused_weight: torch.Tensor  # (2C, C)
    global_logits: torch.Tensor  # (B, C) fc_gamma(q - k_global) less fc_gamma.2's bias
    global_value: torch.Tensor  # (B, C)
    workspace: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def buffer(self, name: str, rows: int, cols: int) -> torch.Tensor:
        """A reusable (rows, cols) scratch block (grown on demand) for inference chunks."""
        buf = self.workspace.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols:
            buf = self.workspace[name] = self.anchor_table.new_empty(rows, cols)
        return buf[:rows]


class AnchorCrossAttention(nn.Module):
    """Vector cross-attention from each query point to its ``k`` nearest anchors plus one
    global token (AIR-Net CrossTransformerBlock). The query vector comes from the global
    latent alone; relative positions enter through ``fc_delta`` (zero for the global token).

    Evaluated as ``fc_gamma.2(relu(W1 (q - k) + W1 delta + b1))`` with ``W1 delta =
    (W1 D2) relu(fc_delta.0(rel)) + W1 d2``: the per-anchor parts are tabulated once
    (:meth:`tables`), so each query-neighbour pair costs two matmuls (C -> 2C, C -> C)
    instead of three plus the gathers and adds of q - k, v and delta. Equal to the direct
    formula up to float rounding (~1e-6 relative)."""

    def __init__(self, latent_dim: int = 256, dim: int = 200, k: int = 9):
        super().__init__()
        self.k = k
        self.fc_delta = _two_layer_mlp(3, dim)
        self.fc_gamma = _two_layer_mlp(dim, dim)
        self.w_k_global = nn.Linear(latent_dim, dim, bias=False)
        self.w_v_global = nn.Linear(latent_dim, dim, bias=False)
        self.w_qs = nn.Linear(latent_dim, dim, bias=False)
        self.w_ks = nn.Linear(latent_dim, dim, bias=False)
        self.w_vs = nn.Linear(latent_dim, dim, bias=False)

    def tables(self, encoding: AnchorEncoding) -> CrossAttentionTables:
        z = encoding.z.unsqueeze(1)  # (B, 1, latent)
        q = self.w_qs(z)  # (B, 1, C), shared by all queries of a sample
        gamma1, delta2 = self.fc_gamma[0], self.fc_delta[2]
        d2 = delta2.bias
        gamma_part = F.linear(q - self.w_ks(encoding.anchor_feats) + d2, gamma1.weight, gamma1.bias)
        value_part = self.w_vs(encoding.anchor_feats) + d2
        # the product in float64: the fold itself adds no rounding beyond the final cast
        fused = torch.cat(
            [(gamma1.weight.double() @ delta2.weight.double()).to(d2.dtype), delta2.weight], dim=0
        )
        # without fc_gamma.2's bias, like the neighbour logits in forward (softmax-invariant)
        global_hidden = torch.relu(gamma1(q - self.w_k_global(z)))
        return CrossAttentionTables(
            anchors=encoding.anchors,
            anchor_table=torch.cat([gamma_part, value_part], dim=-1).contiguous(),
            fused_weight=fused,
            global_logits=F.linear(global_hidden, self.fc_gamma[2].weight)[:, 0],
            global_value=self.w_v_global(z)[:, 0],
        )

    def forward(
        self, query_xyz: torch.Tensor, encoding: AnchorEncoding, tables: CrossAttentionTables | None = None
    ) -> torch.Tensor:
        """query_xyz (B, Q, 3) -> (B, Q, C). ``tables``: :meth:`tables` of ``encoding`` when
        the caller decodes several chunks against the same encoding.

        A softmax over the k + 1 tokens [k neighbours, global], computed without
        materialising the global token per query: its attention logits and value do not
        depend on the query point (zero position encoding, query vector from z alone)."""
        t = self.tables(encoding) if tables is None else tables
        C = t.global_value.shape[-1]
        inplace = not torch.is_grad_enabled()
        nbr = nearest_anchor_indices(query_xyz, t.anchors, self.k)  # (B, Q, k)
        rel = query_xyz.unsqueeze(2) - gather_points(t.anchors, nbr)  # (B, Q, k, 3)
        delta1 = self.fc_delta[0]
        if inplace and not torch.is_autocast_enabled(rel.device.type) and rel.dtype == delta1.weight.dtype:
            # Inference in full precision: the three (B*Q*k, .) blocks go into buffers kept
            # in the tables, so chunk after chunk reuses warm memory instead of fresh pages.
            pairs = nbr.numel()
            hidden = torch.addmm(
                delta1.bias, rel.reshape(-1, 3), delta1.weight.t(), out=t.buffer("hidden", pairs, C)
            ).clamp_min_(0)
            rows = _gather_rows(t.anchor_table, nbr, out=t.buffer("rows", pairs, 2 * C))
            both = rows.addmm_(hidden, t.fused_weight.t())
            gamma_hidden = both[:, :C].clamp_min_(0)
            logits = torch.mm(gamma_hidden, self.fc_gamma[2].weight.t(), out=t.buffer("logits", pairs, C))
            logits, value = logits.view(*nbr.shape, C), both[:, C:].view(*nbr.shape, C)
        else:  # autograd, or autocast (which only casts out-of-place ops)
            hidden = delta1(rel).clamp_min(0).reshape(-1, C)
            rows = gather_points(t.anchor_table, nbr).reshape(-1, 2 * C)
            both = torch.addmm(rows, hidden, t.fused_weight.t()).view(*nbr.shape, 2 * C)
            gamma_hidden, value = both[..., :C].clamp_min(0), both[..., C:]  # value = v + delta
            logits = F.linear(gamma_hidden, self.fc_gamma[2].weight)  # (B, Q, k, C)
        # (fc_gamma.2 is applied without its bias: a per-channel constant added to all k + 1
        # logits cancels in the softmax; the global logits are taken without it too)

        g_logits = t.global_logits.unsqueeze(1).to(logits.dtype)  # (B, 1, C)
        peak = torch.maximum(logits.amax(dim=2), g_logits)  # (B, Q, C)
        g_weight = torch.exp(g_logits - peak)
        g_value = t.global_value.unsqueeze(1).to(logits.dtype)
        if inplace:
            weights = logits.sub_(peak.unsqueeze(2)).exp_()
            denominator = weights.sum(dim=2).add_(g_weight)
            numerator = weights.mul_(value).sum(dim=2).addcmul_(g_weight, g_value)
            return numerator.div_(denominator)
        weights = torch.exp(logits - peak.unsqueeze(2))
        numerator = (weights * value).sum(dim=2) + g_weight * g_value
        return numerator / (weights.sum(dim=2) + g_weight)


def _gather_rows(table: torch.Tensor, indices: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` (B, M, D) at ``indices`` (B, ...) written into ``out`` (n, D)."""
    B, M, D = table.shape
    offsets = torch.arange(B, device=indices.device).view(B, *([1] * (indices.dim() - 1))) * M
    return torch.index_select(table.reshape(B * M, D), 0, (indices + offsets).reshape(-1), out=out)


def nearest_anchor_indices(queries: torch.Tensor, anchors: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, Q, k) of the k nearest anchors (B, M, 3) to each query (B, Q, 3), in no
    particular order (the attention is a sum over them). Same neighbour sets as
    :func:`knn_indices`; squared distances accumulated per coordinate on (Q, M) planes,
    about twice as fast for the decoder's small anchor set."""
    dist_sq = None
    with torch.no_grad():
        for c in range(3):
            diff = queries[..., c].unsqueeze(2) - anchors[..., c].unsqueeze(1)
            dist_sq = diff * diff if dist_sq is None else dist_sq.addcmul_(diff, diff)
        return torch.topk(dist_sq, k, dim=-1, largest=False, sorted=False).indices


class ResnetBlockFC(nn.Module):
    """``x + fc_1(relu(fc_0(relu(x))))``; ``fc_1`` starts at zero so a fresh block is the identity."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc_0 = nn.Linear(dim, dim)
        self.fc_1 = nn.Linear(dim, dim)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc_1(torch.relu(self.fc_0(torch.relu(x))))


class PointTransformerOccDecoder(nn.Module):
    """R's occupancy decoder (``PointTransformerDecoderOcc`` with ``return_feature=True``):
    cross-attention to the 9 nearest anchors (200-d), concatenated with the 64-d per-query
    feature, then ``init_enc`` and 5 ResNet-FC blocks of width 32 conditioned on the attention
    output, then ``fc_out`` -> one occupancy **logit** per query (no activation before it)."""

    def __init__(
        self,
        latent_dim: int = 256,
        dim: int = 200,
        k: int = 9,
        query_feat_dim: int = 64,
        hidden_dim: int = 32,
        num_blocks: int = 5,
        query_chunk: int = DECODER_QUERY_CHUNK,
    ):
        super().__init__()
        self.query_feat_dim = query_feat_dim
        self.query_chunk = query_chunk
        self.ct1 = AnchorCrossAttention(latent_dim, dim, k)
        self.init_enc = nn.Linear(dim + query_feat_dim, hidden_dim)
        self.blocks = nn.ModuleList(ResnetBlockFC(hidden_dim) for _ in range(num_blocks))
        self.fc_c = nn.ModuleList(nn.Linear(dim, hidden_dim) for _ in range(num_blocks))
        self.fc_out = nn.Linear(hidden_dim, 1)

    def forward(self, queries: torch.Tensor, encoding: AnchorEncoding) -> torch.Tensor:
        """queries (B, Q, 3 + query_feat_dim) = [xyz in the anchors' frame, features]
        -> logits (B, Q, 1). Queries are decoded in chunks to bound memory."""
        if queries.dim() != 3 or queries.shape[-1] != 3 + self.query_feat_dim:
            raise ValueError(
                f"decoder queries must be (B, Q, {3 + self.query_feat_dim}), got {tuple(queries.shape)}"
            )
        if queries.shape[1] == 0:
            return queries.new_zeros(queries.shape[0], 0, 1)
        tables = self.ct1.tables(encoding)
        # the 5 conditioning projections fc_c of the attention output as one matmul
        fc_c_weight = torch.cat([m.weight for m in self.fc_c], dim=0)
        fc_c_bias = torch.cat([m.bias for m in self.fc_c], dim=0)
        # attention in chunks of query_chunk (its (chunk, k, 2C) blocks should stay in cache),
        # the narrow MLP tail on blocks of at least MLP_TAIL_BLOCK queries (per-call overhead)
        block = max(self.query_chunk, MLP_TAIL_BLOCK)
        outputs = []
        for s in range(0, queries.shape[1], block):
            part = queries[:, s : s + block]
            attended = [
                self.ct1(part[:, c : c + self.query_chunk, :3], encoding, tables)
                for c in range(0, part.shape[1], self.query_chunk)
            ]
            attended = torch.cat(attended, dim=1) if len(attended) > 1 else attended[0]
            outputs.append(self._mlp_tail(attended, part[..., 3:], fc_c_weight, fc_c_bias))
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]

    @torch.no_grad()
    def trailing_input_affine(self, n_trailing: int) -> tuple[float, float] | None:
        """(a, b) when the decoder's logit is ``a * v + b`` for queries whose last
        ``n_trailing`` feature columns all hold the same value v, whatever the other inputs
        and the anchors (R built around I's occupancy and never trained past
        ``identity_init_ref_decoder``, ours); None otherwise. Exact: hidden channel 0 reads
        only those columns, no conditioning or ResNet increment reaches it, and ``fc_out``
        reads channel 0 alone."""
        w = self.init_enc.weight
        if not 0 < n_trailing <= w.shape[1]:
            raise ValueError(f"n_trailing must lie in 1..{w.shape[1]}, got {n_trailing}")
        passes = (
            bool(torch.all(w[0, : w.shape[1] - n_trailing] == 0))
            and all(bool(torch.all(fc.weight[0] == 0)) and float(fc.bias[0]) == 0.0 for fc in self.fc_c)
            and all(
                bool(torch.all(b.fc_1.weight[0] == 0)) and float(b.fc_1.bias[0]) == 0.0 for b in self.blocks
            )
            and bool(torch.all(self.fc_out.weight[0, 1:] == 0))
        )
        if not passes:
            return None
        out_w, out_b = float(self.fc_out.weight[0, 0]), float(self.fc_out.bias[0])
        slope = float(w[0, w.shape[1] - n_trailing :].double().sum())
        return out_w * slope, out_w * float(self.init_enc.bias[0]) + out_b

    def _mlp_tail(
        self,
        attended: torch.Tensor,
        query_feats: torch.Tensor,
        fc_c_weight: torch.Tensor,
        fc_c_bias: torch.Tensor,
    ) -> torch.Tensor:
        net = self.init_enc(torch.cat([attended, query_feats.to(attended.dtype)], dim=-1))
        conditioning = F.linear(attended, fc_c_weight, fc_c_bias).chunk(len(self.blocks), dim=-1)
        for cond, block in zip(conditioning, self.blocks, strict=True):
            net = block(net + cond)
        return self.fc_out(net)
