"""Network configurations of our trainings (building and loading networks from a stored
config: :mod:`core.models.registry`)."""

from __future__ import annotations

import dataclasses

from core.models.config import EncoderConfig, InitOccConfig
from core.models.kpts_ref import KptsRefConfig
from core.models.ref_occ import RefOccConfig


def encoder_config(encoder: str | EncoderConfig) -> EncoderConfig:
    """A backbone name (a ResNetSimple trunk, as the reference) or a whole encoder config (a
    pretrained trunk from the encoder campaign: its stored config)."""
    return encoder if isinstance(encoder, EncoderConfig) else EncoderConfig(backbone=encoder)


def init_occ_config(encoder: str | EncoderConfig) -> InitOccConfig:
    return InitOccConfig(encoder=encoder_config(encoder), depth_reference="wrist")


def ref_occ_config(encoder: str | EncoderConfig) -> RefOccConfig:
    return RefOccConfig(
        init_occ=init_occ_config(encoder),
        encoder=encoder_config(encoder),
        fps_skip_near_origin=False,  # plain FPS: our weights were not trained with the CUDA quirk
        reference_pen_quirks=False,
    )


def kpts_ref_config(
    encoder: str | EncoderConfig, dropout: float | None = None, undirected_graph: bool = True
) -> KptsRefConfig:
    # 64 image channels instead of 256: K's per-layer patch-token projections (16384 inputs
    # per token at 256 channels) would otherwise weigh 23 MB in float16. The skeleton graph is
    # undirected unless asked (see KptsRefConfig.undirected_graph).
    cfg = KptsRefConfig(
        encoder=encoder_config(encoder), image_feature_dim=64, undirected_graph=undirected_graph
    )
    return cfg if dropout is None else dataclasses.replace(cfg, dropout=float(dropout))
