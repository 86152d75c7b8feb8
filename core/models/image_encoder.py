"""The image encoder shared by networks I, R and K: a trunk and two upsampling heads.

:class:`ResNetSimple` is IntagHand's encoder on a torchvision ResNet. State-dict keys follow
the official layout: ``resnet.*`` (torchvision names, including the unused ``resnet.fc``),
``hms_decoder.models.{0..3}.*`` / ``hms_decoder.final_layer.*`` and the same under
``dp_decoder``. :class:`PretrainedTrunkEncoder` is our option with an ImageNet-pretrained
EfficientNet-Lite trunk (``trunk.*``) and the same heads and outputs, so I, R and K read it
unchanged. :func:`build_image_encoder` picks one from the config. Input of both: (B, 3, 256,
256) RGB / 255, ImageNet-normalised (see :func:`normalize_image`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from core.errors import ImageError
from core.models.config import EncoderConfig

IMAGE_SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) or (B, H, W, 3) RGB in [0, 255] (uint8 or float) -> network input
    (B, 3, H, W) float32, NCHW-contiguous (the conv kernels' rounding depends on it)."""
    if rgb.dim() != 4:
        raise ImageError(f"expected a batch of RGB images (B, 3, H, W), got shape {tuple(rgb.shape)}")
    if rgb.shape[1] != 3 and rgb.shape[-1] == 3:
        rgb = rgb.permute(0, 3, 1, 2)
    if rgb.shape[1] != 3:
        raise ImageError(f"expected 3 colour channels, got shape {tuple(rgb.shape)}")
    x = rgb.to(torch.float32) / 255.0
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


@dataclass
class ImageEncoding:
    """Outputs of :class:`ResNetSimple` (all NCHW; sizes for a 256 px input, ResNet-50).

    ``img_fmaps`` = [layer4 (8 px), layer3 (16), layer2 (32), layer1 (64)];
    ``hms_fmaps`` / ``dp_fmaps`` = the heads' stage outputs at 8, 16, 32, 64 px.
    """

    hms: torch.Tensor  # (B, 42, 64, 64) joint heatmaps
    mask: torch.Tensor  # (B, 2, 64, 64) hand masks
    dp: torch.Tensor  # (B, 6, 64, 64) DensePose channels
    img_fmaps: list[torch.Tensor]
    hms_fmaps: list[torch.Tensor]
    dp_fmaps: list[torch.Tensor]


class UpsamplingHead(nn.Module):
    """Official ``ResNetSimple_decoder``: stage 0 = 1x1 conv, ReLU, BN (flat); stages
    1..3 = bilinear x2 (align_corners=True), 3x3 conv, ReLU, BN; then ``final_layer``.

    With ``skip_channels`` (our option, ``EncoderConfig.head_skips``), stage k >= 1 adds a
    1x1 projection (``laterals.{k-1}``) of the trunk map of its scale to its output."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        num_stages: int = 4,
        skip_channels: tuple[int, ...] = (),
    ):
        super().__init__()
        if skip_channels and len(skip_channels) != num_stages - 1:
            raise ValueError(f"need {num_stages - 1} skip maps, got {len(skip_channels)}")
        stages = [
            nn.Sequential(
                nn.Conv2d(in_channels, width, kernel_size=1, bias=False),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(width),
            )
        ]
        for _ in range(num_stages - 1):
            stages.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                    nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False),
                    nn.ReLU(inplace=True),
                    nn.BatchNorm2d(width),
                )
            )
        self.models = nn.ModuleList(stages)
        self.final_layer = nn.Conv2d(width, out_channels, kernel_size=1)
        if skip_channels:
            self.laterals = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in skip_channels)

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x``: the deepest trunk map; ``skips``: the shallower maps, deepest first (only
        with laterals)."""
        laterals = getattr(self, "laterals", None)
        fmaps = []
        for k, stage in enumerate(self.models):
            x = stage(x)
            if laterals is not None and k > 0:
                x = x + laterals[k - 1](skips[k - 1])
            fmaps.append(x)
        return self.final_layer(x), fmaps


def build_trunk(backbone: str) -> nn.Module:
    """A torchvision ResNet with random weights (keys ``conv1, bn1, layer1..4, fc``)."""
    return getattr(torchvision.models, backbone)(weights=None)


