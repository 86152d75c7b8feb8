"""``python main.py bench [--quick] [--json PATH] [--device cpu|cuda|auto]``."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="HALO-only part at low resolution (well under a minute)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--resolution", type=int, default=256, help="final grid (full run)")
    parser.add_argument(
        "--parts", default="halo,im2hands", help="comma-separated: halo (HALO-only mode), im2hands (I + R)"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from core.bench.inputs import golden_dir, golden_state_dict
    from core.bench.run import HEADLINE_KEYS, run_benchmark
    from core.io.atomic import write_text_atomic
    from core.io.output_set import check_output_file

    if args.json:
        check_output_file(args.json, (".json",), "--json")
    torch.set_num_threads(max(1, args.threads))
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    folder = golden_dir()  # the golden random weights, where this checkout has the golden set
    golden = partial(golden_state_dict, folder) if (folder / "weights").is_dir() else None
    report = run_benchmark(
        quick=args.quick, device=args.device, resolution=args.resolution, parts=parts, golden_weights=golden
    )
    text = json.dumps(report, indent=1, default=_jsonable)
    if args.json:
        write_text_atomic(args.json, text)
    summary = {k: report[k] for k in HEADLINE_KEYS}
    for part in ("halo_vs_official_code", "init_vs_official_code"):
        if report.get(part):  # against the official code's own recorded timings
            summary[f"{part}_speedup"] = report[part]["speedup_vs_official_code"]
    im2hands = report.get("im2hands") or {}
    if im2hands.get("ref_closed_form"):  # the identity R in closed form against R's network
        summary["network_ref"] = {
            k: im2hands["network_ref"][k] for k in ("preview_s", "final_s", "drag_update_s")
        }
        summary["closed_form_iou_vs_network"] = im2hands["closed_form_iou_vs_network"]
    guided = im2hands.get("guided") or {}
    for coarse, g in guided.items():  # the approximate mode, R up to a coarser lattice
        summary[f"guided_{coarse}"] = {
            k: g[k] for k in ("final_s", "speedup_vs_reference", "mesh_iou_vs_reference", "mesh_iou_vs_exact")
        }
    print(json.dumps(summary, indent=1, default=_jsonable))
    return 0


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
