"""``python main.py train NETWORK --config CONFIG --out DIR [--resume] [--max-iters N]``

Trains one network (a key of ``core.training.recipes.RECIPE_MODULES``: kpts, init, ref,
halo) with its recipe in :mod:`core.training.recipes` and the loop of
:mod:`core.training.trainer`. CONFIG is a JSON file with a ``common`` section and one section
per network (see ``configs/shipped.json``); ``init_from`` paths are relative to DIR. Under
``torchrun`` the same command trains on every process (DistributedDataParallel)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.errors import InputError
from core.training.recipes import RECIPE_MODULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("network", choices=tuple(RECIPE_MODULES), help="which network to train")
    parser.add_argument("--config", type=Path, required=True, help="training config JSON (see configs/)")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (checkpoints, metrics, weights)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    parser.add_argument(
        "--max-iters", type=int, default=None, help="stop after this many iterations in total"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_config(path: Path, network: str):
    from core.training.recipes.config import TrainConfig

    if not path.is_file():
        raise InputError(f"training config not found: {path}")
    try:
        sections = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(sections, dict):
        raise InputError(f"{path} must hold a JSON object with a section per network")
    return TrainConfig.from_sections(sections, network)


def run(args: argparse.Namespace) -> int:
    from core.training.trainer import train

    if args.max_iters is not None and args.max_iters < 1:
        raise InputError("--max-iters must be at least 1")
    cfg = load_config(args.config, args.network)
    result = train(cfg, args.out, resume=args.resume, max_iters=args.max_iters, progress=not args.no_progress)
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
    print(f"trained {args.network} for {result.iterations} iterations ({result.seconds:.0f} s): {metrics}")
    print(f"weights: {result.export_path}\ncheckpoint: {result.checkpoint_path}")
    return 0