def _heads(cfg: EncoderConfig) -> tuple[UpsamplingHead, UpsamplingHead]:
    """The heatmap and mask/dense heads of an encoder config (xavier-initialised)."""
    skips = cfg.fmap_channels[1:] if cfg.head_skips else ()
    heads = (
        UpsamplingHead(cfg.trunk_channels, cfg.fmap_dim, cfg.num_heatmaps, skip_channels=skips),
        UpsamplingHead(cfg.trunk_channels, cfg.fmap_dim, cfg.num_mask_dp, skip_channels=skips),
    )
    for head in heads:
        head.apply(_xavier_uniform_init)
    return heads


def _encoding(
    hms_head: UpsamplingHead, dp_head: UpsamplingHead, img_fmaps: list[torch.Tensor]
) -> ImageEncoding:
    """Run both heads on the trunk maps (deepest first) and name the outputs."""
    skips = img_fmaps[1:] if hasattr(hms_head, "laterals") else None
    hms, hms_fmaps = hms_head(img_fmaps[0], skips)
    out, dp_fmaps = dp_head(img_fmaps[0], skips)
    return ImageEncoding(
        hms=hms, mask=out[:, :2], dp=out[:, 2:], img_fmaps=img_fmaps, hms_fmaps=hms_fmaps, dp_fmaps=dp_fmaps
    )


def _check_input(img: torch.Tensor) -> None:
    if img.dim() != 4 or img.shape[1] != 3:
        raise ImageError(f"expected normalised images (B, 3, H, W), got shape {tuple(img.shape)}")


class ResNetSimple(nn.Module):
    """Image encoder shared by networks I, R and K (attribute ``image_encoder`` there)."""

    def __init__(self, cfg: EncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg or EncoderConfig()
        if not self.cfg.is_resnet:
            raise ValueError(f"ResNetSimple needs a ResNet backbone, got {self.cfg.backbone!r}")
        self.resnet = build_trunk(self.cfg.backbone)
        self.hms_decoder, self.dp_decoder = _heads(self.cfg)

    def forward(self, img: torch.Tensor) -> ImageEncoding:
        _check_input(img)
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(img))))
        x4 = r.layer1(x)
        x3 = r.layer2(x4)
        x2 = r.layer3(x3)
        x1 = r.layer4(x2)
        return _encoding(self.hms_decoder, self.dp_decoder, [x1, x2, x3, x4])


class PretrainedTrunkEncoder(nn.Module):
    """The encoder on an ImageNet-pretrained EfficientNet-Lite trunk (``trunk.*``, timm names)
    with ResNetSimple's heads and outputs. Built with random weights; training starts from
    :meth:`load_imagenet_weights` (the registry package's file). It takes ImageNet-normalised
    input like ResNetSimple and maps it to the [-1, 1] range its weights were trained on."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        from core.models.pretrained_trunks import build_feature_trunk, trunk_spec

        self.cfg = cfg
        self.trunk = build_feature_trunk(cfg.backbone)
        self.hms_decoder, self.dp_decoder = _heads(cfg)
        # ImageNet-normalised x -> pixel p = x * std + mean -> (p - m') / s' = x * a + b.
        spec = trunk_spec(cfg.backbone)
        std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        scale = std / torch.tensor(spec.input_std)
        shift = (mean - torch.tensor(spec.input_mean)) / torch.tensor(spec.input_std)
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)

    def load_imagenet_weights(self) -> None:
        from core.models.pretrained_trunks import load_imagenet_weights

        load_imagenet_weights(self.trunk, self.cfg.backbone)

    def forward(self, img: torch.Tensor) -> ImageEncoding:
        _check_input(img)
        maps = self.trunk(img * self.input_scale + self.input_shift)  # shallowest first
        return _encoding(self.hms_decoder, self.dp_decoder, maps[::-1])


def build_image_encoder(cfg: EncoderConfig) -> nn.Module:
    """The encoder of ``cfg``: ResNetSimple for ResNet backbones (official), else the
    pretrained-trunk encoder (random weights until trained or loaded)."""
    return ResNetSimple(cfg) if cfg.is_resnet else PretrainedTrunkEncoder(cfg)


def upsample_bilinear(fmap: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize with align_corners=False (how R lifts the 64 px maps to 256 px)."""
    return F.interpolate(fmap, size=(size, size), mode="bilinear", align_corners=False)


def _xavier_uniform_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
