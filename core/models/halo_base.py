"""The HALO base network (keypoints-only implicit hand, no image): attribute ``decoder``
(a :class:`HaloPartDecoder` without injection, ``lin{b}_2`` is [64, 64]) so the official
checkpoint ``resource/halo_base_yt3d/model_best.pt`` loads with ``strict=True``.

HALO convention: the decoder takes the canonical normalised points ``p`` directly (no /0.4;
the HALO repo's matrices carry no extra S(0.4), unlike Im2Hands' ``inputs``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import CheckpointError
from core.models.config import HALO_BASE_DECODER, HaloDecoderConfig
from core.models.halo_decoder import HaloPartDecoder, occupancy_from_logits


class HaloBaseNet(nn.Module):
    """p (B, N, 3) canonical normalised, unpose matrices (B, 16, 4, 4), bone lengths (B, 16)
    -> occupancy (B, N) = max over the 16 parts of sigmoid(logit)."""

    def __init__(self, cfg: HaloDecoderConfig = HALO_BASE_DECODER):
        super().__init__()
        if cfg.add_feature_dim:
            raise ValueError("the HALO base network has no injected feature (add_feature_dim must be 0)")
        self.decoder = HaloPartDecoder(cfg)

    def part_logits(
        self, p: torch.Tensor, unpose_mats: torch.Tensor, bone_lengths: torch.Tensor, fold: bool | None = None
    ) -> torch.Tensor:
        """``fold``: the decoder's evaluation order (None: its default, the exact float32 order
        of the HALO repo for the official checkpoint; True: the folded fast order)."""
        return self.decoder(p, unpose_mats, bone_lengths, fold=fold)

    def part_probs(
        self, p: torch.Tensor, unpose_mats: torch.Tensor, bone_lengths: torch.Tensor
    ) -> torch.Tensor:
        """Per-part sigmoid (B, N, 16) (official ``decode(..., reduce_part=False)``)."""
        return torch.sigmoid(self.part_logits(p, unpose_mats, bone_lengths))

    def forward(
        self, p: torch.Tensor, unpose_mats: torch.Tensor, bone_lengths: torch.Tensor, fold: bool | None = None
    ) -> torch.Tensor:
        return occupancy_from_logits(self.part_logits(p, unpose_mats, bone_lengths, fold))[0]


def _numpy_scalar_globals() -> list:
    """The numpy objects a checkpoint needs to unpickle a numpy scalar (e.g. the stored
    ``loss_val_best``): the scalar reconstructor and the dtype (classes) -- nothing else."""
    # numpy 2 renamed numpy.core to numpy._core (pickles name either, torch matches the object)
    core_name = (
        "numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core.multiarray"
    )
    allowed = [importlib.import_module(core_name).scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [dtypes.Float32DType, dtypes.Float64DType, dtypes.Int64DType, dtypes.Int32DType]
    return allowed


def _first_reason(exc: BaseException) -> str:
    """torch's first line of the error, without its advice to turn ``weights_only`` off
    (which would run whatever code the file holds)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    keep = [
        line
        for line in lines
        if "weights_only" not in line and "trust" not in line.lower() and "docs" not in line.lower()
    ]
    text = (keep[0] if keep else type(exc).__name__).rstrip(".")
    return text[:200]


def load_torch_checkpoint(path: str | Path) -> dict:
    """``torch.load`` with ``weights_only=True`` on the CPU, allow-listing numpy scalars.

    Raises :class:`CheckpointError` with a readable message when the file is missing or is
    not a weights-only torch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(
            f"cannot read {path.name} as a weights-only torch checkpoint: {_first_reason(exc)}. "
            "Files that need code to load are refused; nothing in them was run"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a dict of tensors (got {type(data).__name__})")
    return data


def load_halo_base_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of the official HALO base checkpoint (its ``model`` entry, keys
    ``decoder.*``), ready for ``HaloBaseNet().load_state_dict(..., strict=True)``."""
    data = load_torch_checkpoint(path)
    state = data.get("model", data)
    if not isinstance(state, dict) or not any(k.startswith("decoder.") for k in state):
        raise CheckpointError(f"{path} has no 'decoder.*' weights; is it a HALO base checkpoint?")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_halo_base_net(path: str | Path, device: str | torch.device = "cpu") -> HaloBaseNet:
    """A ready-to-use :class:`HaloBaseNet` (eval mode) from the official checkpoint."""
    net = HaloBaseNet()
    state = load_halo_base_checkpoint(path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the HALO base network: {exc}") from exc
    return net.to(device).eval()
