"""The shipped weights folder (``resources/weights``): compact storage and loading.

Layout (all safetensors with our JSON header, float tensors stored as float16):

* ``encoder.safetensors`` -- the one trained image encoder (``ResNetSimple``) that networks
  I, R and K share (R's and K's encoders are frozen copies of I's), stored once;
* ``ref_occ.safetensors`` -- network R with network I inside (``init_occ.*``), without the
  encoder tensors;
* ``kpts_ref.safetensors`` -- network K without the encoder tensors;
* ``halo_base.safetensors`` -- the keypoints-only HALO baseline.

A file whose header metadata has ``"shared": {prefix: file}`` gets the tensors of ``file``
under ``prefix`` at load time (:func:`load_packed_network`). Files without it are ordinary
checkpoints of :mod:`core.checkpoints`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from core.checkpoints import FORMAT_NAME, FORMAT_VERSION, OUR_SUFFIX, check_state_dict, read_checkpoint_info
from core.errors import CheckpointError, InputError
from core.io.atomic import atomic_path
from core.training.netconfigs import build_network

ENCODER_FILE = "encoder.safetensors"
SHARED_PREFIXES = {"ref_occ": ("image_encoder.", "init_occ.image_encoder."), "kpts_ref": ("image_encoder.",)}
PACKED_FILES = {"ref_occ": "ref_occ.safetensors", "kpts_ref": "kpts_ref.safetensors",
                "halo_base": "halo_base.safetensors"}  # fmt: skip


def _header(network: str, config, metadata: dict) -> dict[str, str]:
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "network": network,
        "config": json.dumps(config),
        "metadata": json.dumps(metadata),
    }


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous().clone() for k, v in state.items()}


def pack_weights(sources: dict[str, Path], out_dir: str | Path, extra_metadata: dict | None = None) -> dict:
    """Write the shipped folder from our full-precision training exports.

    ``sources``: ``{"ref_occ": path, "kpts_ref": path, "halo_base": path}`` (any subset; the
    encoder is taken from R, else K). R's and K's encoders must be identical (frozen copies
    of I's). Returns ``{file name: size in bytes}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra_metadata or {})
    encoder_state = None
    written = {}
    for network, src in sources.items():
        info = read_checkpoint_info(src)
        if info.network != network:
            raise CheckpointError(f"{src} holds {info.network}, expected {network}")
        state = load_file(str(src))
        shared = {}
        for prefix in SHARED_PREFIXES.get(network, ()):
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if encoder_state is None:
                encoder_state = part
            elif any(not torch.equal(encoder_state[k], v) for k, v in part.items()):
                raise CheckpointError(f"{src}: tensors under {prefix!r} differ from the shared encoder")
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
            shared[prefix] = ENCODER_FILE
        metadata = {**info.metadata, **extra, **({"shared": shared} if shared else {})}
        path = out_dir / PACKED_FILES[network]
        with atomic_path(path) as tmp:
            save_file(_half(state), str(tmp), metadata=_header(network, info.config, metadata))
        written[path.name] = path.stat().st_size
    if encoder_state is not None:
        path = out_dir / ENCODER_FILE
        with atomic_path(path) as tmp:
            save_file(_half(encoder_state), str(tmp), metadata=_header("shared_image_encoder", None, extra))
        written[path.name] = path.stat().st_size
    return written


def _file_metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("metadata", "{}"))


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


def load_packed_network(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A network (eval mode, float32) from a shipped file, shared tensors included."""
    path = Path(path)
    info = read_checkpoint_info(path)
    try:
        net = build_network(info.network, info.config)
        state = load_file(str(path))
    except InputError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read tensors of {path.name}: {exc}") from None
    for prefix, name in info.metadata.get("shared", {}).items():
        shared_path = confined_shared_path(path, name)
        if not shared_path.is_file():
            raise CheckpointError(f"{path.name} needs {name} next to it (its shared tensors)")
        try:
            shared_state = load_file(str(shared_path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read tensors of {name} (shared by {path.name}): {exc}") from None
        state.update({prefix + k: v for k, v in shared_state.items()})
    expected = net.state_dict()
    check_state_dict(state, expected, what=f"{path.name} does not fit network {info.network}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return net.to(device).eval()


def load_weights_folder(folder: str | Path, device: str | torch.device = "cpu") -> dict[str, nn.Module]:
    """Every network present in a shipped folder: keys ``ref_occ``, ``kpts_ref``, ``halo_base``."""
    folder = Path(folder)
    nets = {
        n: load_packed_network(folder / f, device) for n, f in PACKED_FILES.items() if (folder / f).is_file()
    }
    if not nets:
        raise CheckpointError(f"{folder} holds none of {sorted(PACKED_FILES.values())}")
    return nets
