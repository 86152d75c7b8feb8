"""Checkpoints: the official Im2Hands / HALO / IntagHand files, and our own format.

**Official files** (read with ``torch.load(..., weights_only=True)`` only; numpy scalars such
as HALO's stored ``loss_val_best`` are allow-listed, nothing else):

====================  ========================================  =================================
kind                  file (typical name)                       layout
====================  ========================================  =================================
``init_occ``          ``init_occ.pt``                           ``{'model': I state dict, ...}``
``ref_occ``           ``ref_occ.pt``                            ``{'model': R state dict, ...}``
``kpts_ref``          ``model_best.pt`` of a K training         ``{'model': K state dict, ...}``
``halo_baseline``     ``halo_baseline.pt``                      ``decoder.*`` with ``lin*_2`` [64, 83]
``halo_base``         HALO ``model_best.pt``                    ``decoder.*`` with ``lin*_2`` [64, 64]
``intaghand_baseline`` ``intaghand_baseline.pth``               raw dict, ``module.encoder.*``
====================  ========================================  =================================

The kind is recognised from the key layout, and from the file name when the layout says
nothing. Renaming rules (official ``CheckpointIO``, §A.7 of the reference notes):

* into I: ``halo_baseline`` ``decoder.*`` -> ``left_decoder.*`` and ``right_decoder.*``;
  ``intaghand_baseline`` ``module.encoder.*`` -> ``image_encoder.*``;
* into R: ``init_occ`` -> ``init_occ.*`` (the frozen I) **and**, unprefixed, into R's own
  ``image_encoder.*`` / ``image_final_layer.*`` (how the official R training starts);
* into K: ``intaghand_baseline`` -> ``image_encoder.*``;
* a checkpoint of the network itself loads completely.

Unlike the official loader (``strict=False``), every load is checked: each network key that
the checkpoint kind is meant to fill must be present and of the right shape, and no
checkpoint key may be left over; otherwise :class:`~core.errors.CheckpointError` names the
missing, unexpected and mis-shaped keys.

**Our format**: one ``.safetensors`` file whose header metadata holds the network name and a
JSON of its config and free-form metadata. Writes are atomic (temp file + ``os.replace``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from core.errors import CheckpointError
from core.io.atomic import atomic_path
from core.models.halo_base import load_torch_checkpoint

OFFICIAL_KINDS = ("init_occ", "ref_occ", "kpts_ref", "halo_baseline", "halo_base", "intaghand_baseline")

FORMAT_NAME = "im2hands-studio"
FORMAT_VERSION = 1
OUR_SUFFIX = ".safetensors"

_MAX_KEYS_LISTED = 8


@dataclass(frozen=True)
class Rename:
    """Checkpoint keys ``source_prefix + rest`` go to network keys ``target_prefix + rest``;
    every network key under ``target_prefix`` must then be filled."""

    source_prefix: str
    target_prefix: str


_IDENTITY = (Rename("", ""),)
_INTAGHAND_ENCODER = (Rename("module.encoder.", "image_encoder."),)
_HALO_DECODERS = (Rename("decoder.", "left_decoder."), Rename("decoder.", "right_decoder."))

# (network, checkpoint kind) -> renaming rules.
_RULES: dict[tuple[str, str], tuple[Rename, ...]] = {
    ("init_occ", "init_occ"): _IDENTITY,
    ("init_occ", "halo_baseline"): _HALO_DECODERS,
    ("init_occ", "halo_base"): _HALO_DECODERS,  # fails on lin*_2: HALO has no image columns
    ("init_occ", "intaghand_baseline"): _INTAGHAND_ENCODER,
    ("ref_occ", "ref_occ"): _IDENTITY,
    ("ref_occ", "init_occ"): (
        Rename("", "init_occ."),
        Rename("image_encoder.", "image_encoder."),
        Rename("image_final_layer.", "image_final_layer."),
    ),
    ("kpts_ref", "kpts_ref"): _IDENTITY,
    ("kpts_ref", "intaghand_baseline"): _INTAGHAND_ENCODER,
    ("halo_base", "halo_base"): _IDENTITY,
}

# The networks official files can initialise (the full table: core.models.registry.NETWORKS).
_LOADABLE_NETWORKS = tuple(dict.fromkeys(network for network, _ in _RULES))

# Kinds whose files hold more than the part we take (IntagHand's own GCN decoder, ...).
_IGNORE_LEFTOVER_SOURCE_KEYS = {"intaghand_baseline"}


@dataclass(frozen=True)
class LoadReport:
    """What a load did: which kind of file, how many tensors went where."""

    path: Path
    network: str
    kind: str
    num_tensors_loaded: int
    target_prefixes: tuple[str, ...]
    num_source_keys_ignored: int = 0
    extras: dict[str, Any] = field(default_factory=dict)  # 'it', 'epoch_it', 'loss_val_best', ...


@dataclass(frozen=True)
class CheckpointInfo:
    """Header of one of our checkpoints."""

    path: Path
    network: str
    config: dict | None
    metadata: dict
    format_version: int


# --------------------------------------------------------------------------------------
# Recognising networks and checkpoint kinds
# --------------------------------------------------------------------------------------


def infer_network(model: nn.Module) -> str:
    """Which network ``model`` is, from its state-dict layout."""
    network = _network_from_keys(list(model.state_dict().keys()))
    if network is not None:
        return network
    raise CheckpointError(
        f"cannot tell which network a {type(model).__name__} is (expected one of {_LOADABLE_NETWORKS})"
    )


def _network_from_keys(keys: list[str]) -> str | None:
    """The network a state-dict key layout belongs to (a decoder-only dict is ``halo_base``)."""
    if any(k.startswith("init_occ.") for k in keys):
        return "ref_occ"
    if any(k.startswith("gcn_layers.") for k in keys):
        return "kpts_ref"
    if any(k.startswith("left_decoder.") for k in keys):
        return "init_occ"
    if keys and all(k.startswith("decoder.") for k in keys):
        return "halo_base"
    return None


def _decoder_kind(state: Mapping[str, torch.Tensor]) -> str:
    """``halo_baseline`` (Im2Hands' decoder with 19 image columns) or ``halo_base`` (HALO)."""
    lin1 = state.get("decoder.lin0_1.weight")
    lin2 = state.get("decoder.lin0_2.weight")
    if lin1 is not None and lin2 is not None and lin2.shape[1] > lin1.shape[1]:
        return "halo_baseline"
    return "halo_base"


def _kind_from_name(path: Path) -> str | None:
    name = path.name
    if "ref_halo_baseline" in name:
        raise CheckpointError(
            f"{name}: 'ref_halo_baseline' checkpoints feed refinement decoders that no network uses; "
            "nothing to load"
        )
    for kind in ("intaghand_baseline", "halo_baseline", "init_occ", "ref_occ", "kpts_ref"):
        if kind in name:
            return kind
    return None


def detect_official_kind(path: Path, data: Mapping[str, Any]) -> str:
    """Kind of an official checkpoint (see the module docstring) from its layout, else its name."""
    state = data.get("model", data)
    keys = [k for k, v in state.items() if isinstance(v, torch.Tensor)] if isinstance(state, Mapping) else []
    if "model" not in data and any(k.startswith("module.encoder.") for k in keys):
        return "intaghand_baseline"
    network = _network_from_keys(keys)
    if network == "halo_base":
        return _decoder_kind(state)  # HALO's own decoder or Im2Hands' halo_baseline
    if network is not None:
        return network
    kind = _kind_from_name(path)
    if kind is None:
        raise CheckpointError(
            f"{path.name} is not a checkpoint this application recognises "
            f"(expected one of {OFFICIAL_KINDS} or an {OUR_SUFFIX} file saved by it)"
        )
    return kind


def _source_state(data: Mapping[str, Any], kind: str, path: Path) -> dict[str, torch.Tensor]:
    state = data if kind == "intaghand_baseline" and "model" not in data else data.get("model")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path.name} ({kind}) has no 'model' state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _scalar_extras(data: Mapping[str, Any]) -> dict[str, Any]:
    extras = {}
    for key in ("it", "epoch_it", "loss_val_best"):
        value = data.get(key)
        if value is not None:
            try:
                extras[key] = float(value) if key == "loss_val_best" else int(value)
            except (TypeError, ValueError):
                pass
    return extras


