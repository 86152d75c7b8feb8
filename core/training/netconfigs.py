"""Network configurations of our trainings and building / loading networks from the
config stored in our checkpoint headers (no training or engine imports: the engine can use
this module to load our weights)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import torch
from torch import nn

from core.checkpoints import load_checkpoint, read_checkpoint_info
from core.errors import CheckpointError, InputError
from core.models.config import HALO_BASE_DECODER, EncoderConfig, InitOccConfig
from core.models.halo_base import HaloBaseNet
from core.models.init_occ import InitOccNet
from core.models.kpts_ref import KeypointRefiner, KptsRefConfig
from core.models.ref_occ import RefOccConfig, RefOccNet


class TrainConfigError(InputError):
    """A training configuration that cannot be used."""


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


def _from_dict(cls, data):
    """A (nested, frozen) config dataclass from its ``dataclasses.asdict`` JSON form."""
    if not dataclasses.is_dataclass(cls):
        return data
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


CONFIG_CLASSES = {
    "halo_base": None,
    "init_occ": InitOccConfig,
    "ref_occ": RefOccConfig,
    "kpts_ref": KptsRefConfig,
}


def build_network(network: str, config: dict | None) -> nn.Module:
    """An untrained network of kind ``network`` (``init_occ`` ...) from a stored config dict."""
    if network == "halo_base":
        return HaloBaseNet(HALO_BASE_DECODER)
    cls = CONFIG_CLASSES.get(network)
    if cls is None:
        raise TrainConfigError(f"unknown network {network!r}")
    check_config_numbers(config, network)
    try:
        cfg = _from_dict(cls, config) if config else cls()
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise TrainConfigError(f"the stored {network} config does not fit {cls.__name__}: {exc}") from None
    ctor = {"init_occ": InitOccNet, "ref_occ": RefOccNet, "kpts_ref": KeypointRefiner}[network]
    check_network_size(ctor, cfg, network)
    return ctor(cfg)


MAX_CONFIG_NUMBER = 100_000  # no width, depth or count of our networks comes near this
MAX_PARAMETERS = 500_000_000  # 2 GB of float32; our largest network (R) has 33 M


def check_config_numbers(config, network: str, where: str = "config") -> None:
    """Every number in a stored config is finite and at most :data:`MAX_CONFIG_NUMBER` in
    size, checked before anything is built."""
    if isinstance(config, dict):
        for key, value in config.items():
            check_config_numbers(value, network, f"{where}.{key}")
    elif isinstance(config, list):
        if len(config) > MAX_CONFIG_NUMBER:
            raise TrainConfigError(
                f"{network} {where}: a list of {len(config)} entries is not a config value"
            )
        for i, value in enumerate(config):
            check_config_numbers(value, network, f"{where}[{i}]")
    elif isinstance(config, (int, float)) and not isinstance(config, bool):
        if not abs(config) <= MAX_CONFIG_NUMBER:  # NaN fails too
            raise TrainConfigError(
                f"{network} {where} = {config!r} is out of range (|value| <= {MAX_CONFIG_NUMBER}); "
                "the weights header is damaged or not ours"
            )


def check_network_size(ctor, cfg, network: str) -> None:
    """Build the network on the meta device (no memory) and refuse more than
    :data:`MAX_PARAMETERS` parameters, or a config the network cannot be built from."""
    try:
        with torch.device("meta"):
            net = ctor(cfg)
    except (TypeError, ValueError, RuntimeError, AttributeError, KeyError, IndexError, AssertionError) as exc:
        raise TrainConfigError(f"cannot build network {network} from its stored config: {exc}") from None
    except NotImplementedError:  # an operation without a meta kernel: the number check stands
        return
    count = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    if count > MAX_PARAMETERS:
        raise TrainConfigError(
            f"the stored {network} config asks for {count / 1e6:.0f} M parameters "
            f"(limit {MAX_PARAMETERS / 1e6:.0f} M); the weights header is damaged or not ours"
        )


def load_network(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """One of our ``.safetensors`` files -> the network it holds, built from its stored config."""
    info = read_checkpoint_info(path)
    try:
        net = build_network(info.network, info.config)
    except TrainConfigError as exc:
        raise CheckpointError(f"{Path(path).name}: {exc}") from None
    load_checkpoint(net, path, info.network)
    return net.to(device).eval()
