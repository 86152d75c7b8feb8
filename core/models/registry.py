"""The networks this application knows, in one table: their names, how to build one from the
config stored in our checkpoint headers, and how to load our weight files (packed ones too).

Adding a network is one :class:`NetworkSpec` entry in :data:`NETWORKS`.

**Packed files** (the shipped ``resources/weights`` folder): a file whose header metadata has
``"shared": {prefix: file}`` gets the tensors of ``file`` (a sibling) under ``prefix`` at load
time, so the image encoder that I, R and K share is stored once. Files without it are
ordinary checkpoints of :mod:`core.checkpoints`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from core.checkpoints import OUR_SUFFIX, check_state_dict, load_checkpoint, read_checkpoint_info
from core.errors import CheckpointError, InputError, TrainConfigError
from core.models.config import HALO_BASE_DECODER, EncoderConfig, InitOccConfig
from core.models.config_limits import check_config_numbers, check_network_size
from core.models.halo_base import HaloBaseNet
from core.models.image_encoder import build_image_encoder
from core.models.init_occ import InitOccNet
from core.models.kpts_ref import KeypointRefiner, KptsRefConfig
from core.models.ref_occ import RefOccConfig, RefOccNet


@dataclass(frozen=True)
class NetworkSpec:
    """One network: ``name`` is the one stored in checkpoint headers and file names."""

    name: str
    what: str
    config_class: type | None  # None: the network has one fixed configuration
    make: Callable[[typing.Any], nn.Module]  # config instance (or None) -> untrained network
    shared_prefixes: tuple[str, ...] = ()  # state-dict prefixes of the shared image encoder
    reconstructs: bool = False  # can back the engine on its own (I, R, HALO-only)

    @property
    def file_name(self) -> str:
        """The network's file in a weights folder."""
        return self.name + OUR_SUFFIX


NETWORKS: dict[str, NetworkSpec] = {
    spec.name: spec
    for spec in (
        NetworkSpec("init_occ", "network I (per-hand occupancy)", InitOccConfig, InitOccNet,
                    shared_prefixes=("image_encoder.",), reconstructs=True),
        NetworkSpec("ref_occ", "network R (two-hand refinement, I inside)", RefOccConfig, RefOccNet,
                    shared_prefixes=("image_encoder.", "init_occ.image_encoder."), reconstructs=True),
        NetworkSpec("kpts_ref", "network K (keypoint refinement)", KptsRefConfig, KeypointRefiner,
                    shared_prefixes=("image_encoder.",)),
        NetworkSpec("halo_base", "HALO base network (keypoints only)", None,
                    lambda _cfg: HaloBaseNet(HALO_BASE_DECODER), reconstructs=True),
    )
}  # fmt: skip
# The shipped encoder file of packed folders (the tensors under each network's shared prefixes).
ENCODER_FILE = "encoder" + OUR_SUFFIX
ENCODER_NETWORK = "shared_image_encoder"
# The exports of the encoder campaign (core.training.encoder_training): an encoder on its own.
TRAINED_ENCODER_NETWORK = "image_encoder"


def network_spec(name: str) -> NetworkSpec:
    spec = NETWORKS.get(name)
    if spec is None:
        raise CheckpointError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    return spec


def config_from_dict(cls, data):
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
            value = config_from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def build_network(name: str, config: dict | None) -> nn.Module:
    """An untrained network ``name`` (``init_occ`` ...) from a stored config dict (None: the
    default configuration, the official one)."""
    spec = network_spec(name)
    if spec.config_class is None:
        return spec.make(None)
    check_config_numbers(config, name)
    try:
        cfg = config_from_dict(spec.config_class, config) if config else spec.config_class()
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise TrainConfigError(
            f"the stored {name} config does not fit {spec.config_class.__name__}: {exc}"
        ) from None
    check_network_size(spec.make, cfg, name)
    return spec.make(cfg)


def confined_shared_path(path: Path, name: str) -> Path:
    """The file a header's ``shared`` entry names, which must be a plain ``.safetensors``
    file name in the same folder (no folders, no ``..``, not absolute). Links placed in
    the folder by its owner are followed, as for the file itself."""
    if Path(name).name != name or name in ("", ".", "..") or "\\" in name or not name.endswith(OUR_SUFFIX):
        raise CheckpointError(
            f"{path.name}: header field 'metadata.shared' names {name!r}, which is not a "
            f"{OUR_SUFFIX} file beside it; refused"
        )
    return path.parent / name


def _read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read tensors of {what}: {exc}") from None


def load_network(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """One of our ``.safetensors`` files -> the network it holds (eval mode, float32), built
    from its stored config, with the tensors of a packed file's shared sibling merged in."""
    path = Path(path)
    info = read_checkpoint_info(path)
    try:
        net = build_network(info.network, info.config)
    except InputError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None
    state = _read_tensors(path, path.name)
    for prefix, name in info.metadata.get("shared", {}).items():
        shared_path = confined_shared_path(path, name)
        if not shared_path.is_file():
            raise CheckpointError(f"{path.name} needs {name} next to it (its shared tensors)")
        shared = _read_tensors(shared_path, f"{name} (shared by {path.name})")
        state.update({prefix + k: v for k, v in shared.items()})
    expected = net.state_dict()
    check_state_dict(state, expected, what=f"{path.name} does not fit network {info.network}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return net.to(device).eval()


def load_weights_folder(folder: str | Path, device: str | torch.device = "cpu") -> dict[str, nn.Module]:
    """Every network present in a weights folder, by name (``ref_occ``, ``kpts_ref`` ...)."""
    folder = Path(folder)
    files = {name: folder / spec.file_name for name, spec in NETWORKS.items()}
    nets = {name: load_network(path, device) for name, path in files.items() if path.is_file()}
    if not nets:
        raise CheckpointError(f"{folder} holds none of {sorted(s.file_name for s in NETWORKS.values())}")
    return nets


def load_image_encoder(path: str | Path) -> nn.Module:
    """An encoder exported by the encoder campaign (network ``image_encoder``), built from its
    stored config, in eval mode."""
    path = Path(path)
    info = read_checkpoint_info(path)
    if info.network != TRAINED_ENCODER_NETWORK:
        raise CheckpointError(f"{path} holds network {info.network!r}, not an image encoder")
    try:
        cfg = config_from_dict(EncoderConfig, info.config or {})
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise CheckpointError(f"{path.name}: the stored encoder config does not fit: {exc}") from None
    encoder = build_image_encoder(cfg)
    load_checkpoint(encoder, path, TRAINED_ENCODER_NETWORK, config=cfg)
    return encoder.eval()
