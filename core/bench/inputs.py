"""The bench's inputs: the InterHand2.6M frame, the official HALO checkpoint and the golden
folder's weights (random weights in the official key layout; golden README §0), all
read from the shared folder next to the repository (``IM2HANDS_SHARED_DIR``,
``IM2HANDS_GOLDEN_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from core.errors import InputError
from core.types import Camera, TwoHandKeypoints

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = "image69148.jpg"


def shared_dir() -> Path:
    return Path(os.environ.get("IM2HANDS_SHARED_DIR", REPO_ROOT.parent / "shared"))


def sample_inputs() -> tuple[np.ndarray, Camera, TwoHandKeypoints]:
    from core.io.images import load_image_rgb
    from core.io.keypoints import load_keypoints

    folder = shared_dir() / "realdata" / "interhand26m_samples"
    if not (folder / SAMPLE_IMAGE).is_file():
        raise InputError(f"benchmark inputs not found: {folder / SAMPLE_IMAGE} (set IM2HANDS_SHARED_DIR)")
    keypoints, camera = load_keypoints(folder, folder / SAMPLE_IMAGE)
    return load_image_rgb(folder / SAMPLE_IMAGE), camera, keypoints


def halo_checkpoint() -> Path:
    return shared_dir() / "realdata" / "weights" / "halo_base_yt3d_model_best.pt"


def golden_dir() -> Path:
    return Path(os.environ.get("IM2HANDS_GOLDEN_DIR", shared_dir() / "golden"))


def _npz_state_dict(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"golden weights missing: {path}")
    out = {}
    with np.load(path) as z:
        for k in z.files:
            a = z[k]
            out[prefix + k] = torch.from_numpy(a.astype(np.float32) if a.dtype == np.float16 else a)
    return out


def golden_state_dict(folder: Path, network: str) -> dict[str, torch.Tensor]:
    """The golden weights in the official key layout for ``network`` in {"encoder",
    "init_occ", "ref_occ", "kpts_ref"} (golden README §0); ``folder`` is the golden folder."""
    wdir = Path(folder) / "weights"
    encoder = _npz_state_dict(wdir / "resnet_simple.npz", "image_encoder.")
    if network == "encoder":
        return {k[len("image_encoder.") :]: v for k, v in encoder.items()}
    init_occ = {**_npz_state_dict(wdir / "init_occ.npz"), **encoder}
    if network == "init_occ":
        return init_occ
    if network == "ref_occ":
        return {
            **_npz_state_dict(wdir / "ref_occ.npz"),
            **encoder,
            **{"init_occ." + k: v for k, v in init_occ.items()},
        }
    if network == "kpts_ref":
        return {**_npz_state_dict(wdir / "kpts_ref.npz"), **encoder}
    raise ValueError(f"no golden weights for network {network!r}")
