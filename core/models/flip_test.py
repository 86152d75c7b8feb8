"""Flip test: the encoder's 2D outputs averaged with those of the mirrored image.

A mirrored left hand is a right hand, so the encoder's outputs on the mirrored crop, mirrored
back with the two sides' channels exchanged, are a second estimate of the same maps (the
training's flip augmentation taught it exactly that symmetry). Their mean is the standard
test-time flip of pose estimation. Only the 2D read-outs are averaged -- joint heatmaps, hand
masks, dense maps -- for 2D joints and masks; the feature maps that networks I, R and K read
are those of the unmirrored pass. Measured on the synthetic test split (seed 1234, 200
renders, encoder campaign run 7): joint error 19.72 -> 18.71 px, mask IoU 76.95 -> 79.59 %,
PCK 43.9 -> 45.6 % (``python -m core.training.encoder_eval --flip-test``), at twice the cost.

Channel layouts (``core.training.encoder_targets``): heatmaps 0-20 left, 21-41 right; masks
0 left, 1 right; dense 0-2 left, 3-5 right. HALO canonicalizes left hands mirrored, so the
dense coordinates carry over to the other side unchanged. A map cell ``c`` of a 64-cell map
is centred at crop pixel ``4 c + 2``, which the mirror sends to ``4 (63 - c) + 2``: mirroring
the image is exactly mirroring the maps.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from core.models.image_encoder import ImageEncoding


def swap_sides(maps: torch.Tensor) -> torch.Tensor:
    """(B, 2k, H, W): the first k channels (left) and the last k (right) exchanged."""
    half = maps.shape[1] // 2
    if maps.shape[1] != 2 * half:
        raise ValueError(f"expected an even number of channels (left then right), got {maps.shape[1]}")
    return torch.cat([maps[:, half:], maps[:, :half]], dim=1)


def mirror_back(maps: torch.Tensor) -> torch.Tensor:
    """Maps computed on a mirrored image -> maps of the original image."""
    return swap_sides(torch.flip(maps, dims=[-1]))


def flip_averaged(encoder: nn.Module, images: torch.Tensor) -> ImageEncoding:
    """``encoder(images)`` with ``hms``, ``mask`` and ``dp`` replaced by the mean of the two
    passes (the image and its mirror); ``images`` is a normalised (B, 3, H, W) batch."""
    plain = encoder(images)
    mirrored = encoder(torch.flip(images, dims=[-1]))
    return replace(
        plain,
        hms=(plain.hms + mirror_back(mirrored.hms)) / 2,
        mask=(plain.mask + mirror_back(mirrored.mask)) / 2,
        dp=(plain.dp + mirror_back(mirrored.dp)) / 2,
    )
