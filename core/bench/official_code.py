"""Our extraction against the **official code's own timings** (golden ``timing.json``,
recorded on this machine kind): HALO-only MISE per pose, and network I alone per image."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import torch
from scipy.spatial import cKDTree

from core.bench.inputs import golden_dir, halo_checkpoint
from core.bench.timing import timed
from core.engine.engine import Engine
from core.engine.marching import extract_mesh_box
from core.engine.mise import MultiResolutionGrid, run_multiresolution
from core.engine.settings import ReconstructionSettings
from core.engine.skeleton_mask import far_from_skeleton
from core.models.halo_base import load_halo_base_net
from core.models.init_occ import InitOccNet
from core.types import Camera, TwoHandKeypoints


def _halo_mesh_box(net, mats, lengths, skip, device) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """One HALO base mesh (box coordinates) by MISE 32 -> 256 at the reference settings."""
    grid = MultiResolutionGrid(32, 3, 0.5, 1.1, skip_outside=skip)

    def evaluate(queries):
        with torch.inference_mode():
            p = [torch.from_numpy(q)[None].to(device) for q in queries]
            return [net(q, mats, lengths, fold=True)[0].float().cpu().numpy() for q in p]  # as the engine

    n_eval = run_multiresolution([grid], evaluate)
    return extract_mesh_box(grid.to_dense()), n_eval


def bench_vs_official_code(
    device: torch.device, skip_margin_m: float | None = 0.05, max_poses: int | None = None
) -> dict | None:
    """Our HALO-only extraction against the **official code's own timings** (golden
    ``timing.json``: HALO's generator on this machine kind, per pose, MISE 32 -> 256) on the
    same poses, matrices and checkpoint, with the mesh agreement (symmetric Chamfer, mm)
    against the official meshes where the golden set has them. None without the golden set."""
    folder = golden_dir()
    if not (folder / "timing.json").is_file() or not (folder / "halo_base.npz").is_file():
        return None
    if not halo_checkpoint().is_file():
        return None
    official = json.loads((folder / "timing.json").read_text())["halo_base_mise"]["timing"][:max_poses]
    data = np.load(folder / "halo_base.npz")
    net = load_halo_base_net(halo_checkpoint(), device)
    rows = []
    for entry in official:
        i = int(entry["pose_index"])
        mats = torch.from_numpy(data["unpose_mat"][i : i + 1]).double().to(device)
        lengths = torch.from_numpy(data["bone_lengths"][i : i + 1]).float().to(device)
        skip = None
        if skip_margin_m is not None:
            n = data["normalization_mat"][i].astype(np.float64)
            joints_box = (data["kps_mano_m"][i].astype(np.float64) @ n[:3, :3].T + n[:3, 3]) / 0.4
            skip = far_from_skeleton(joints_box, skip_margin_m / 0.4)

        extract = partial(_halo_mesh_box, net, mats, lengths, skip, device)
        ((verts, _), n_eval), seconds = timed(extract, device)
        row = {
            "pose_index": i,
            "official_s": entry["wall_time_s"],
            "ours_s": seconds,
            "official_evaluations": entry["evaluated_points"],
            "our_evaluations": n_eval,
        }
        key = f"mesh{i:02d}_verts_canon_norm"
        if key in data.files:
            gv = data[key]
            chamfer = 0.5 * (cKDTree(gv).query(verts)[0].mean() + cKDTree(verts).query(gv)[0].mean())
            row["chamfer_mm_vs_official_mesh"] = float(chamfer * 400.0)  # 1 normalised unit = 0.4 m
        rows.append(row)
    official_s = float(np.mean([r["official_s"] for r in rows]))
    ours_s = float(np.mean([r["ours_s"] for r in rows]))
    chamfers = [r["chamfer_mm_vs_official_mesh"] for r in rows if "chamfer_mm_vs_official_mesh" in r]
    return {
        "what": "HALO base MISE 32->256 per hand, official checkpoint, golden poses; official times "
        "from golden timing.json (the official code on this machine kind)",
        "skip_margin_m": skip_margin_m,
        "poses": len(rows),
        "official_mean_s": official_s,
        "ours_mean_s": ours_s,
        "speedup_vs_official_code": official_s / ours_s,
        "worst_chamfer_mm_vs_official_mesh": max(chamfers) if chamfers else None,
        "per_pose": rows,
    }


def bench_init_vs_official_code(
    device: torch.device,
    init_state: dict[str, torch.Tensor] | None,
    max_samples: int | None = None,
    resolution: int = 256,
    no_skipping: bool = True,
) -> dict | None:
    """Network I alone (official architecture, the golden state dict) on the two golden
    images against the official code's own I-MISE timings (golden ``timing.json``: both hands
    of one image, MISE 32 -> 256, this machine kind); ``init_state``: I's golden state dict
    (official layout; None: skipped). The inputs are the golden 256 px crops
    and keypoints; the engine re-crops them (hands fill 80 %) and fixes I's depth reference
    at the wrist (the reference's Q2 uses each batch's first query), so the fields -- and the
    point counts -- differ slightly: a timing comparison, not a mesh comparison.

    Long: one timing loop with per-variant rows against the golden timings."""
    folder = golden_dir()
    needed = [folder / n for n in ("timing.json", "two_hand_batch.npz")]
    if init_state is None or not all(p.exists() for p in needed):
        return None
    net = InitOccNet()
    net.load_state_dict(init_state)
    official = json.loads((folder / "timing.json").read_text()).get("init_occ_mise")
    if not official:
        return None
    batch = np.load(folder / "two_hand_batch.npz")
    engine = Engine.from_networks(init=net, device=str(device))
    rows = []
    variants = (("", 0.05), ("_no_skipping", None)) if no_skipping else (("", 0.05),)
    for entry in official[:max_samples]:
        b = int(entry["sample"])
        R = batch["cam_R"][b].astype(np.float64)
        T = batch["cam_T"][b].astype(np.float64)
        keypoints = TwoHandKeypoints(
            left=batch["pred_left_joints_mano_m"][b] @ R.T + T,
            right=batch["pred_right_joints_mano_m"][b] @ R.T + T,
        )
        image = batch["img_rgb_u8"][b]
        camera = Camera(K=batch["cam_K"][b], width=image.shape[1], height=image.shape[0])
        row = {
            "sample": b,
            "official_s": entry["wall_time_s"],
            "official_evaluations": entry["evaluated_points_both_hands"],
        }
        for name, margin in variants:
            settings = ReconstructionSettings(
                resolution=resolution, use_refinement=False, device=str(device), skip_margin_m=margin
            )
            engine.clear_cache()
            rec, seconds = timed(partial(engine.reconstruct, image, camera, keypoints, settings), device)
            row[f"ours{name}_s"] = seconds
            row[f"our{name}_evaluations"] = rec.diagnostics["evaluations"]["init_occ"]
        rows.append(row)
    official_s = float(np.mean([r["official_s"] for r in rows]))
    ours_s = float(np.mean([r["ours_s"] for r in rows]))
    no_skip_s = float(np.mean([r["ours_no_skipping_s"] for r in rows])) if no_skipping else None
    return {
        "what": f"network I alone, both hands at {resolution}, official architecture, golden (random) "
        "weights, golden inputs; official times (256) from golden timing.json",
        "official_mean_s": official_s,
        "ours_mean_s": ours_s,
        "ours_no_skipping_mean_s": no_skip_s,
        "speedup_vs_official_code": official_s / ours_s,
        "per_sample": rows,
    }
