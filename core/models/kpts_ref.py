"""Network K: keypoint refinement from an image crop and 2 x 21 camera-frame keypoints.

Frames and units of K: :mod:`core.geometry.kpts_frame` (``halo`` order, millimetres, camera
frame, relative to the left hand's middle MCP) with the conversions from and to our keypoints.

:class:`KeypointRefiner` is the network (official ``ArticulatedHandNetKptsRef``; state-dict
keys identical). Quirk Q8 -- the official code regresses the right hand with ``left_reg`` --
is reproduced only when ``KptsRefConfig.right_uses_left_regressor`` is on (as in
:meth:`KptsRefConfig.official`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.errors import ImageError
from core.geometry.kpts_frame import keypoints_to_kpts_ref_input, kpts_ref_output_to_keypoints
from core.hand.joints import NUM_JOINTS
from core.models.config import EncoderConfig
from core.models.gcn import DualGraphLayer, hand_joint_adjacency
from core.models.image_encoder import build_image_encoder
from core.types import TwoHandKeypoints

CROP_SIZE = 256  # K's image input: the 256 x 256 hand crop (64 x 64 feature map)


# --------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KptsRefConfig:
    """Network K. Defaults are the official sizes; Q8 is off unless asked for."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    joint_id_dim: int = 16  # {side}_id_emb
    point_hidden_dim: int = 32  # {side}_pt_emb
    point_dim: int = 32
    graph_dim: int = 16  # channels each DualGraphLayer adds
    grid_f_dims: tuple[int, ...] = (64, 82, 96, 112)  # image-token width per layer
    image_feature_dim: int = 256  # img_proj_layer output channels
    unused_feature_dim: int = 32  # img_final_layer (dead in the official net; kept for checkpoints)
    grid_size: int = 8  # 64 px map / 8 = patch 8 -> 64 tokens
    n_heads: int = 4
    reg_hidden_dim: int = 32
    dropout: float = 0.01
    right_uses_left_regressor: bool = False  # official quirk Q8 when True
    # Skeleton graph of the GCN layers: False = the official directed parent->child matrix (each
    # joint aggregates only its descendants); True = edges both ways (ours, the default of our
    # training, see core.training.netconfigs). Not a weight: stored in the checkpoint's config,
    # and configs without it (official, earlier ones) mean directed.
    undirected_graph: bool = False

    @classmethod
    def official(cls) -> KptsRefConfig:
        """The published network as it runs (quirk Q8 on; golden-exact)."""
        return cls(right_uses_left_regressor=True)

    @property
    def joint_feature_dim(self) -> int:
        return self.joint_id_dim + self.point_dim

    @property
    def layer_dims(self) -> tuple[int, ...]:
        """Joint-feature width before each layer and after the last (48, 64, 80, 96, 112)."""
        d0 = self.joint_feature_dim
        return tuple(d0 + i * self.graph_dim for i in range(len(self.grid_f_dims) + 1))


@dataclass
class KptsRefOutput:
    """K output: ``halo`` order, mm, same frame as the input (absolute, not offsets)."""

    left_mm: torch.Tensor  # (B, 21, 3)
    right_mm: torch.Tensor  # (B, 21, 3)
    layer_features: list[tuple[torch.Tensor, torch.Tensor]]  # (left, right) after each layer


def _pointwise_mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """1x1 Conv1d MLP over joints; indices 0 and 3 hold weights (official key layout)."""
    return nn.Sequential(
        nn.Conv1d(in_dim, hidden, 1), nn.ReLU(), nn.Dropout(dropout), nn.Conv1d(hidden, out_dim, 1)
    )


