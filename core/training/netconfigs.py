"""Network configurations of our trainings (building and loading networks from a stored
config: :mod:`core.models.registry`)."""

from __future__ import annotations

import dataclasses

from core.models.config import EncoderConfig, InitOccConfig
from core.models.kpts_ref import KptsRefConfig
from core.models.ref_occ import RefOccConfig


def init_occ_config(backbone: str) -> InitOccConfig:
    return InitOccConfig.small(backbone=backbone, depth_reference="wrist")


def ref_occ_config(backbone: str) -> RefOccConfig:
    return RefOccConfig(
        init_occ=init_occ_config(backbone),
        encoder=EncoderConfig(backbone=backbone),
        fps_skip_near_origin=False,  # plain FPS: our weights were not trained with the CUDA quirk
        reference_pen_quirks=False,
    )


def kpts_ref_config(
    backbone: str, dropout: float | None = None, undirected_graph: bool = True
) -> KptsRefConfig:
    # 64 image channels instead of 256: K's per-layer patch-token projections (16384 inputs
    # per token at 256 channels) would otherwise weigh 23 MB in float16. The skeleton graph is
    # undirected unless asked (see KptsRefConfig.undirected_graph).
    cfg = KptsRefConfig(
        encoder=EncoderConfig(backbone=backbone), image_feature_dim=64, undirected_graph=undirected_graph
    )
    return cfg if dropout is None else dataclasses.replace(cfg, dropout=float(dropout))
