"""Writing the shipped weights folder (``resources/weights``): compact storage.

Layout (all safetensors with our JSON header, float tensors stored as float16):

* ``encoder.safetensors`` -- the one trained image encoder (``ResNetSimple``) that networks
  I, R and K share (R's and K's encoders are frozen copies of I's), stored once;
* ``ref_occ.safetensors`` -- network R with network I inside (``init_occ.*``), without the
  encoder tensors;
* ``kpts_ref.safetensors`` -- network K without the encoder tensors;
* ``halo_base.safetensors`` -- the keypoints-only HALO baseline.

Loading such a folder is :func:`core.models.registry.load_network` /
:func:`~core.models.registry.load_weights_folder` (the engine loads through them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.checkpoints import OUR_SUFFIX, checkpoint_header, read_checkpoint_info
from core.errors import CheckpointError
from core.io.atomic import atomic_path
from core.models.registry import ENCODER_FILE, ENCODER_NETWORK, network_spec


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous().clone() for k, v in state.items()}


def shared_encoder_file(config: dict | None) -> str:
    """The packed file name of a network's image encoder: ``encoder.safetensors`` for the
    ResNetSimple encoders of the first sets, ``encoder_<backbone>.safetensors`` for a
    pretrained trunk (so that K may ship on another encoder than I and R)."""
    backbone = ((config or {}).get("encoder") or {}).get("backbone", "resnet")
    return ENCODER_FILE if backbone.startswith("resnet") else f"encoder_{backbone}{OUR_SUFFIX}"


def pack_weights(sources: dict[str, Path], out_dir: str | Path, extra_metadata: dict | None = None) -> dict:
    """Write the shipped folder from our full-precision training exports.

    ``sources``: ``{"ref_occ": path, "kpts_ref": path, "halo_base": path}`` (any subset). Each
    network's encoder tensors go to its encoder file (:func:`shared_encoder_file`), stored
    once: networks naming the same file must hold identical encoders (frozen copies of one
    trained encoder). Returns ``{file name: size in bytes}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra_metadata or {})
    encoders: dict[str, dict[str, torch.Tensor]] = {}
    written = {}
    for network, src in sources.items():
        info = read_checkpoint_info(src)
        if info.network != network:
            raise CheckpointError(f"{src} holds {info.network}, expected {network}")
        state = load_file(str(src))
        shared = {}
        encoder_file = shared_encoder_file(info.config)
        for prefix in network_spec(network).shared_prefixes:
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            known = encoders.setdefault(encoder_file, part)
            if known.keys() != part.keys() or any(not torch.equal(known[k], v) for k, v in part.items()):
                raise CheckpointError(f"{src}: tensors under {prefix!r} differ from {encoder_file}")
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
            shared[prefix] = encoder_file
        metadata = {**info.metadata, **extra, **({"shared": shared} if shared else {})}
        path = out_dir / network_spec(network).file_name
        with atomic_path(path) as tmp:
            save_file(_half(state), str(tmp), metadata=checkpoint_header(network, info.config, metadata))
        written[path.name] = path.stat().st_size
    for name, encoder_state in encoders.items():
        path = out_dir / name
        with atomic_path(path) as tmp:
            header = checkpoint_header(ENCODER_NETWORK, None, extra)
            save_file(_half(encoder_state), str(tmp), metadata=header)
        written[path.name] = path.stat().st_size
    return written
