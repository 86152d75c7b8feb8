"""The HALO-only extraction reproduces the official HALO base meshes (golden halo_base.npz).

Same settings as the reference generator: MISE resolution0 = 32, 3 upsampling steps,
threshold 0.5, padding 0.1, the golden (HALO-repo) matrices. Tolerance: symmetric
Chamfer-L1 <= 1e-4 normalised units (manifest) -- well under the 0.5 mm asked for."""

import json

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from core.engine.marching import extract_mesh_box
from core.engine.mise import MultiResolutionGrid, run_multiresolution
from core.engine.skeleton_mask import far_from_skeleton
from core.models.halo_base import load_halo_base_net
from tests import golden

CHAMFER_TOL_NORM = 1e-4  # manifest note for the halo_base meshes
NORM_TO_MM = 400.0  # 1 normalised unit = 0.4 m


@pytest.fixture(scope="module")
def halo():
    path = golden.halo_checkpoint_path()
    data = golden.load("halo_base.npz")  # skips without the golden folder, fails if it is incomplete
    if not path.is_file():
        pytest.skip(f"official HALO checkpoint not present: {path}")
    return load_halo_base_net(path), data


def _extract(net, data, i, skip_margin_m=None):
    mats = torch.from_numpy(data["unpose_mat"][i : i + 1]).double()
    lengths = torch.from_numpy(data["bone_lengths"][i : i + 1]).float()
    skip = None
    if skip_margin_m is not None:
        n = data["normalization_mat"][i].astype(np.float64)
        joints_box = (data["kps_mano_m"][i].astype(np.float64) @ n[:3, :3].T + n[:3, 3]) / 0.4
        skip = far_from_skeleton(joints_box, skip_margin_m / 0.4)
    grid = MultiResolutionGrid(32, 3, 0.5, 1.1, skip_outside=skip)

    def evaluate(queries):
        with torch.inference_mode():
            return [net(torch.from_numpy(q)[None], mats, lengths)[0].numpy() for q in queries]

    n_eval = run_multiresolution([grid], evaluate)
    v, f = extract_mesh_box(grid.to_dense())
    return v, f, n_eval


def _chamfer(a, b):
    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def test_golden_halo_meshes_match_official_generator(halo):
    net, data = halo
    indices = [int(i) for i in data["mesh_pose_indices"]]
    assert len(indices) >= 3
    timing_path = golden.golden_dir() / "timing.json"
    assert timing_path.is_file(), f"golden file missing: {timing_path}"
    timing = {t["pose_index"]: t for t in json.loads(timing_path.read_text())["halo_base_mise"]["timing"]}
    worst = 0.0
    for i in (indices[0], indices[len(indices) // 2]):  # 2 of the 9 keep the test short; all 9 match
        v, f, n_eval = _extract(net, data, i)
        gv = golden.load("halo_base.npz")[f"mesh{i:02d}_verts_canon_norm"]
        gf = golden.load("halo_base.npz")[f"mesh{i:02d}_faces"]
        assert abs(len(v) - len(gv)) <= 0.01 * len(gv) and abs(len(f) - len(gf)) <= 0.01 * len(gf)
        chamfer = _chamfer(v, gv)
        worst = max(worst, chamfer)
        assert chamfer <= CHAMFER_TOL_NORM, (
            f"pose {i}: Chamfer {chamfer:.3g} (= {chamfer * NORM_TO_MM:.4f} mm)"
        )
        if i in timing:  # the same refinement rule evaluates exactly the same points
            assert n_eval == timing[i]["evaluated_points"]
    print(f"worst symmetric Chamfer {worst:.2e} normalised = {worst * NORM_TO_MM * 1000:.2f} um")


def test_golden_halo_meshes_unchanged_by_skipping_far_points(halo):
    net, data = halo
    i = int(data["mesh_pose_indices"][-1])
    v_full, f_full, n_full = _extract(net, data, i)
    v_skip, f_skip, n_skip = _extract(net, data, i, skip_margin_m=0.05)
    assert len(v_skip) == len(v_full) and len(f_skip) == len(f_full)
    np.testing.assert_allclose(np.sort(v_skip, 0), np.sort(v_full, 0), atol=1e-5)
    assert n_skip < 0.8 * n_full
