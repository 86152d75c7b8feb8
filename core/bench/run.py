"""``run_benchmark``: the whole bench in one report (see :mod:`core.bench.engine_bench`)."""

from __future__ import annotations

import os
import platform
import time

import torch

from core.bench.engine_bench import StateDictSource, bench_halo, bench_im2hands
from core.bench.official_code import bench_init_vs_official_code, bench_vs_official_code
from core.bench.timing import machine_calibration, peak_memory_mb
from core.engine.backends import resolve_device
from core.errors import InputError

# The figures `bench` prints and promises in its JSON (the preferred part's values).
HEADLINE_KEYS = (
    "device",
    "architecture",
    "resolution",
    "preview_s",
    "final_s",
    "reference_s",
    "speedup_vs_reference",
    "mesh_iou_vs_reference",
    "chamfer_mm_vs_reference",
    "drag_update_s",
    "preview_first_call_s",
    "drag_update_without_hand_cache_s",
)


def run_benchmark(
    quick: bool = False,
    device: str = "auto",
    resolution: int = 256,
    parts: tuple[str, ...] = ("halo", "im2hands"),
    golden_weights: StateDictSource | None = None,
) -> dict:
    """Every part of the bench in one run; the top-level keys summarise the official I + R
    architecture when it ran, else the HALO-only mode. ``resolution`` is the final grid of
    the full run (the quick run uses 64). ``golden_weights``: the golden random weights by
    network (I against the official code's timings; R when no weights are shipped)."""
    dev = resolve_device(device)
    report = {
        "device": str(dev) if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "quick": quick,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }
    report["calibration_before"] = machine_calibration(dev)
    t = time.perf_counter()
    report["halo_only"] = bench_halo(quick, dev, resolution) if "halo" in parts else None
    if "halo" in parts and not quick:
        report["halo_vs_official_code"] = bench_vs_official_code(dev)
    if "im2hands" in parts and not quick:
        init_state = golden_weights("init_occ") if golden_weights is not None else None
        report["init_vs_official_code"] = bench_init_vs_official_code(dev, init_state)
    report["im2hands"] = None
    if "im2hands" in parts and not quick:
        report["im2hands"] = bench_im2hands(dev, resolution, golden_weights=golden_weights)
    main = report["im2hands"] or report["halo_only"]
    if main is None:
        raise InputError("nothing to benchmark: choose the halo and/or im2hands parts")
    for key in HEADLINE_KEYS:
        if key != "device":
            report[key] = main[key]
    report["memory"] = peak_memory_mb(dev)
    report["bench_wall_s"] = time.perf_counter() - t
    report["calibration_after"] = machine_calibration(dev)
    report["load_average_at_end"] = os.getloadavg()
    return report
