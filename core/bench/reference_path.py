"""A baseline that follows the official generation strategy (../shared/reference/official_code.md
§G.1), for benchmarks and agreement checks -- deliberately without the engine's shortcuts:

* one MISE per hand from ``resolution0`` up, every lattice point of the coarse grid
  evaluated (no skipping far from the skeleton), both hands' points in one batch per round;
* network I meshes at the full resolution, anchors sampled on them;
* network R: every round re-runs I's image encoder, re-encodes both anchor sets and
  evaluates I at every query point (nothing cached between rounds or calls).

Meshes come back in the camera frame like the engine's, so the two can be compared.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from core.engine.backends import I_DEPTH_REFERENCE, HaloOnlyBackend, Im2HandsBackend
from core.engine.engine import sample_anchors
from core.engine.hands import HandFrame
from core.engine.image_input import crop_for_keypoints, make_network_crop
from core.engine.marching import extract_mesh_box, flip_faces
from core.engine.mise import DenseGrid, MultiResolutionGrid, run_multiresolution
from core.models.image_encoder import normalize_image
from core.types import Camera, HandMesh

REFERENCE_POINTS_BATCH = 100_000  # the reference generator's points_batch_size


def _grids(frames: dict[str, HandFrame], resolution0: int, steps: int, threshold: float, box: float):
    return {s: MultiResolutionGrid(resolution0, steps, threshold, box) for s in frames}


def _meshes(frames, grids) -> tuple[dict[str, HandMesh], dict[str, DenseGrid]]:
    meshes, dense = {}, {}
    for side, g in grids.items():
        dense[side] = g.to_dense()
        v, f = extract_mesh_box(dense[side])
        if len(v):
            v = frames[side].box_to_cam(v).astype(np.float32)
            if frames[side].flips_orientation:
                f = flip_faces(f)
        meshes[side] = HandMesh(v, f)
    return meshes, dense


def _run(grids, per_side: Callable[[str, np.ndarray], np.ndarray]) -> int:
    sides = list(grids)

    def evaluate(queries):
        out = []
        for side, q in zip(sides, queries, strict=True):
            vals = [
                per_side(side, q[i : i + REFERENCE_POINTS_BATCH])
                for i in range(0, len(q), REFERENCE_POINTS_BATCH)
            ]
            out.append(np.concatenate(vals) if vals else np.zeros(0, np.float32))
        return out

    return run_multiresolution(list(grids.values()), evaluate)


def reference_halo(
    backend: HaloOnlyBackend,
    frames: dict[str, HandFrame],
    resolution: int,
    resolution0: int = 32,
    threshold: float = 0.5,
    box_size: float = 1.1,
) -> dict:
    """HALO base meshes of both hands, official MISE strategy."""
    t0 = time.perf_counter()
    steps = int(round(np.log2(resolution / resolution0)))
    grids = _grids(frames, resolution0, steps, threshold, box_size)
    with torch.inference_mode():
        n = _run(grids, lambda side, q: backend.init_occupancy(None, frames[side], q, False, exact=True))
    meshes, dense = _meshes(frames, grids)
    return {"meshes": meshes, "grids": dense, "seconds": time.perf_counter() - t0, "evaluations": n}


def reference_im2hands(
    backend: Im2HandsBackend,
    image: np.ndarray,
    camera: Camera,
    frames: dict[str, HandFrame],
    resolution: int,
    resolution0: int = 32,
    thresholds: tuple[float, float] = (0.5, 0.45),
    box_size: float = 1.1,
    num_anchors: int = 512,
    seed: int = 0,
) -> dict:
    """I meshes (anchors) then R meshes of both hands, official strategy, from scratch.

    Long: the official strategy written out step by step, on purpose (the yardstick)."""
    t0 = time.perf_counter()
    steps = int(round(np.log2(resolution / resolution0)))
    timings = {}
    evaluations = {}
    with torch.inference_mode():
        crop = make_network_crop(
            image, camera, crop_for_keypoints(camera, [f.joints_cam_m for f in frames.values()])
        )
        img = normalize_image(torch.as_tensor(crop.crop_u8)[None].to(backend.device))
        cam_K = torch.as_tensor(crop.cam_K_crop, dtype=torch.float32, device=backend.device)[None]
        ref = backend.ref
        # R's image features: once per image, as in the reference
        features = ref.encode_image(img, cam_K=cam_K)

        # Stage I: full-resolution meshes (they are saved as R's anchor meshes).
        t = time.perf_counter()
        feats_i = type("F", (), {"init": features.init_occ})()
        grids = _grids(frames, resolution0, steps, thresholds[0], box_size)
        evaluations["init_occ_mise"] = _run(
            grids, lambda s, q: backend.init_occupancy(feats_i, frames[s], q, False)
        )
        init_meshes, _ = _meshes(frames, grids)
        timings["init_occ_mise"] = time.perf_counter() - t

        t = time.perf_counter()
        anchors = {s: sample_anchors(init_meshes[s], num_anchors, seed) for s in frames}
        anchors_mm = {
            s: torch.as_tensor((anchors[s] - frames[s].wrist_cam_m) * 1000.0, dtype=torch.float32)[None]
            for s in frames
        }
        hands = {s: frames[s].network_inputs(backend.device) for s in frames}
        timings["anchors"] = time.perf_counter() - t

        # Stage R: every round re-runs I's encoder and the anchor encoder, and I at every point.
        t = time.perf_counter()
        grids = _grids(frames, resolution0, steps, thresholds[1], box_size)
        counter = {"n": 0}

        def evaluate(queries):
            init_features = ref.init_occ.encode_image(img, cam_K=cam_K)
            context = ref.encode_anchors(features, anchors_mm, hands, cam_K)
            out = []
            for side, q in zip(grids, queries, strict=True):
                parts = []
                for i in range(0, len(q), REFERENCE_POINTS_BATCH):
                    p = torch.as_tensor(q[i : i + REFERENCE_POINTS_BATCH], device=backend.device)[None]
                    init = ref.init_occ.query(
                        init_features, side, hands[side], p, None, depth_reference=I_DEPTH_REFERENCE
                    )
                    occ = ref.query(features, context, side, hands[side], p, init_occ=init)
                    parts.append(occ[0].float().cpu().numpy())
                counter["n"] += len(q)
                out.append(np.concatenate(parts) if parts else np.zeros(0, np.float32))
            return out

        run_multiresolution(list(grids.values()), evaluate)
        evaluations["ref_occ_mise"] = counter["n"]
        meshes, dense = _meshes(frames, grids)
        timings["ref_occ_mise"] = time.perf_counter() - t
    return {
        "meshes": meshes,
        "grids": dense,
        "init_meshes": init_meshes,
        "seconds": time.perf_counter() - t0,
        "timings": timings,
        "evaluations": evaluations,
    }
