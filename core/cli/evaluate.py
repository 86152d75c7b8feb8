"""``python main.py evaluate --data synthetic:seed=S,count=N [--weights DIR] [--json PATH] [--quick]
[--shuffle-images]``: IoU, Chamfer-L1 and penetration volume of the rows HALO, I,
I+R (ground-truth keypoints) and K+I, K+I+R (noisy keypoints), and K's MPJPE -- printed as
tables laid out like the paper's Tables 1, 2 and 4 (see :mod:`core.training.evaluation`).
``--shuffle-images`` runs the rows that read the image again with each sample's image swapped
for another test sample's (:mod:`core.training.image_shuffle`): the image ablation.
Only synthetic data: the occupancy metrics need ground-truth meshes, which the InterHand2.6M
samples here do not have (K on real keypoints: ``python -m core.detect.evaluate_interhand``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from core.errors import InputError

QUICK = {"resolution": 64, "anchor_resolution": 32, "n_points": 20_000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="synthetic:seed=S,count=N")
    parser.add_argument(
        "--weights", type=Path, default=None, help="weights folder (default: resources/weights)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--resolution", type=int, default=128, help="grid resolution (default 128)")
    parser.add_argument(
        "--points", type=int, default=100_000, help="IoU / Chamfer points per hand (default 100k)"
    )
    parser.add_argument("--quick", action="store_true", help="resolution 64, 20k points: a fast check")
    parser.add_argument(
        "--resolve-contact", action="store_true",
        help="every row with the engine's contact resolution (points inside both hands go to the deeper one)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--rows",
        default=None,
        help="comma-separated rows to run (default all: HALO,I,I+R,K+I,K+I+R); K = network K "
        "alone, its keypoints' MPJPE without meshes",
    )
    parser.add_argument(
        "--shuffle-images",
        action="store_true",
        help="image ablation: also run every row that reads the image with each sample's image "
        "replaced by the next test sample's (keypoints, camera and ground truth its own); "
        "needs count >= 2",
    )


def parse_rows(spec: str) -> tuple[str, ...]:
    from core.training.evaluation import K_ONLY_ROW, ROW_NAMES

    known = (*ROW_NAMES, K_ONLY_ROW)
    rows = tuple(dict.fromkeys(part.strip() for part in spec.split(",") if part.strip()))
    bad = [r for r in rows if r not in known]
    if bad or not rows:
        raise InputError(f"bad --rows {spec!r}: choose from {', '.join(known)} (comma-separated)")
    return rows


def parse_data(spec: str) -> tuple[str, dict]:
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        values = {}
        for part in filter(None, rest.split(",")):
            key, _, value = part.partition("=")
            if key not in ("seed", "count") or not value.lstrip("-").isdigit():
                raise InputError(f"bad --data part {part!r}; use synthetic:seed=S,count=N")
            values[key] = int(value)
        if values.get("count", 1) < 1:
            raise InputError("--data synthetic: count must be at least 1")
        return kind, {"seed": values.get("seed", 1234), "count": values.get("count", 200)}
    raise InputError(f"unknown --data {spec!r}; use synthetic:seed=S,count=N")


def engines(weights: Path | None, device: str):
    from core.engine.backends import SHIPPED_WEIGHTS_DIR, resolve_device
    from core.engine.engine import Engine
    from core.models.registry import load_weights_folder

    folder = weights or SHIPPED_WEIGHTS_DIR
    if not folder.is_dir():
        raise InputError(f"weights folder not found: {folder}")
    dev = str(resolve_device(device))
    nets = load_weights_folder(folder, dev)
    im2hands = None
    if "ref_occ" in nets:
        im2hands = Engine.from_networks(ref=nets["ref_occ"], kpts=nets.get("kpts_ref"), device=dev)
    halo = Engine.from_networks(halo=nets["halo_base"], device=dev) if "halo_base" in nets else None
    return im2hands, halo


def run(args: argparse.Namespace) -> int:
    from core.io.atomic import write_text_atomic
    from core.io.output_set import check_output_file
    from core.training import evaluation
    from core.training.image_shuffle import NOTHING_TO_SHUFFLE

    if args.json is not None:
        check_output_file(args.json, (".json",), "--json")
    _, spec = parse_data(args.data)
    if args.shuffle_images and spec["count"] < 2:
        raise InputError(NOTHING_TO_SHUFFLE)
    cfg = evaluation.EvalConfig(resolution=args.resolution, n_points=args.points)
    if args.quick:
        cfg = evaluation.EvalConfig(**QUICK)
    if args.rows is not None:
        cfg = replace(cfg, rows=parse_rows(args.rows))
    if args.resolve_contact:
        cfg = replace(cfg, resolve_contact=True)
    im2hands, halo = engines(args.weights, args.device)
    samples = evaluation.synthetic_samples(spec["seed"], spec["count"])

    def progress(done: int, name: str) -> None:
        sys.stderr.write(f"\r{done}/{spec['count']} samples ({name})")
        sys.stderr.flush()

    result = evaluation.evaluate(
        samples, im2hands=im2hands, halo=halo, config=cfg, progress=progress,
        shuffle_images=args.shuffle_images,
    )  # fmt: skip
    sys.stderr.write("\n")
    print(evaluation.format_tables(result))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(result.to_json(), indent=2))
        print(f"wrote {args.json}")
    return 0