class KeypointRefiner(nn.Module):
    """Network K (official ``ArticulatedHandNetKptsRef``)."""

    def __init__(self, cfg: KptsRefConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or KptsRefConfig()
        enc = cfg.encoder
        self.image_encoder = build_image_encoder(enc)
        proj_in = enc.layer1_channels + 2 * enc.fmap_dim
        self.img_proj_layer = nn.Conv2d(proj_in, cfg.image_feature_dim, 1)
        self.img_final_layer = nn.Conv2d(cfg.image_feature_dim, cfg.unused_feature_dim, 1)  # unused (Q12)
        self.left_id_emb = nn.Embedding(NUM_JOINTS, cfg.joint_id_dim)
        self.right_id_emb = nn.Embedding(NUM_JOINTS, cfg.joint_id_dim)
        self.left_pt_emb = _pointwise_mlp(3, cfg.point_hidden_dim, cfg.point_dim, cfg.dropout)
        self.right_pt_emb = _pointwise_mlp(3, cfg.point_hidden_dim, cfg.point_dim, cfg.dropout)
        dims = cfg.layer_dims
        adjacency = hand_joint_adjacency(undirected=cfg.undirected_graph)
        self.gcn_layers = nn.ModuleList(
            [
                DualGraphLayer(
                    dims[i],
                    grid_f_dim,
                    graph_dim=cfg.graph_dim,
                    img_f_dim=cfg.image_feature_dim,
                    grid_size=cfg.grid_size,
                    n_heads=cfg.n_heads,
                    dropout=cfg.dropout,
                    adjacency=adjacency,
                )
                for i, grid_f_dim in enumerate(cfg.grid_f_dims)
            ]
        )
        self.left_reg = _pointwise_mlp(dims[-1], cfg.reg_hidden_dim, 3, cfg.dropout)
        self.right_reg = _pointwise_mlp(dims[-1], cfg.reg_hidden_dim, 3, cfg.dropout)

    # -- pieces --------------------------------------------------------------------------

    def encoder_maps(self, img: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, 256, 256) -> ``cat(layer1, hms_fmaps[-1], dp_fmaps[-1])``
        (B, C, 64, 64), the input of ``img_proj_layer``."""
        enc = self.image_encoder(img)
        return torch.cat([enc.img_fmaps[-1], enc.hms_fmaps[-1], enc.dp_fmaps[-1]], dim=1)

    def image_features(self, img: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, 256, 256) -> K's feature map (B, 256, 64, 64) =
        ``img_proj_layer(encoder_maps(img))``."""
        return self.img_proj_layer(self.encoder_maps(img))

    def joint_features(self, side: str, joints_mm: torch.Tensor) -> torch.Tensor:
        """(B, 21, 3) mm -> (B, 21, 48) = [joint-id embedding, point embedding]."""
        id_emb: nn.Embedding = getattr(self, f"{side}_id_emb")
        pt_emb: nn.Sequential = getattr(self, f"{side}_pt_emb")
        ids = id_emb.weight.unsqueeze(0).expand(joints_mm.shape[0], -1, -1)
        points = pt_emb(joints_mm.transpose(1, 2)).transpose(1, 2)
        return torch.cat([ids, points], dim=-1)

    def regress(self, side: str, joint_feats: torch.Tensor) -> torch.Tensor:
        """(B, 21, 112) -> (B, 21, 3) mm; the right hand goes through ``left_reg`` under Q8."""
        use_left = side == "left" or self.cfg.right_uses_left_regressor
        reg: nn.Sequential = self.left_reg if use_left else self.right_reg
        return reg(joint_feats.transpose(1, 2)).transpose(1, 2)

    # -- forward ---------------------------------------------------------------------------

    def forward(
        self,
        img: torch.Tensor,
        left_mm: torch.Tensor,
        right_mm: torch.Tensor,
        img_feat: torch.Tensor | None = None,
    ) -> KptsRefOutput:
        """img (B, 3, 256, 256) normalised; left_mm / right_mm (B, 21, 3) K input (see module
        docstring). ``img_feat`` (from :meth:`image_features`) skips the encoder."""
        if img_feat is None:
            img_feat = self.image_features(img)
        dtype = img_feat.dtype
        left = self.joint_features("left", left_mm.to(dtype))
        right = self.joint_features("right", right_mm.to(dtype))
        layer_features = []
        for layer in self.gcn_layers:
            left, right = layer(left, right, img_feat)
            layer_features.append((left, right))
        return KptsRefOutput(
            left_mm=self.regress("left", left),
            right_mm=self.regress("right", right),
            layer_features=layer_features,
        )

    @torch.no_grad()
    def refine(self, img: torch.Tensor, keypoints: TwoHandKeypoints) -> TwoHandKeypoints:
        """Refined keypoints for one image (our public frames: ``mano``, camera, metres).

        ``img``: the normalised 256 x 256 crop (3, H, W) or (1, 3, H, W) whose camera frame
        the keypoints are in (K never projects, so the crop intrinsics do not matter).
        K needs both hands (the frame origin is the left middle MCP and both graphs run):
        when a hand is missing, the input is returned unchanged (a copy)."""
        if keypoints.left is None or keypoints.right is None:
            return keypoints.copy()
        if img.dim() == 3:
            img = img.unsqueeze(0)
        if tuple(img.shape) != (1, 3, CROP_SIZE, CROP_SIZE):
            raise ImageError(
                f"network K needs one normalised {CROP_SIZE} x {CROP_SIZE} RGB crop "
                f"(3, {CROP_SIZE}, {CROP_SIZE}), got shape {tuple(img.shape)}"
            )
        k_in = keypoints_to_kpts_ref_input(keypoints.left, keypoints.right)
        param = next(self.parameters())
        as_tensor = lambda a: torch.as_tensor(a, dtype=param.dtype, device=param.device)
        img = img.to(device=param.device, dtype=param.dtype)
        was_training = self.training
        self.eval()  # inference: dropout off, BatchNorm on running statistics
        try:
            out = self(img, as_tensor(k_in.left_mm), as_tensor(k_in.right_mm))
        finally:
            self.train(was_training)
        to_np = lambda t: t.detach().cpu().numpy().astype(np.float64)
        return TwoHandKeypoints(
            left=kpts_ref_output_to_keypoints(to_np(out.left_mm), k_in.origin_cam_m)[0],
            right=kpts_ref_output_to_keypoints(to_np(out.right_mm), k_in.origin_cam_m)[0],
        )
