"""Network I (official ``ArticulatedHandNetInitOcc``): per-hand occupancy in the HALO
canonical frame, conditioned on the image by query-image attention.

Per hand side s and query point p (canonical normalised units):

1. p -> camera frame metres (:func:`core.geometry.camera_ops.canonical_to_camera`), then a
   depth reference is subtracted from z (``InitOccConfig.depth_reference``: the official
   "first_query" = z of query 0 of the call, quirk Q2; or "wrist");
2. token = [x_cam (3), s_pt_embeddings(x_cam) (16)] -> ``img_ex_s`` against the 16 patch
   tokens of the 32 x 64 x 64 image feature map -> 19-d image feature;
3. ``s_decoder`` (HALO part decoder) on p / 0.4 with the 19-d feature injected at layer 2
   -> 16 part logits -> sigmoid -> max over parts.

Use :meth:`InitOccNet.encode_image` once per image and :meth:`InitOccNet.query` for any
number of points (chunked); ``forward`` does both for the two hands.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ImageError, InputError
from core.geometry import camera_ops
from core.geometry.canonical import HaloInputs
from core.hand.joints import HAND_SIDES
from core.hand.mirror import mirror_if_left
from core.models.attention import ImgEx
from core.models.config import InitOccConfig
from core.models.halo_decoder import HaloPartDecoder, occupancy_from_logits
from core.models.image_encoder import IMAGE_SIZE, ImageEncoding, build_image_encoder
from core.models.pixel_sampling import sample_pixel_features


@dataclass
class HandInputs:
    """Per-hand network inputs for a batch of B images (official names in brackets).

    ``unpose_mats`` (B, 16, 4, 4) [inputs]: Im2Hands part matrices (include the extra S(0.4));
    ``bone_lengths`` (B, 16) metres; ``root_rot_mat`` (B, 4, 4): posed -> canonical rotation;
    ``root_xyz`` (B, 3): wrist, metres, **x negated for left hands** (official convention);
    ``cam_R`` (B, 3, 3), ``cam_T`` (B, 3): world -> camera, metres.
    """

    unpose_mats: torch.Tensor
    bone_lengths: torch.Tensor
    root_rot_mat: torch.Tensor
    root_xyz: torch.Tensor
    cam_R: torch.Tensor
    cam_T: torch.Tensor

    @classmethod
    def from_camera_frame(cls, halo: HaloInputs, wrist_cam_m: torch.Tensor, device) -> HandInputs:
        """The inputs of one hand whose keypoints are in the camera frame (world = camera:
        ``cam_R`` = I, ``cam_T`` = 0): ``halo`` its canonicalisation (batch B), ``wrist_cam_m``
        (B, 3) its wrist. The one constructor of the engine and the training batches."""
        f32 = dict(dtype=torch.float32, device=device)
        batch = wrist_cam_m.shape[0]
        return cls(
            unpose_mats=halo.unpose_mats.to(device=device),
            bone_lengths=halo.bone_lengths.to(**f32),
            root_rot_mat=halo.root_rot_mat.to(**f32),
            root_xyz=mirror_if_left(wrist_cam_m, halo.side).to(**f32),
            cam_R=torch.eye(3, **f32).expand(batch, 3, 3).contiguous(),
            cam_T=torch.zeros(batch, 3, **f32),
        )

    def to(self, device: torch.device | str) -> HandInputs:
        return HandInputs(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def batch_size(self) -> int:
        return int(self.unpose_mats.shape[0])

    def validate(self) -> None:
        B = self.batch_size
        expected = {
            "unpose_mats": (B, 16, 4, 4),
            "bone_lengths": (B, 16),
            "root_rot_mat": (B, 4, 4),
            "root_xyz": (B, 3),
            "cam_R": (B, 3, 3),
            "cam_T": (B, 3),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if tuple(value.shape) != shape:
                raise InputError(f"hand input {name} must have shape {shape}, got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise InputError(f"hand input {name} contains NaN or infinite values")


@dataclass
class InitOccImageFeatures:
    """Everything I needs from one batch of images, computed once and reused per query."""

    feature_map: torch.Tensor  # (B, 32, 64, 64) image_final_layer output
    image_tokens: dict[str, torch.Tensor]  # side -> (B, 16, 32) img_ex encoder tokens
    encoding: ImageEncoding | None = None  # the raw image-encoder outputs (kept on request)
    cam_K: torch.Tensor | None = None  # (B, 3, 3) crop intrinsics (needed by pixel_feature)


@dataclass
class InitOccQueryResult:
    """I's output for one hand with the intermediate values (for tests and training)."""

    occupancy: torch.Tensor  # (B, N) max over parts of the part probabilities
    part_probs: torch.Tensor  # (B, N, 16)
    query_cam: torch.Tensor  # (B, N, 3) camera metres, depth reference subtracted from z
    image_feature: torch.Tensor  # (B, N, 19) img_ex output


