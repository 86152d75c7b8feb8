"""``python main.py train NETWORK --config CONFIG --out DIR [--resume] [--max-iters N]
[--budget-minutes M]``

Trains one network (a key of ``core.training.recipes.RECIPE_MODULES``: kpts, init, ref,
halo) with its recipe in :mod:`core.training.recipes` and the loop of
:mod:`core.training.trainer`; ``encoder`` trains the shared image encoder on its own
(:mod:`core.training.encoder_training`: its own loop, config section ``encoder``, see
configs/encoder.json). Every network takes ``--budget-minutes``: the run stops cleanly
(checkpoint + weights + a ``runs.jsonl`` line) and the next ``--resume`` goes on from there.
CONFIG is a JSON file with a ``common`` section and one section per network (see
``configs/shipped.json``); ``init_from`` paths are relative to DIR.
Under ``torchrun`` the same command trains on every process (DistributedDataParallel)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.errors import InputError
from core.training.recipes import RECIPE_MODULES

# The encoder campaign has its own loop (no Recipe): one more choice.
NETWORK_CHOICES = (*RECIPE_MODULES, "encoder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("network", choices=NETWORK_CHOICES, help="which network to train")
    parser.add_argument("--config", type=Path, required=True, help="training config JSON (see configs/)")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (checkpoints, metrics, weights)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    parser.add_argument(
        "--max-iters", type=int, default=None, help="stop after this many iterations in total"
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="stop cleanly (checkpoint + weights) before this many minutes pass; --resume goes on",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _read_sections(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"training config not found: {path}")
    try:
        sections = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(sections, dict):
        raise InputError(f"{path} must hold a JSON object with a section per network")
    return sections


def load_config(path: Path, network: str):
    from core.io.keypoints import reading
    from core.training.recipes.config import TrainConfig

    sections = _read_sections(path)
    with reading(path, InputError):  # a value of the wrong type: our error naming the file
        return TrainConfig.from_sections(sections, network)


def run_encoder(args: argparse.Namespace) -> int:
    from core.io.keypoints import reading
    from core.training.encoder_training import EncoderTrainConfig, train_encoder

    sections = _read_sections(args.config)
    if not isinstance(sections.get("encoder"), dict):
        raise InputError(f"{args.config} has no 'encoder' section (an object)")
    with reading(args.config, InputError):  # a value of the wrong type: our error naming the file
        cfg = EncoderTrainConfig.from_dict(sections["encoder"], base_dir=args.config.resolve().parent)
    result = train_encoder(
        cfg,
        args.out,
        resume=args.resume,
        budget_minutes=args.budget_minutes,
        max_iters=args.max_iters,
        progress=not args.no_progress,
    )
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
    print(
        f"encoder: {result.iterations} iterations in all ({result.seconds_this_run / 60:.1f} min this run, "
        f"{result.seconds_total / 60:.1f} min in all; stopped by {result.stopped_by}): {metrics}"
    )
    print(f"weights: {result.export_path}")
    return 0


def run(args: argparse.Namespace) -> int:
    from core.training.trainer import train

    if args.max_iters is not None and args.max_iters < 1:
        raise InputError("--max-iters must be at least 1")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise InputError("--budget-minutes must be positive")
    if args.network == "encoder":
        return run_encoder(args)
    cfg = load_config(args.config, args.network)
    result = train(cfg, args.out, resume=args.resume, max_iters=args.max_iters,
                   budget_minutes=args.budget_minutes, progress=not args.no_progress)  # fmt: skip
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
    stop = "" if result.stopped_by == "max_iters" else f", stopped by its {result.stopped_by}"
    done = f"{result.iterations} iterations ({result.seconds:.0f} s{stop})"
    print(f"trained {args.network} for {done}: {metrics}")
    print(f"weights: {result.export_path}\ncheckpoint: {result.checkpoint_path}")
    return 0