# --------------------------------------------------------------------------------------
# Checking a state dict against a network
# --------------------------------------------------------------------------------------


def _list_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_LISTED])
    more = len(keys) - _MAX_KEYS_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    *,
    what: str,
    required_prefixes: tuple[str, ...] = ("",),
) -> None:
    """Raise :class:`CheckpointError` naming the keys of ``expected`` under
    ``required_prefixes`` that ``state`` lacks, the keys of ``state`` that ``expected`` lacks,
    and the keys whose shapes differ."""
    missing = sorted(k for k in expected if k not in state and k.startswith(required_prefixes))
    unexpected = sorted(k for k in state if k not in expected)
    mis_shaped = [
        f"{k} (checkpoint {list(state[k].shape)}, network {list(expected[k].shape)})"
        for k in sorted(state)
        if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_list_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_list_keys(unexpected)}")
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} mis-shaped key(s): {_list_keys(mis_shaped)}")
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))


def _apply_renames(
    source: Mapping[str, torch.Tensor], rules: tuple[Rename, ...]
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Renamed tensors, and the source keys that no rule consumed. A source key may feed
    several network keys (one decoder into both hands, I's encoder into I and into R)."""
    renamed: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for rule in rules:
        for key, tensor in source.items():
            if key.startswith(rule.source_prefix):
                renamed[rule.target_prefix + key[len(rule.source_prefix) :]] = tensor
                used.add(key)
    return renamed, set(source) - used


# --------------------------------------------------------------------------------------
# Loading official checkpoints
# --------------------------------------------------------------------------------------


def load_official_checkpoint(
    model: nn.Module, path: str | Path, network: str | None = None, *, kind: str | None = None
) -> LoadReport:
    """Load an official checkpoint into ``model`` (network I, R, K or the HALO base net).

    ``network`` defaults to :func:`infer_network`; ``kind`` to :func:`detect_official_kind`.
    Only the network keys that the kind covers change; the rest of ``model`` is untouched."""
    path = Path(path)
    network = network or infer_network(model)
    if network not in _LOADABLE_NETWORKS:
        raise CheckpointError(f"unknown network {network!r}; expected one of {_LOADABLE_NETWORKS}")
    data = load_torch_checkpoint(path)
    kind = kind or detect_official_kind(path, data)
    rules = _RULES.get((network, kind))
    if rules is None:
        usable = sorted(k for n, k in _RULES if n == network)
        raise CheckpointError(
            f"{path.name} is a {kind!r} checkpoint, which cannot initialise network {network!r} "
            f"(usable kinds: {', '.join(usable)})"
        )
    source = _source_state(data, kind, path)
    expected = model.state_dict()
    renamed, leftovers = _apply_renames(source, rules)
    target_prefixes = tuple(dict.fromkeys(r.target_prefix for r in rules))
    check_state_dict(
        {**renamed, **({} if kind in _IGNORE_LEFTOVER_SOURCE_KEYS else {k: source[k] for k in leftovers})},
        expected,
        what=f"{path.name} ({kind}) does not fit network {network}",
        required_prefixes=target_prefixes,
    )
    model.load_state_dict({**expected, **renamed}, strict=True)
    return LoadReport(
        path=path,
        network=network,
        kind=kind,
        num_tensors_loaded=len(renamed),
        target_prefixes=target_prefixes,
        num_source_keys_ignored=len(leftovers),
        extras=_scalar_extras(data),
    )


def load_init_occ(model: nn.Module, path: str | Path) -> LoadReport:
    """Network I from ``init_occ.pt``, ``halo_baseline.pt`` (decoders) or
    ``intaghand_baseline.pth`` (image encoder)."""
    return load_official_checkpoint(model, path, "init_occ")


def load_ref_occ(model: nn.Module, path: str | Path) -> LoadReport:
    """Network R from ``ref_occ.pt``, or from ``init_occ.pt`` (fills ``init_occ.*`` and R's
    own ``image_encoder`` / ``image_final_layer``)."""
    return load_official_checkpoint(model, path, "ref_occ")


def load_kpts_ref(model: nn.Module, path: str | Path) -> LoadReport:
    """Network K from a K checkpoint or ``intaghand_baseline.pth`` (image encoder)."""
    return load_official_checkpoint(model, path, "kpts_ref")


def load_halo_base(model: nn.Module, path: str | Path) -> LoadReport:
    """The HALO base net from HALO's ``model_best.pt`` (decoder only)."""
    return load_official_checkpoint(model, path, "halo_base")


# --------------------------------------------------------------------------------------
# Our format: safetensors + JSON header
# --------------------------------------------------------------------------------------


def _config_to_json_dict(config: Any) -> dict | None:
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dataclass instance or a mapping, got {type(config).__name__}")
    # Round trip through JSON so tuples and lists compare equal afterwards.
    return json.loads(json.dumps(config))


def _flat_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _flat_differences(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: checkpoint {a!r}, expected {b!r}"]


def checkpoint_header(network: str, config: Any, metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The safetensors header metadata of our format (every writer of our files uses it)."""
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "network": network,
        "config": json.dumps(_config_to_json_dict(config)),
        "metadata": json.dumps(dict(metadata or {})),
    }


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    network: str | None = None,
    *,
    config: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state dict as ``path`` (``.safetensors``) with a JSON header of the
    network name, its config (dataclass or mapping) and ``metadata`` (JSON-serialisable).
    The file appears atomically: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    if path.suffix != OUR_SUFFIX:
        raise CheckpointError(f"our checkpoints are {OUR_SUFFIX} files; got {path.name}")
    network = network or infer_network(model)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    header = checkpoint_header(network, config, metadata)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Header of one of our checkpoints, without reading the tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name} is not a readable safetensors file: {exc}") from exc
    if header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path.name} was not saved by Im2Hands Studio (no '{FORMAT_NAME}' header)")
    try:
        version = int(header["format_version"])
        info = CheckpointInfo(
            path=path,
            network=header["network"],
            config=json.loads(header["config"]),
            metadata=json.loads(header["metadata"]),
            format_version=version,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path.name} has a damaged header: {exc}") from exc
    _check_header_types(info)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name} uses checkpoint format {version}; this version reads up to {FORMAT_VERSION}"
        )
    return info


def _check_header_types(info: CheckpointInfo) -> None:
    """The header fields have their types: network a name, config an object or null,
    metadata an object, ``shared`` (if any) a map of prefixes to file names."""
    name = info.path.name
    if not isinstance(info.network, str) or not info.network:
        raise CheckpointError(f"{name}: header field 'network' must be a name, got {info.network!r}")
    if info.config is not None and not isinstance(info.config, dict):
        raise CheckpointError(
            f"{name}: header field 'config' must be an object, got {type(info.config).__name__}"
        )
    if not isinstance(info.metadata, dict):
        raise CheckpointError(
            f"{name}: header field 'metadata' must be an object, got {type(info.metadata).__name__}"
        )
    shared = info.metadata.get("shared", {})
    if not isinstance(shared, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in shared.items()
    ):
        raise CheckpointError(f"{name}: header field 'metadata.shared' must map prefixes to file names")


def load_checkpoint(
    model: nn.Module, path: str | Path, network: str | None = None, *, config: Any = None
) -> CheckpointInfo:
    """Load one of our checkpoints into ``model`` (all keys, exact shapes).

    Fails with :class:`CheckpointError` when the file was saved for another network or, if
    ``config`` is given, for a different configuration (the differing fields are named)."""
    info = read_checkpoint_info(path)
    network = network or infer_network(model)
    if info.network != network:
        raise CheckpointError(f"{info.path.name} holds weights of network {info.network!r}, not {network!r}")
    expected_config = _config_to_json_dict(config)
    if expected_config is not None and info.config is not None and info.config != expected_config:
        diffs = _flat_differences(info.config, expected_config)
        raise CheckpointError(
            f"{info.path.name} was saved with a different {network} configuration: " + "; ".join(diffs[:6])
        )
    try:
        state = load_file(str(info.path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read tensors of {info.path.name}: {exc}") from exc
    expected = model.state_dict()
    check_state_dict(state, expected, what=f"{info.path.name} does not fit network {network}")
    model.load_state_dict(state, strict=True)
    return info


def load_weights(
    model: nn.Module, path: str | Path, network: str | None = None
) -> LoadReport | CheckpointInfo:
    """Load ``path`` into ``model``: our ``.safetensors`` format, else an official file."""
    if Path(path).suffix == OUR_SUFFIX:
        return load_checkpoint(model, path, network)
    return load_official_checkpoint(model, path, network)