def _check_image(img: torch.Tensor) -> None:
    if img.dim() != 4 or tuple(img.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ImageError(
            f"network I expects (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) normalised images, got {tuple(img.shape)}"
        )


def _final_layer_input(encoding: ImageEncoding) -> torch.Tensor:
    return torch.cat([encoding.hms_fmaps[-1], encoding.dp_fmaps[-1]], dim=1)


class PointEmbedding(nn.Sequential):
    """Official ``{side}_pt_embeddings``: Conv1d(3, 32, 1), ReLU, Dropout, Conv1d(32, 16, 1),
    applied here to (B, N, 3) point rows (a 1x1 conv is a linear map per point)."""

    def __init__(self, hidden: int, out: int, dropout: float):
        super().__init__(nn.Conv1d(3, hidden, 1), nn.ReLU(), nn.Dropout(dropout), nn.Conv1d(hidden, out, 1))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        first, _, dropout, last = self
        h = F.relu(F.linear(points, first.weight[..., 0], first.bias))
        return F.linear(dropout(h), last.weight[..., 0], last.bias)


# the pixel_feature option's per-side projections (module names; ours, not in official checkpoints)
PIXEL_PROJECTIONS = {side: f"{side}_pixel_proj" for side in HAND_SIDES}


class InitOccNet(nn.Module):
    """Network I. State-dict keys match the official checkpoint (``strict=True``)."""

    def __init__(self, cfg: InitOccConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or InitOccConfig()
        self.image_encoder = build_image_encoder(cfg.encoder)
        self.image_final_layer = nn.Conv2d(2 * cfg.encoder.fmap_dim, cfg.image_feature_dim, 1)
        self.left_pt_embeddings = PointEmbedding(cfg.pt_embedding_hidden, cfg.pt_embedding_dim, cfg.dropout)
        self.right_pt_embeddings = PointEmbedding(cfg.pt_embedding_hidden, cfg.pt_embedding_dim, cfg.dropout)
        self.img_ex_left = ImgEx(cfg.img_ex)
        self.img_ex_right = ImgEx(cfg.img_ex)
        self.left_decoder = HaloPartDecoder(cfg.decoder)
        self.right_decoder = HaloPartDecoder(cfg.decoder)
        if cfg.pixel_feature:  # ours (InitOccConfig.pixel_feature); official keys unchanged
            for name in PIXEL_PROJECTIONS.values():
                setattr(self, name, nn.Linear(cfg.image_feature_dim, cfg.img_ex.verts_f_dim))
            zero_pixel_projections(self)

    # --- per-side submodules ------------------------------------------------------------
    def _side(self, side: str) -> tuple[PointEmbedding, ImgEx, HaloPartDecoder]:
        if side not in HAND_SIDES:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        return (
            getattr(self, f"{side}_pt_embeddings"),
            getattr(self, f"img_ex_{side}"),
            getattr(self, f"{side}_decoder"),
        )

    # --- image ----------------------------------------------------------------------------
    def encode_image(
        self, img: torch.Tensor, keep_encoding: bool = False, cam_K: torch.Tensor | None = None
    ) -> InitOccImageFeatures:
        """img (B, 3, 256, 256), ImageNet-normalised (see ``normalize_image``); ``cam_K``
        (B, 3, 3) the crops' intrinsics (needed with ``pixel_feature``)."""
        _check_image(img)
        encoding = self.image_encoder(img)
        features = self.features_from_maps(_final_layer_input(encoding), cam_K)
        if keep_encoding:
            features.encoding = encoding
        return features

    def encoder_maps(self, img: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, 256, 256) -> ``cat(hms_fmaps[-1], dp_fmaps[-1])``
        (B, 2 * fmap_dim, 64, 64), the input of ``image_final_layer``: all that I reads from
        its image encoder (so a frozen encoder's part can be cached per crop)."""
        _check_image(img)
        return _final_layer_input(self.image_encoder(img))

    def features_from_maps(
        self, maps: torch.Tensor, cam_K: torch.Tensor | None = None
    ) -> InitOccImageFeatures:
        """:meth:`encoder_maps` output (and the crops' intrinsics) -> the features the queries
        read."""
        if self.cfg.pixel_feature and cam_K is None:
            raise InputError("network I with pixel_feature needs the crop intrinsics cam_K")
        fmap = self.image_final_layer(maps)
        tokens = {side: self._side(side)[1].encode(fmap) for side in HAND_SIDES}
        return InitOccImageFeatures(fmap, tokens, cam_K=cam_K)

    # --- queries --------------------------------------------------------------------------
    def camera_points(self, side: str, hand: HandInputs, p: torch.Tensor) -> torch.Tensor:
        """Canonical normalised p (B, N, 3) -> camera frame metres (B, N, 3)."""
        return camera_ops.canonical_to_camera(
            p, hand.root_rot_mat, hand.root_xyz, hand.cam_R, hand.cam_T, side, self.cfg.global_scale
        )

    def reference_depth(
        self, side: str, hand: HandInputs, p: torch.Tensor, depth_reference: str | None = None
    ) -> torch.Tensor:
        """(B,) camera z subtracted from the query depths (``depth_reference``: None = the
        config's, see ``InitOccConfig.depth_reference``)."""
        if (depth_reference or self.cfg.depth_reference) == "wrist":
            return camera_ops.wrist_to_camera(hand.root_xyz, hand.cam_R, hand.cam_T, side)[:, 2]
        return self.camera_points(side, hand, p[:, :1])[:, 0, 2]  # quirk Q2: query 0 of the call

    def part_logits_from_camera(
        self,
        features: InitOccImageFeatures,
        side: str,
        hand: HandInputs,
        p: torch.Tensor,
        query_cam: torch.Tensor,
        points_cam: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder logits (B, N, 16) and the 19-d image feature (B, N, 19) for canonical
        points p whose depth-relative camera coordinates are ``query_cam`` (and whose true
        camera coordinates, for ``pixel_feature``, are ``points_cam``). (Split out so R's
        penetration path can feed one hand's camera points to the other hand's branch.)"""
        pt_embeddings, img_ex, decoder = self._side(side)
        tokens = torch.cat([query_cam, pt_embeddings(query_cam)], dim=-1)  # (B, N, 19)
        image_feature = img_ex.attend(features.image_tokens[side], tokens)
        if self.cfg.pixel_feature:
            image_feature = image_feature + self.pixel_feature(features, side, points_cam)
        logits = decoder(p / self.cfg.global_scale, hand.unpose_mats, hand.bone_lengths, image_feature)
        return logits, image_feature

    def pixel_feature(
        self, features: InitOccImageFeatures, side: str, points_cam: torch.Tensor | None
    ) -> torch.Tensor:
        """The pixel-aligned term (B, N, 19) of ``pixel_feature``: the 32-channel map sampled
        bilinearly where camera points (B, N, 3) project into the crop (zero outside it)."""
        if points_cam is None or features.cam_K is None:
            raise InputError("network I with pixel_feature needs camera points and the crop intrinsics")
        sampled = sample_pixel_features(features.feature_map, points_cam, features.cam_K)
        return getattr(self, PIXEL_PROJECTIONS[side])(sampled)

    def query(
        self,
        features: InitOccImageFeatures,
        side: str,
        hand: HandInputs,
        p: torch.Tensor,
        chunk_size: int | None = 32768,
        details: bool = False,
        depth_reference: str | None = None,
    ) -> torch.Tensor | InitOccQueryResult:
        """Occupancy (B, N) of canonical normalised points p (B, N, 3) for one hand.

        Points are evaluated ``chunk_size`` at a time (None: all at once). The depth
        reference is fixed once per call, so the result does not depend on ``chunk_size``;
        ``depth_reference`` overrides the config's for this call ("wrist" makes the result
        independent of how the caller batches points, unlike the reference's Q2).
        With ``details`` returns an :class:`InitOccQueryResult`."""
        if p.dim() != 3 or p.shape[-1] != 3 or p.shape[0] != hand.batch_size or p.shape[1] == 0:
            raise InputError(f"query points must be (B={hand.batch_size}, N>0, 3), got {tuple(p.shape)}")
        p = p.to(torch.float32)
        ref_depth = self.reference_depth(side, hand, p, depth_reference)
        N = p.shape[1]
        step = N if not chunk_size else max(1, int(chunk_size))
        parts = []
        for start in range(0, N, step):
            sub = p[:, start : start + step]
            points_cam = self.camera_points(side, hand, sub)
            query_cam = camera_ops.subtract_depth(points_cam, ref_depth)
            logits, image_feature = self.part_logits_from_camera(
                features, side, hand, sub, query_cam, points_cam
            )
            parts.append((logits, query_cam, image_feature))
        logits, query_cam, image_feature = (torch.cat(t, dim=1) for t in zip(*parts, strict=True))
        occupancy, probs = occupancy_from_logits(logits)
        if details:
            return InitOccQueryResult(occupancy, probs, query_cam, image_feature)
        return occupancy

    def forward(
        self,
        img: torch.Tensor | None,
        hands: dict[str, HandInputs],
        points: dict[str, torch.Tensor],
        chunk_size: int | None = 32768,
        encoder_maps: torch.Tensor | None = None,
        cam_K: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Occupancy per side present in ``hands`` (``{'left': (B, N), 'right': (B, M)}``).
        ``encoder_maps`` (precomputed :meth:`encoder_maps` of the crops) replaces ``img``;
        ``cam_K`` (B, 3, 3): the crops' intrinsics (needed with ``pixel_feature``)."""
        if encoder_maps is not None:
            features = self.features_from_maps(encoder_maps, cam_K)
        else:
            features = self.encode_image(img, cam_K=cam_K)
        return {side: self.query(features, side, hands[side], points[side], chunk_size) for side in hands}


def zero_pixel_projections(net: InitOccNet) -> None:
    """Start ``pixel_feature``'s projections at zero: I then computes what it did without
    them, and the weights still get gradients (their input, the sampled map, is not zero)."""
    with torch.no_grad():
        for name in PIXEL_PROJECTIONS.values():
            proj = getattr(net, name)
            proj.weight.zero_()
            proj.bias.zero_()


def init_weights_official(module: nn.Module) -> None:
    """The official training initialisation (``model.apply``): xavier-normal weights and
    bias 0.01 on every Linear / Conv1d / Conv2d. Load pretrained parts afterwards."""
    if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0.01)
