"""IntagHand ``ResNetSimple``: a torchvision ResNet trunk and two upsampling heads.

State-dict keys follow the official layout: ``resnet.*`` (torchvision names, including
the unused ``resnet.fc``), ``hms_decoder.models.{0..3}.*`` / ``hms_decoder.final_layer.*``
and the same under ``dp_decoder``. Input: (B, 3, 256, 256) RGB / 255, ImageNet-normalised
(see :func:`normalize_image`).
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
    1..3 = bilinear x2 (align_corners=True), 3x3 conv, ReLU, BN; then ``final_layer``."""

    def __init__(self, in_channels: int, width: int, out_channels: int, num_stages: int = 4):
        super().__init__()
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmaps = []
        for stage in self.models:
            x = stage(x)
            fmaps.append(x)
        return self.final_layer(x), fmaps


def build_trunk(backbone: str) -> nn.Module:
    """A torchvision ResNet with random weights (keys ``conv1, bn1, layer1..4, fc``)."""
    return getattr(torchvision.models, backbone)(weights=None)


class ResNetSimple(nn.Module):
    """Image encoder shared by networks I, R and K (attribute ``image_encoder`` there)."""

    def __init__(self, cfg: EncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg or EncoderConfig()
        self.resnet = build_trunk(self.cfg.backbone)
        c = self.cfg.trunk_channels
        self.hms_decoder = UpsamplingHead(c, self.cfg.fmap_dim, self.cfg.num_heatmaps)
        self.dp_decoder = UpsamplingHead(c, self.cfg.fmap_dim, self.cfg.num_mask_dp)
        for head in (self.hms_decoder, self.dp_decoder):
            head.apply(_xavier_uniform_init)

    def forward(self, img: torch.Tensor) -> ImageEncoding:
        if img.dim() != 4 or img.shape[1] != 3:
            raise ImageError(f"expected normalised images (B, 3, H, W), got shape {tuple(img.shape)}")
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(img))))
        x4 = r.layer1(x)
        x3 = r.layer2(x4)
        x2 = r.layer3(x3)
        x1 = r.layer4(x2)
        hms, hms_fmaps = self.hms_decoder(x1)
        out, dp_fmaps = self.dp_decoder(x1)
        return ImageEncoding(
            hms=hms,
            mask=out[:, :2],
            dp=out[:, 2:],
            img_fmaps=[x1, x2, x3, x4],
            hms_fmaps=hms_fmaps,
            dp_fmaps=dp_fmaps,
        )


def upsample_bilinear(fmap: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize with align_corners=False (how R lifts the 64 px maps to 256 px)."""
    return F.interpolate(fmap, size=(size, size), mode="bilinear", align_corners=False)


def _xavier_uniform_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
