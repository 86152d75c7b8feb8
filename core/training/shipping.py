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

import dataclasses
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


def _full_state(src: Path, metadata: dict) -> dict[str, torch.Tensor]:
    """A network file's tensors, with those it takes from shared encoder files beside it
    (an already packed file) put back under their prefixes: packing a shipped set again then
    gives the same set, not one with empty encoder files."""
    state = load_file(str(src))
    for prefix, file_name in (metadata.get("shared") or {}).items():
        path = src.parent / file_name
        if not path.is_file():
            raise CheckpointError(f"{src} takes its {prefix!r} tensors from {file_name}, not found beside it")
        state |= {prefix + k: v for k, v in load_file(str(path)).items()}
    return state


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
    encoder_sources: dict[str, dict] = {}
    written = {}
    for network, src in sources.items():
        info = read_checkpoint_info(src)
        if info.network != network:
            raise CheckpointError(f"{src} holds {info.network}, expected {network}")
        state = _full_state(Path(src), info.metadata)
        shared = {}
        encoder_file = shared_encoder_file(info.config)
        for prefix in network_spec(network).shared_prefixes:
            part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not part:
                raise CheckpointError(f"{src} holds no tensors under {prefix!r} (its image encoder)")
            known = encoders.setdefault(encoder_file, part)
            if known.keys() != part.keys() or any(not torch.equal(known[k], v) for k, v in part.items()):
                raise CheckpointError(f"{src}: tensors under {prefix!r} differ from {encoder_file}")
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
            shared[prefix] = encoder_file
        if shared and encoder_file not in encoder_sources:  # networks sharing it name one source
            encoder_sources[encoder_file] = _encoder_provenance(info.metadata)
        metadata = {**info.metadata, **extra, **({"shared": shared} if shared else {})}
        path = out_dir / network_spec(network).file_name
        with atomic_path(path) as tmp:
            save_file(_half(state), str(tmp), metadata=checkpoint_header(network, info.config, metadata))
        written[path.name] = path.stat().st_size
    for name, encoder_state in encoders.items():
        path = out_dir / name
        with atomic_path(path) as tmp:
            header = checkpoint_header(ENCODER_NETWORK, None, {**extra, **encoder_sources.get(name, {})})
            save_file(_half(encoder_state), str(tmp), metadata=header)
        written[path.name] = path.stat().st_size
    return written


def _encoder_provenance(metadata: dict) -> dict:
    """Where a network's image encoder came from, for its shared encoder file's header: the
    ``encoder_from`` export its training named and that export's own record (data,
    iterations, minutes), so the packed file says what produced it. Empty when unknown."""
    config = metadata.get("train_config") or (metadata.get("init_training") or {}).get("train_config") or {}
    source = config.get("encoder_from")
    if not source:
        return {}
    record = read_checkpoint_info(source).metadata if Path(source).is_file() else "(not found at packing)"
    return {"encoder_from": source, "encoder_training": record}


def identity_ref_around(init_path: str | Path, out_path: str | Path, logit_scale: float = 4.0) -> Path:
    """Write network R built around the I in ``init_path`` with its decoder at the identity
    of I's occupancy (``identity_init_ref_decoder`` at ``logit_scale``): R's image encoder and
    1x1 layer are I's, so the set ships one encoder, and I + R gives I's surface. The shipped
    sets use this R until a trained R beats it (MODEL_CARD.md)."""
    from core.checkpoints import save_checkpoint
    from core.models.init_occ import InitOccNet
    from core.models.ref_occ import RefOccNet
    from core.models.registry import load_network
    from core.training.netconfigs import ref_occ_config
    from core.training.recipes.base import share_encoder_from_init
    from core.training.recipes.ref import identity_init_ref_decoder

    init = load_network(init_path)
    if not isinstance(init, InitOccNet):
        raise CheckpointError(f"{init_path} holds no network I")
    torch.manual_seed(0)  # R's unused parts (the identity decoder ignores them): one file per I
    # I's own options (pixel_feature) kept
    ref = RefOccNet(dataclasses.replace(ref_occ_config(init.cfg.encoder), init_occ=init.cfg))
    with torch.no_grad():
        ref.init_occ.load_state_dict(init.state_dict())
        share_encoder_from_init(ref, init, final_layer=True)
        identity_init_ref_decoder(ref, logit_scale=logit_scale)
    metadata = {"ref": f"identity of I's occupancy, logit scale {logit_scale:g}", "init_from": str(init_path),
                "init_training": read_checkpoint_info(init_path).metadata}  # what produced I
    return save_checkpoint(out_path, ref, "ref_occ", config=ref.cfg, metadata=metadata)


def extract_encoder(weights_dir: str | Path, out_path: str | Path) -> Path:
    """The image encoder of a packed weights folder, written as an encoder-campaign export
    (network ``image_encoder`` with its config; float32 from the stored float16): what
    ``encoder_from`` (K, I, R) and the encoder campaign's ``init_from`` read. A campaign whose
    folder was lost goes on from the shipped set this way (MODEL_CARD.md)."""
    from core.checkpoints import save_checkpoint
    from core.models.registry import TRAINED_ENCODER_NETWORK, load_weights_folder

    nets = load_weights_folder(weights_dir)
    holder = nets["ref_occ"].init_occ if "ref_occ" in nets else nets.get("kpts_ref")  # I and K: .cfg.encoder
    if holder is None:
        raise CheckpointError(f"{weights_dir} holds no network with the shared image encoder (R or K)")
    metadata = {"start": f"extracted from the packed weights in {weights_dir}"}
    return save_checkpoint(out_path, holder.image_encoder.float(), TRAINED_ENCODER_NETWORK,
                           config=holder.cfg.encoder, metadata=metadata)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m core.training.shipping --out DIR --init I [--ref R] [--kpts K] [--halo H]``:
    pack a weights folder from training exports; without ``--ref``, R is the identity around
    ``--init``'s I (:func:`identity_ref_around`). ``--out DIR --extract-encoder FILE``: the
    folder's image encoder as a campaign export (:func:`extract_encoder`)."""
    import argparse
    import json
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m core.training.shipping", description=main.__doc__)
    ap.add_argument("--out", required=True, help="folder to write (its *.safetensors are replaced)")
    ap.add_argument("--init", help="network I export (R is the identity around it)")
    ap.add_argument("--ref", help="a trained network R export instead")
    ap.add_argument("--kpts", help="network K export")
    ap.add_argument("--halo", help="HALO baseline export")
    ap.add_argument("--extract-encoder", metavar="FILE",
                    help="instead of packing: write the image encoder of the weights folder --out "
                    "as an encoder-campaign export (for encoder_from / init_from)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.extract_encoder:
        print(extract_encoder(args.out, args.extract_encoder))
        return 0
    if bool(args.init) == bool(args.ref):
        ap.error("give exactly one of --init and --ref")
    sources = {name: Path(p) for name, p in (("kpts_ref", args.kpts), ("halo_base", args.halo)) if p}
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(args.ref) if args.ref else identity_ref_around(args.init, Path(tmp) / "ref.safetensors")
        sources["ref_occ"] = ref
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.safetensors"):
            old.unlink()
        print(json.dumps(pack_weights(sources, out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
