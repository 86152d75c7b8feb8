"""Network R (official ``ArticulatedHandNetRefOcc``): joint two-hand occupancy refinement.

For each hand, R encodes 512 anchor points sampled on network I's mesh with a shared
AIR-Net point transformer, fuses both hands' latents with a global image vector, and
decodes every query point from: its 9 nearest own-hand anchors, a pixel-aligned image
feature, and I's occupancy at the point. The output is a fresh logit (quirk Q3: not a
residual on I).

Frames (../shared/reference/official_code.md §A.4.1, golden README §6):

* query points ``p``: the hand's HALO canonical frame, normalised units (metres / 0.4);
* anchor points: millimetres, wrist-relative, posed frame (left hand un-mirrored);
* the *network frame* of anchors and queries: camera frame metres with y and z negated,
  minus the bounding-box centre of **both** hands' anchors (per image).

The work splits into cached stages so that mesh extraction never repeats expensive parts:
:meth:`RefOccNet.encode_image` (R's and I's image encoders, once per image),
:meth:`RefOccNet.encode_anchors` (both anchor sets + context fusion, once per anchor set),
then :meth:`RefOccNet.query` per batch of points (optionally with I's occupancies given).
:meth:`RefOccNet.forward` chains them with the official semantics (golden tests).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from core.errors import ImageError, InputError
from core.geometry import camera_ops
from core.geometry.camera_ops import (
    anchors_mm_to_camera,
    bbox_centre,
    camera_to_canonical,
    camera_to_network_frame,
)
from core.hand.joints import HAND_SIDES
from core.models.airnet import AnchorEncoding, PointTransformerEncoder, PointTransformerOccDecoder
from core.models.config import ConfigError, EncoderConfig, InitOccConfig
from core.models.halo_decoder import occupancy_from_logits
from core.models.image_encoder import IMAGE_SIZE, build_image_encoder, upsample_bilinear
from core.models.init_occ import HandInputs, InitOccImageFeatures, InitOccNet
from core.models.pixel_sampling import sample_pixel_features

HAND_LABEL = {"left": (1.0, 0.0), "right": (0.0, 1.0)}  # one-hot appended to anchor features


@dataclass(frozen=True)
class RefOccConfig:
    """Network R. Defaults are the official architecture; ``reference_pen_quirks`` switches
    the penetration (training) path to the official behaviour (quirks Q6, Q7)."""

    init_occ: InitOccConfig = field(default_factory=InitOccConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    image_feature_dim: int = 32  # image_final_layer output channels
    feature_map_size: int = 256  # the 64 px head maps are upsampled to this before sampling
    global_kernel: int = 8  # hms/dp_global_layer kernel = side of the heads' first map
    num_anchors: int = 512
    latent_dim: int = 256
    init_occ_repeat: int = 32  # I's occupancy is repeated this many times in the query feature
    # The reference CUDA FPS never picks anchors within 3.16 cm of the bbox centre; the
    # official weights were trained with it, so it stays on by default.
    fps_skip_near_origin: bool = True
    # Penetration path: Q6 (I evaluates the other hand's canonical points as if they were
    # this hand's) and Q7 (context fusion applied twice). Off = geometrically correct.
    reference_pen_quirks: bool = False
    global_scale: float = 0.4

    def __post_init__(self) -> None:
        if self.image_feature_dim + self.init_occ_repeat != 64:
            raise ConfigError("image_feature_dim + init_occ_repeat must be 64 (the decoder's query feature)")

    @property
    def anchor_feature_dim(self) -> int:
        return self.image_feature_dim + len(HAND_LABEL)

    @classmethod
    def official(cls) -> RefOccConfig:
        """Everything as in the official code, penetration-path quirks included (golden-exact)."""
        return cls(reference_pen_quirks=True)


@dataclass
class RefOccImageFeatures:
    """Per-image features, computed once by :meth:`RefOccNet.encode_image`."""

    feature_map: torch.Tensor  # (B, 32, 256, 256) pixel-aligned features (R's encoder)
    img_global: torch.Tensor  # (B, 256) global image vector
    init_occ: InitOccImageFeatures  # I's own image features


@dataclass
class AnchorContext:
    """Both hands' encoded anchors for one batch of images (:meth:`RefOccNet.encode_anchors`).

    ``centre`` is the bbox centre (camera frame, y/z negated, metres) subtracted from every
    anchor and query coordinate; ``encodings[side].z`` is the encoder's own latent and
    ``z_ctx[side]`` the fused one used by the decoder. ``cam_K`` is the crop intrinsics the
    anchors were projected with; every query of this context samples pixels through it too,
    so it is kept here rather than passed again (and possibly differently) to each query."""

    cam_K: torch.Tensor  # (B, 3, 3)
    centre: torch.Tensor  # (B, 3)
    encoder_inputs: dict[str, torch.Tensor]  # side -> (B, 512, 37)
    encodings: dict[str, AnchorEncoding]
    z_ctx: dict[str, torch.Tensor]  # side -> (B, 256)

    def decoder_encoding(self, side: str, z: torch.Tensor | None = None) -> AnchorEncoding:
        enc = self.encodings[side]
        return AnchorEncoding(self.z_ctx[side] if z is None else z, enc.anchors, enc.anchor_feats)


# --- the network -----------------------------------------------------------------------


class RefOccNet(nn.Module):
    """Network R. State-dict keys match the official checkpoint (``strict=True``):
    ``init_occ.*`` (a frozen network I), ``image_encoder.*``, ``image_final_layer.*``,
    ``hms_global_layer.*``, ``dp_global_layer.*``, ``trans_enc.*``, ``trans_dec.*``,
    ``context_enc.0.*``."""

    def __init__(self, cfg: RefOccConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or RefOccConfig()
        width = cfg.encoder.fmap_dim
        self.init_occ = InitOccNet(cfg.init_occ)
        self.image_encoder = build_image_encoder(cfg.encoder)
        self.image_final_layer = nn.Conv2d(2 * width, cfg.image_feature_dim, 1)
        self.hms_global_layer = nn.Conv2d(width, cfg.latent_dim // 2, cfg.global_kernel)
        self.dp_global_layer = nn.Conv2d(width, cfg.latent_dim // 2, cfg.global_kernel)
        self.trans_enc = PointTransformerEncoder(
            feat_dim=cfg.anchor_feature_dim,
            points_per_layer=(cfg.num_anchors, 256, 128),
            dim=cfg.latent_dim,
            fps_skip_near_origin=cfg.fps_skip_near_origin,
        )
        self.trans_dec = PointTransformerOccDecoder(
            latent_dim=cfg.latent_dim, query_feat_dim=cfg.image_feature_dim + cfg.init_occ_repeat
        )
        self.context_enc = nn.Sequential(nn.Linear(3 * cfg.latent_dim, cfg.latent_dim))
        # I is frozen: evaluated without gradients and always in eval mode.
        self.init_occ.requires_grad_(False)
        self.init_occ.eval()

    def train(self, mode: bool = True) -> RefOccNet:
        super().train(mode)
        self.init_occ.eval()
        return self

    # --- stage 1: image ------------------------------------------------------------------
    def encode_image(
        self, img: torch.Tensor, shared_encoder: bool = False, cam_K: torch.Tensor | None = None
    ) -> RefOccImageFeatures:
        """img (B, 3, 256, 256), ImageNet-normalised. Runs R's encoder and I's encoder once;
        ``shared_encoder``: R's encoder equals I's (frozen and shared, as our training keeps
        it), so I's encoder pass feeds R's heads too. ``cam_K`` (B, 3, 3): the crops'
        intrinsics, which I reads with its ``pixel_feature`` option."""
        if img.dim() != 4 or tuple(img.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ImageError(
                f"network R expects (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) normalised images, "
                f"got {tuple(img.shape)}"
            )
        if shared_encoder:
            with torch.no_grad():
                init_features = self.init_occ.encode_image(img, keep_encoding=True, cam_K=cam_K)
            enc, init_features = init_features.encoding, dataclasses.replace(init_features, encoding=None)
        else:
            enc = self.image_encoder(img)
        size = self.cfg.feature_map_size
        # Officially both 64 px head maps are lifted to 256 px, then a 1x1 conv maps them to
        # 32 channels. A 1x1 conv and bilinear resizing (a convex combination of pixels per
        # channel) commute, so the conv runs at 64 px and only 32 channels are resized:
        # the same map up to float rounding, ~8x less resizing work.
        fmap = upsample_bilinear(
            self.image_final_layer(torch.cat([enc.hms_fmaps[-1], enc.dp_fmaps[-1]], dim=1)), size
        )
        # an 8x8 conv over each head's first (8 px) map: one 128-d vector each
        hms_global = self.hms_global_layer(enc.hms_fmaps[0]).flatten(1)
        dp_global = self.dp_global_layer(enc.dp_fmaps[0]).flatten(1)
        img_global = torch.cat([hms_global, dp_global], dim=1)
        if not shared_encoder:
            with torch.no_grad():
                init_features = self.init_occ.encode_image(img, cam_K=cam_K)
        return RefOccImageFeatures(fmap, img_global, init_features)

    # --- stage 2: anchors ----------------------------------------------------------------
    def fuse_context(
        self, z_self: torch.Tensor, z_other: torch.Tensor, img_global: torch.Tensor
    ) -> torch.Tensor:
        """z' = Linear(768 -> 256)([z_self, z_other, img_global]) (no activation)."""
        return self.context_enc(torch.cat([z_self, z_other, img_global], dim=1))

    def encode_anchors(
        self,
        features: RefOccImageFeatures,
        anchors_mm: dict[str, torch.Tensor],
        hands: dict[str, HandInputs],
        cam_K: torch.Tensor,
        reuse: dict[str, AnchorContext] | None = None,
    ) -> AnchorContext:
        """Encode both hands' anchors (B, 512, 3) (mm, wrist-relative posed frame) and fuse
        their latents. Both hands are required: each one's context includes the other.

        ``reuse``: side -> an earlier context of the same image features in which that hand
        had the same anchors and inputs (the other hand may have moved). Its encoding is
        reused, moved to the new bounding-box centre: the encoder sees only differences of
        positions (and FPS starts at index 0), so a translation of its input translates its
        anchors and leaves features and latent unchanged. Not with the FPS origin quirk."""
        for side in HAND_SIDES:
            if side not in anchors_mm or side not in hands:
                raise InputError(f"network R needs anchors and inputs for both hands; {side} is missing")
            a = anchors_mm[side]
            if a.dim() != 3 or tuple(a.shape[1:]) != (self.cfg.num_anchors, 3):
                raise InputError(
                    f"{side} anchors must be (B, {self.cfg.num_anchors}, 3) mm, got {tuple(a.shape)}"
                )
            if not torch.isfinite(a).all():
                raise InputError(f"{side} anchors contain NaN or infinite values")
        dtype = features.feature_map.dtype
        cam = {s: anchors_mm_to_camera(anchors_mm[s].to(dtype), hands[s], s) for s in HAND_SIDES}
        xyz = {s: camera_to_network_frame(cam[s]) for s in HAND_SIDES}
        centre = bbox_centre(xyz["left"], xyz["right"])
        inputs, encodings = {}, {}
        reuse = {} if reuse is None or self.trans_enc.fps_skip_near_origin else reuse
        for side in HAND_SIDES:
            if side in reuse:
                earlier = reuse[side]
                shift = (earlier.centre - centre).unsqueeze(1)  # (B, 1, 3)
                enc = earlier.encodings[side]
                encodings[side] = AnchorEncoding(
                    enc.z, enc.anchors + shift, enc.anchor_feats, enc.fps_indices
                )
                old_input = earlier.encoder_inputs[side]
                inputs[side] = torch.cat([old_input[..., :3] + shift, old_input[..., 3:]], dim=-1)
                continue
            pix = sample_pixel_features(features.feature_map, cam[side], cam_K)
            label = pix.new_tensor(HAND_LABEL[side]).expand(pix.shape[0], pix.shape[1], -1)
            inputs[side] = torch.cat([xyz[side] - centre.unsqueeze(1), pix, label], dim=-1)
            encodings[side] = self.trans_enc(inputs[side])
        z = {s: encodings[s].z for s in HAND_SIDES}
        z_ctx = {
            "left": self.fuse_context(z["left"], z["right"], features.img_global),
            "right": self.fuse_context(z["right"], z["left"], features.img_global),
        }
        return AnchorContext(cam_K, centre, inputs, encodings, z_ctx)

    # --- stage 3: queries ----------------------------------------------------------------
    def init_occupancy(
        self, features: RefOccImageFeatures, side: str, hand: HandInputs, p: torch.Tensor
    ) -> torch.Tensor:
        """Frozen I's occupancy (B, N) at canonical points p of ``side``."""
        with torch.no_grad():
            return self.init_occ.query(features.init_occ, side, hand, p)

    def query_geometry(
        self,
        features: RefOccImageFeatures,
        context: AnchorContext,
        side: str,
        hand: HandInputs,
        p: torch.Tensor,
    ) -> torch.Tensor:
        """[network-frame xyz (3), pixel feature (32)] (B, N, 35) of canonical points p."""
        cam = camera_ops.canonical_to_camera(
            p.to(features.feature_map.dtype), hand.root_rot_mat, hand.root_xyz, hand.cam_R, hand.cam_T, side,
            self.cfg.global_scale,
        )  # fmt: skip
        xyz = camera_to_network_frame(cam) - context.centre.unsqueeze(1)
        return torch.cat([xyz, sample_pixel_features(features.feature_map, cam, context.cam_K)], dim=-1)

    def init_occupancy_affine(self) -> tuple[float, float] | None:
        """(a, b) when R's logit is exactly ``a * o_I + b`` of I's occupancy o_I at the same
        point (a decoder still at ``identity_init_ref_decoder``: the shipped identity R), so
        that R can be evaluated in closed form without anchors; None for a trained R."""
        return self.trans_dec.trailing_input_affine(self.cfg.init_occ_repeat)

    def query_input(self, geometry: torch.Tensor, init_occ: torch.Tensor) -> torch.Tensor:
        """Decoder input (B, N, 67) = [geometry (35), I's occupancy repeated 32 times]."""
        return torch.cat([geometry, init_occ.unsqueeze(-1).expand(-1, -1, self.cfg.init_occ_repeat)], dim=-1)

    def decode(self, query_input: torch.Tensor, encoding: AnchorEncoding) -> torch.Tensor:
        """Logits (B, N, 1) of decoder inputs (B, N, 67) against one hand's anchor encoding."""
        return self.trans_dec(query_input, encoding)

    def query(
        self,
        features: RefOccImageFeatures,
        context: AnchorContext,
        side: str,
        hand: HandInputs,
        p: torch.Tensor,
        init_occ: torch.Tensor | None = None,
        return_logits: bool = False,
    ) -> torch.Tensor:
        """Refined occupancy (B, N) of ``side`` at canonical points p (B, N, 3).

        ``init_occ`` (B, N): I's occupancy at the same points when already known (the engine
        computes it for the anchor meshes anyway); otherwise I is evaluated here.
        ``return_logits``: return the decoder's logits (B, N, 1) instead."""
        if side not in HAND_SIDES:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        if p.dim() != 3 or p.shape[-1] != 3 or p.shape[0] != hand.batch_size:
            raise InputError(f"query points must be (B={hand.batch_size}, N, 3), got {tuple(p.shape)}")
        if init_occ is None:
            init_occ = self.init_occupancy(features, side, hand, p)
        elif tuple(init_occ.shape) != tuple(p.shape[:2]):
            raise InputError(f"init_occ must have shape {tuple(p.shape[:2])}, got {tuple(init_occ.shape)}")
        geometry = self.query_geometry(features, context, side, hand, p)
        query_input = self.query_input(geometry, init_occ.to(geometry.dtype))
        logits = self.decode(query_input, context.decoder_encoding(side))
        return logits if return_logits else torch.sigmoid(logits[..., 0])

    # --- penetration (training) path ------------------------------------------------------
    def penetration_occupancy(
        self,
        features: RefOccImageFeatures,
        context: AnchorContext,
        side: str,
        hands: dict[str, HandInputs],
        points: dict[str, torch.Tensor],
        other_geometry: torch.Tensor | None = None,
        reference_quirks: bool | None = None,
    ) -> torch.Tensor:
        """Occupancy (B, N_other) of hand ``side`` at the **other** hand's query points
        (official ``pen=True``), for the penetration loss. ``other_geometry`` may pass the
        other hand's :meth:`query_geometry` when already computed. ``reference_quirks``
        (default: ``cfg.reference_pen_quirks``) selects the official behaviour (Q6, Q7);
        otherwise the other hand's points are mapped into this hand's canonical frame
        through the camera frame before I evaluates them, and the fused latent is used."""
        other = "right" if side == "left" else "left"
        if other_geometry is None:
            other_geometry = self.query_geometry(features, context, other, hands[other], points[other])
        if reference_quirks is None:
            reference_quirks = self.cfg.reference_pen_quirks
        if reference_quirks:
            init_occ = self._init_occupancy_reference_pen(features, side, other, hands, points[other])
            # Q7: the official code fuses the already fused latents a second time.
            z = self.fuse_context(context.z_ctx[side], context.z_ctx[other], features.img_global)
        else:
            cam = camera_ops.canonical_to_camera(
                points[other].to(other_geometry.dtype), hands[other].root_rot_mat, hands[other].root_xyz,
                hands[other].cam_R, hands[other].cam_T, other, self.cfg.global_scale,
            )  # fmt: skip
            p_in_side = camera_to_canonical(cam, hands[side], side, self.cfg.global_scale)
            init_occ = self.init_occupancy(features, side, hands[side], p_in_side)
            z = None
        logits = self.decode(self.query_input(other_geometry, init_occ), context.decoder_encoding(side, z))
        return torch.sigmoid(logits[..., 0])

    def _init_occupancy_reference_pen(
        self,
        features: RefOccImageFeatures,
        side: str,
        other: str,
        hands: dict[str, HandInputs],
        p_other: torch.Tensor,
    ) -> torch.Tensor:
        """Quirk Q6: I's ``side`` branch sees the other hand's points at their true camera
        positions (depth reference: the other hand's first query, Q2), but its HALO decoder
        receives the other hand's canonical coordinates with ``side``'s part matrices."""
        init_net = self.init_occ
        with torch.no_grad():
            p_other = p_other.to(torch.float32)
            ref_depth = init_net.reference_depth(other, hands[other], p_other)
            cam_other = init_net.camera_points(other, hands[other], p_other)
            query_cam = camera_ops.subtract_depth(cam_other, ref_depth)
            logits, _ = init_net.part_logits_from_camera(
                features.init_occ, side, hands[side], p_other, query_cam, cam_other
            )
            return occupancy_from_logits(logits)[0]

    # --- everything at once ---------------------------------------------------------------
    def forward(
        self,
        img: torch.Tensor,
        hands: dict[str, HandInputs],
        cam_K: torch.Tensor,
        points: dict[str, torch.Tensor],
        anchors_mm: dict[str, torch.Tensor],
        pen: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Official ``forward``: occupancy ``{'left': (B, N), 'right': (B, M)}`` of each hand
        at its own canonical points. With ``pen`` also ``'left_at_right'`` (B, M) and
        ``'right_at_left'`` (B, N): each hand's occupancy at the other hand's points."""
        return self.occupancies(self.encode_image(img, cam_K=cam_K), hands, cam_K, points, anchors_mm, pen)

    def occupancies(
        self,
        features: RefOccImageFeatures,
        hands: dict[str, HandInputs],
        cam_K: torch.Tensor,
        points: dict[str, torch.Tensor],
        anchors_mm: dict[str, torch.Tensor],
        pen: bool = False,
    ) -> dict[str, torch.Tensor]:
        """:meth:`forward` from image features already computed (e.g. by a shared encoder)."""
        context = self.encode_anchors(features, anchors_mm, hands, cam_K)
        out, geometry = {}, {}
        for side in HAND_SIDES:
            init = self.init_occupancy(features, side, hands[side], points[side])
            geometry[side] = self.query_geometry(features, context, side, hands[side], points[side])
            logits = self.decode(self.query_input(geometry[side], init), context.decoder_encoding(side))
            out[side] = torch.sigmoid(logits[..., 0])
        if pen:
            for side, other in (("left", "right"), ("right", "left")):
                out[f"{side}_at_{other}"] = self.penetration_occupancy(
                    features, context, side, hands, points, geometry[other]
                )
        return out
