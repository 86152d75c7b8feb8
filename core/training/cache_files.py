"""Pieces shared by the training caches (K's feature cache, R's decoder-input cache): a
fingerprint of the weights a cache was made with, and its metadata file, written atomically
and last so that a cache without it is incomplete."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from core.io.atomic import write_text_atomic


def state_fingerprint(net: nn.Module, include: Callable[[str], bool]) -> str:
    """SHA-1 of the names and float32 values of the state-dict tensors (weights and BatchNorm
    statistics) whose names ``include`` accepts."""
    h = hashlib.sha1()
    for name, tensor in sorted(net.state_dict().items()):
        if include(name):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def read_meta(path: Path) -> dict | None:
    """The metadata at ``path``, or None when there is none (no cache, or an incomplete one)."""
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # damaged: treated as no cache, which is rebuilt
        return None
    return meta if isinstance(meta, dict) else None


def write_meta(path: Path, meta: dict) -> None:
    """Write ``meta`` as JSON at ``path`` atomically (a temporary file, then a rename)."""
    write_text_atomic(path, json.dumps(meta, indent=1))
