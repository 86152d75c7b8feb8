"""Access to the golden test vectors produced by the official code.

The folder comes from ``IM2HANDS_GOLDEN_DIR`` (default ``../shared/golden`` next to the
repository). When the folder is absent the golden tests skip; when it exists but a file
or array is missing, they fail. Tolerances come from the folder's ``manifest.json``.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("IM2HANDS_SHARED_DIR", REPO_ROOT.parent / "shared"))


def golden_dir() -> Path:
    return Path(os.environ.get("IM2HANDS_GOLDEN_DIR", SHARED_DIR / "golden"))


def realdata_dir() -> Path:
    return SHARED_DIR / "realdata"


def require_golden_dir() -> Path:
    d = golden_dir()
    if not d.is_dir():
        pytest.skip(f"golden folder {d} not present")
    return d


@cache
def manifest() -> dict:
    path = require_golden_dir() / "manifest.json"
    assert path.is_file(), f"golden manifest missing: {path}"
    return json.loads(path.read_text())


@cache
def load(name: str) -> dict[str, np.ndarray]:
    """All arrays of golden file ``name`` (e.g. ``"init_occ.npz"``). Fails if missing."""
    path = require_golden_dir() / name
    assert path.is_file(), f"golden file missing: {path}"
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def tolerance(file: str, array: str) -> dict:
    entry = manifest()["files"][file]["arrays"].get(array)
    assert entry is not None, f"{array} not listed in manifest for {file}"
    return entry["tolerance"]


def assert_matches(actual, file: str, array: str, *, max_abs: float | None = None) -> float:
    """Compare ``actual`` with golden ``file[array]`` under the manifest tolerance
    (or ``max_abs`` when given). Returns the max abs difference."""
    expected = load(file)[array]
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().cpu().numpy()
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{file}:{array} shape {actual.shape} != {expected.shape}"
    tol = tolerance(file, array)
    if max_abs is None:
        if tol.get("exact"):
            max_abs = 0.0
        else:
            assert "max_abs" in tol, f"no numeric tolerance for {file}:{array}: {tol}"
            max_abs = float(tol["max_abs"])
    delta = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    diff = float(delta.max()) if delta.size else 0.0
    assert diff <= max_abs, f"{file}:{array} max |diff| {diff:.3g} > tolerance {max_abs:.3g}"
    return diff


def official_state_dict(network: str) -> dict[str, torch.Tensor]:
    """Golden weights in the official key layout for ``network`` in
    {"encoder", "init_occ", "ref_occ", "kpts_ref"} (see the golden README §0)."""
    from core.bench.inputs import golden_state_dict

    return golden_state_dict(require_golden_dir(), network)


def halo_checkpoint_path() -> Path:
    return realdata_dir() / "weights" / "halo_base_yt3d_model_best.pt"


def two_hand_batch_hands() -> dict:
    """Per-side ``HandInputs`` of two_hand_batch.npz (the official preprocess_joints outputs)."""
    from core.models.init_occ import HandInputs

    batch = load("two_hand_batch.npz")
    t = lambda key: torch.from_numpy(batch[key])
    return {
        side: HandInputs(
            unpose_mats=t(f"{side}_inputs"),
            bone_lengths=t(f"{side}_bone_lengths"),
            root_rot_mat=t(f"{side}_root_rot_mat"),
            root_xyz=t(f"{side}_root_xyz"),
            cam_R=t("cam_R"),
            cam_T=t("cam_T"),
        )
        for side in ("left", "right")
    }
