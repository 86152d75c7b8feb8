"""Network K: keypoint refinement from an image crop and 2 x 21 camera-frame keypoints.

Frames and units of K (official convention): ``halo`` joint order, **millimetres**, camera
frame, both hands relative to the **left hand's middle MCP** (``halo`` joint 4). The pure
functions below convert between that and our public keypoints (``mano`` order, camera frame,
metres, :class:`~core.types.TwoHandKeypoints`):

* :func:`keypoints_to_kpts_ref_input` / :func:`kpts_ref_output_to_keypoints` -- our pipeline;
* :func:`official_kpts_ref_input` / :func:`official_generate_world` -- the official dataset
  preprocessing and ``kpts_ref_generate.py`` post-processing, kept only to check against
  the golden vectors (the latter never subtracts T, quirk Q9);
* :func:`camera_to_world` -- the correct inverse of ``x_cam = R x_world + T``.

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

from core.errors import ImageError, KeypointError
from core.hand.joints import HALO_MIDDLE_MCP, NUM_JOINTS, convert_joints
from core.models.config import EncoderConfig
from core.models.gcn import DualGraphLayer, hand_joint_adjacency
from core.models.image_encoder import build_image_encoder
from core.types import TwoHandKeypoints

MM_PER_M = 1000.0
CROP_SIZE = 256  # K's image input: the 256 x 256 hand crop (64 x 64 feature map)


# --------------------------------------------------------------------------------------
# Pure conversions (numpy, float64)
# --------------------------------------------------------------------------------------


@dataclass
class KptsRefInput:
    """K's input for a batch: ``halo`` order, mm, camera frame, relative to ``origin_cam_m``
    (the left hand's middle MCP in camera-frame metres)."""

    left_mm: np.ndarray  # (B, 21, 3)
    right_mm: np.ndarray  # (B, 21, 3)
    origin_cam_m: np.ndarray  # (B, 1, 3)


def _check_hand(name: str, joints: np.ndarray) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-2:] != (NUM_JOINTS, 3):
        raise KeypointError(f"{name} keypoints must have shape (..., 21, 3), got {joints.shape}")
    if not np.all(np.isfinite(joints)):
        raise KeypointError(f"{name} keypoints contain NaN or infinite values")
    return joints


def keypoints_to_kpts_ref_input(left_cam_m: np.ndarray, right_cam_m: np.ndarray) -> KptsRefInput:
    """Both hands, ``mano`` order, camera frame, metres ((21, 3) or (B, 21, 3)) -> K input."""
    left = convert_joints(_check_hand("left", left_cam_m), "mano", "halo")
    right = convert_joints(_check_hand("right", right_cam_m), "mano", "halo")
    if left.shape != right.shape:
        raise KeypointError(f"left and right keypoints differ in shape: {left.shape} vs {right.shape}")
    if left.ndim == 2:
        left, right = left[None], right[None]
    origin = left[:, HALO_MIDDLE_MCP : HALO_MIDDLE_MCP + 1, :]
    return KptsRefInput(
        left_mm=(left - origin) * MM_PER_M,
        right_mm=(right - origin) * MM_PER_M,
        origin_cam_m=origin.copy(),
    )


def kpts_ref_output_to_keypoints(joints_mm: np.ndarray, origin_cam_m: np.ndarray) -> np.ndarray:
    """K output of one hand ((B, 21, 3), ``halo`` order, mm relative to ``origin_cam_m``)
    -> ``mano`` order, camera frame, metres."""
    joints_m = np.asarray(joints_mm, dtype=np.float64) / MM_PER_M + np.asarray(origin_cam_m, dtype=np.float64)
    return convert_joints(joints_m, "halo", "mano")


def camera_to_world(points_cam_m: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Inverse of ``x_cam = R x_world + T`` for row-vector points (..., 3); batched R (B, 3, 3)
    and T (B, 3) apply to points (B, N, 3)."""
    p = np.asarray(points_cam_m, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    if R.ndim == 3:
        return np.einsum("bnj,bji->bni", p - T[:, None, :], R)
    return (p - T) @ R


def _mirror_x(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0, 1.0])


def official_kpts_ref_input(
    joints_dataset: dict[str, np.ndarray],
    root_xyz: dict[str, np.ndarray],
    cam_R: np.ndarray,
    cam_T: np.ndarray,
) -> KptsRefInput:
    """The official K preprocessing (golden check only).

    ``joints_dataset[side]`` (B, 21, 3): wrist-relative, ``halo`` order, left x-mirrored,
    world metres; ``root_xyz[side]`` (B, 3): wrist in world metres (left x-negated);
    ``cam_R`` (B, 3, 3), ``cam_T`` (B, 3): world -> camera."""
    R = np.asarray(cam_R, dtype=np.float64)
    T = np.asarray(cam_T, dtype=np.float64)
    cam = {}
    for side in ("left", "right"):
        world = np.asarray(joints_dataset[side], dtype=np.float64) + np.asarray(root_xyz[side])[:, None, :]
        if side == "left":
            world = _mirror_x(world)
        cam[side] = np.einsum("bij,bnj->bni", R, world) + T[:, None, :]
    origin = cam["left"][:, HALO_MIDDLE_MCP : HALO_MIDDLE_MCP + 1, :]
    return KptsRefInput(
        left_mm=(cam["left"] - origin) * MM_PER_M,
        right_mm=(cam["right"] - origin) * MM_PER_M,
        origin_cam_m=origin,
    )


def official_generate_world(
    joints_mm: np.ndarray, origin_cam_m: np.ndarray, cam_R: np.ndarray, root_xyz: np.ndarray, side: str
) -> np.ndarray:
    """``kpts_ref_generate.py`` post-processing, **with its quirk Q9** (golden check only):
    ``(out / 1000 + origin) @ R + root_xyz`` (left: ``root_xyz * (-1, 1, 1)``). T is never
    subtracted and the order stays ``halo``; use :func:`kpts_ref_output_to_keypoints` and
    :func:`camera_to_world` for correct coordinates."""
    cam = np.asarray(joints_mm, dtype=np.float64) / MM_PER_M + np.asarray(origin_cam_m, dtype=np.float64)
    rotated = np.einsum("bnj,bji->bni", cam, np.asarray(cam_R, dtype=np.float64))
    root = np.asarray(root_xyz, dtype=np.float64)
    if side == "left":
        root = _mirror_x(root)
    return rotated + root[:, None, :]


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
