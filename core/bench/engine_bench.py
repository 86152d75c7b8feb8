"""Benchmark of the engine against the official generation strategy and a dense grid.

On the same inputs (an InterHand2.6M frame with both hands), one run measures:

* the engine: the first call of a fresh engine, then preview (``preview_resolution``) and
  final (``resolution``) from a cold feature cache, the progressive pair, and a *drag update*
  (one right-hand keypoint moved 5 mm, image features and the left hand's state cached,
  preview resolution), also without the per-hand cache;
* the reference path (:mod:`core.bench.reference_path`): per-hand MISE from 32, nothing
  skipped or cached -- the official strategy;
* a dense-grid path: every lattice point evaluated (at ``dense_resolution``);
* agreement of the engine's final meshes with the reference's: volumetric IoU and Chamfer.

Architectures: the HALO-only mode with the official HALO checkpoint (real trained weights,
meaningful mesh agreement), and the official I + R architecture with shipped weights or,
without them, random weights that the caller passes in (the golden set's; timing only:
random R gives a blob, not a hand -- stated in the JSON).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from core.bench.compare import chamfer_m, mesh_bounds, volume_iou
from core.bench.inputs import halo_checkpoint, sample_inputs
from core.bench.reference_path import reference_halo, reference_im2hands
from core.bench.timing import sync, timed
from core.engine.backends import SHIPPED_WEIGHTS_DIR, Im2HandsBackend
from core.engine.engine import Engine
from core.engine.hands import hand_frames
from core.engine.mise import DenseGrid, dense_grid_values
from core.engine.penetration import HandField
from core.engine.settings import ReconstructionSettings
from core.models.ref_occ import RefOccNet
from core.models.registry import NETWORKS
from core.types import Reconstruction, TwoHandKeypoints

# network name -> its state dict in the official key layout (e.g. the golden random weights)
StateDictSource = Callable[[str], dict[str, torch.Tensor]]
DRAG_JOINT = ("right", 8)  # the right index fingertip (mano order)
DRAG_OFFSET_M = np.array([0.005, 0.0, 0.0])


def dragged(keypoints: TwoHandKeypoints) -> TwoHandKeypoints:
    moved = keypoints.copy()
    side, joint = DRAG_JOINT
    moved.hand(side)[joint] += DRAG_OFFSET_M
    return moved


def _agreement(engine_rec: Reconstruction, ref: dict, engine_fields: dict) -> dict:
    ious, chamfers = {}, {}
    for side in ("left", "right"):
        mine = getattr(engine_rec, side)
        theirs = ref["meshes"].get(side)
        if mine is None or theirs is None:
            continue
        chamfers[side] = chamfer_m(mine, theirs) * 1000.0
        if mine.is_empty and theirs.is_empty:
            ious[side] = 1.0
            continue
        bounds = mesh_bounds(mine, theirs)
        ious[side] = volume_iou(engine_fields[side], ref["fields"][side], bounds)
    return {
        "mesh_iou_vs_reference": float(np.mean(list(ious.values()))) if ious else float("nan"),
        "chamfer_mm_vs_reference": float(np.mean(list(chamfers.values()))) if chamfers else float("nan"),
        "per_hand_iou": ious,
        "per_hand_chamfer_mm": chamfers,
    }


def _fields_from_grids(frames, grids: dict[str, DenseGrid]) -> dict[str, HandField]:
    return {s: HandField(g, frames[s].cam_to_box) for s, g in grids.items()}


def bench_engine(engine: Engine, image, camera, keypoints, settings: ReconstructionSettings) -> dict:
    """Engine timings on one input: cold preview, cold final, progressive, drag update."""
    dev = engine.backend.device
    out = {}
    preview_settings = settings.with_(resolution=settings.preview_resolution)
    # The first call of a fresh engine also pays one-off costs (kernel selection, memory
    # pools); it is reported apart. preview_s is a new image's preview in a running app.
    engine.clear_cache()
    _, out["preview_first_call_s"] = timed(
        lambda: engine.reconstruct(image, camera, keypoints, preview_settings), dev
    )
    engine.clear_cache()
    preview, out["preview_s"] = timed(
        lambda: engine.reconstruct(image, camera, keypoints, preview_settings), dev
    )
    engine.clear_cache()
    final, out["final_s"] = timed(lambda: engine.reconstruct(image, camera, keypoints, settings), dev)
    out["final_timings_s"] = final.timings_s
    out["final_evaluations"] = final.diagnostics["evaluations"]
    out["preview_evaluations"] = preview.diagnostics["evaluations"]
    out["penetration_volume_cm3"] = final.penetration_volume_cm3
    out["final_vertices"] = {
        s: len(getattr(final, s).vertices) for s in ("left", "right") if getattr(final, s)
    }

    engine.clear_cache()
    t = time.perf_counter()
    stamps = []
    for rec in engine.reconstruct_progressive(image, camera, keypoints, settings):
        sync(dev)
        stamps.append((rec.stage, time.perf_counter() - t))
    out["progressive_s"] = dict(stamps)

    # Drag: the image is cached from the call above; one fingertip moves 5 mm.
    # The naive variant of the same drag first forgets the per-hand state (I values,
    # anchors, encoding of the hand that did not move); image features stay cached.
    moved = dragged(keypoints)
    drag, out["drag_update_s"] = timed(
        lambda: engine.reconstruct(image, camera, moved, preview_settings), dev
    )
    out["drag_cache_hit"] = bool(drag.diagnostics["cache_hit"])
    out["drag_timings_s"] = drag.timings_s
    out["drag_evaluations"] = drag.diagnostics["evaluations"]
    engine.reconstruct(image, camera, keypoints, preview_settings)
    engine.clear_hand_cache()
    _, out["drag_update_without_hand_cache_s"] = timed(
        lambda: engine.reconstruct(image, camera, moved, preview_settings), dev
    )
    return out


def _dense(engine: Engine, frames, resolution: int, settings: ReconstructionSettings, features) -> dict:
    """Every lattice point of both hands evaluated (I for HALO-only / I stage; R when refined)."""
    backend = engine.backend
    t = time.perf_counter()
    n = 0
    with torch.inference_mode():
        for frame in frames.values():
            fn = lambda p, f=frame: backend.init_occupancy(features, f, p, False)
            dense_grid_values(fn, resolution, settings.box_size, settings.threshold_init, chunk=65536)
            n += (resolution + 1) ** 3
    return {"dense_s": time.perf_counter() - t, "dense_resolution": resolution, "dense_evaluations": n}


def bench_halo(quick: bool, device: torch.device, resolution: int = 256) -> dict:
    image, camera, keypoints = sample_inputs()
    engine = Engine(halo_checkpoint(), device=str(device))
    res, preview, dense_res = (64, 32, 32) if quick else (resolution, min(64, resolution // 2), 64)
    settings = ReconstructionSettings(resolution=res, preview_resolution=preview, device=str(device))
    out = {"architecture": "halo_only (official HALO base checkpoint)", "resolution": res}
    out.update(bench_engine(engine, image, camera, keypoints, settings))
    frames = hand_frames(keypoints)
    ref = reference_halo(engine.backend, frames, res)
    ref["fields"] = _fields_from_grids(frames, ref["grids"])
    out["reference_s"] = ref["seconds"]
    out["reference_evaluations"] = ref["evaluations"]
    out["speedup_vs_reference"] = ref["seconds"] / out["final_s"]
    final, fields = engine.reconstruct_with_fields(image, camera, keypoints, settings)
    out.update(_agreement(final, ref, fields))
    out.update(_dense(engine, frames, dense_res, settings, None))
    return out


def _im2hands_engine(
    device: torch.device, golden_weights: StateDictSource | None
) -> tuple[Engine, str] | None:
    if (SHIPPED_WEIGHTS_DIR / NETWORKS["ref_occ"].file_name).is_file():
        return Engine(device=str(device)), "im2hands (shipped weights)"
    if golden_weights is None:
        return None
    net = RefOccNet()
    net.load_state_dict(golden_weights("ref_occ"))
    label = "im2hands official architecture, golden RANDOM weights (timing only: R's surface is not a hand)"
    return Engine.from_networks(ref=net, device=str(device)), label


def bench_im2hands(
    device: torch.device,
    resolution: int = 256,
    preview: int = 64,
    golden_weights: StateDictSource | None = None,
) -> dict | None:
    """The I + R architecture: shipped weights, else ``golden_weights("ref_occ")`` (random
    weights, timing only), else None."""
    preview = min(preview, resolution // 2)
    made = _im2hands_engine(device, golden_weights)
    if made is None:
        return None
    engine, label = made
    image, camera, keypoints = sample_inputs()
    settings = ReconstructionSettings(resolution=resolution, preview_resolution=preview, device=str(device))
    out = {"architecture": label, "resolution": resolution}
    out.update(bench_engine(engine, image, camera, keypoints, settings))
    frames = hand_frames(keypoints)
    backend: Im2HandsBackend = engine.backend
    ref = reference_im2hands(backend, image, camera, frames, resolution)
    ref["fields"] = _fields_from_grids(frames, ref["grids"])
    out["reference_s"] = ref["seconds"]
    out["reference_timings_s"] = ref["timings"]
    out["reference_evaluations"] = ref["evaluations"]
    out["speedup_vs_reference"] = ref["seconds"] / out["final_s"]
    final, fields = engine.reconstruct_with_fields(image, camera, keypoints, settings)
    out.update(_agreement(final, ref, fields))
    network = settings.with_(closed_form_ref=False)  # R's network at every point R is asked
    exact = (final, fields)  # without a closed form the default final is R's network already
    out["ref_closed_form"] = backend.ref_init_affine() is not None
    if out["ref_closed_form"]:
        # the same engine with R's network run, in the same process: the closed form's gain
        out["network_ref"] = bench_engine(engine, image, camera, keypoints, network)
        for key in ("preview_s", "final_s", "drag_update_s"):
            out[f"closed_form_speedup_{key[:-2]}"] = out["network_ref"][key] / out[key]
        engine.clear_cache()
        exact = engine.reconstruct_with_fields(image, camera, keypoints, network)
        out["network_ref"].update(_agreement(exact[0], ref, exact[1]))
        out["closed_form_iou_vs_network"] = _agreement(
            final, {"meshes": {"left": exact[0].left, "right": exact[0].right}, "fields": exact[1]}, fields
        )["mesh_iou_vs_reference"]
    out["guided"] = bench_guided(engine, image, camera, keypoints, network, ref, exact)
    return out


def bench_guided(engine: Engine, image, camera, keypoints, settings, ref: dict, exact) -> dict:
    """The approximate guided refinement (R up to a coarser lattice, see
    ``ReconstructionSettings.refinement_resolution``) against the reference and against
    the engine's exact final of the same run."""
    out = {}
    for coarse in (128, 64):
        if coarse >= settings.resolution:
            continue
        s = settings.with_(refinement_resolution=coarse)
        engine.clear_cache()
        (rec, fields), seconds = timed(
            lambda s=s: engine.reconstruct_with_fields(image, camera, keypoints, s), engine.backend.device
        )
        vs_exact = _agreement(
            rec, {"meshes": {"left": exact[0].left, "right": exact[0].right}, "fields": exact[1]}, fields
        )
        out[str(coarse)] = {
            "final_s": seconds,
            "speedup_vs_reference": ref["seconds"] / seconds,
            "final_timings_s": rec.timings_s,
            "evaluations": rec.diagnostics["evaluations"],
            **_agreement(rec, ref, fields),
            "mesh_iou_vs_exact": vs_exact["mesh_iou_vs_reference"],
            "chamfer_mm_vs_exact": vs_exact["chamfer_mm_vs_reference"],
        }
    return out
