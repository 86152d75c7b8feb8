"""``python main.py sprint --out DIR [--minutes 8] [--workers N] [--eval-count 30] [--quick]``:
a timed training sprint of the shipped recipes for a GPU machine (:mod:`core.training.sprint`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the sprint's files")
    parser.add_argument("--minutes", type=float, default=8.0, help="minutes for all stages (default 8)")
    parser.add_argument("--workers", type=int, default=None, help="render and data processes (default: all)")
    parser.add_argument("--eval-count", type=int, default=30, help="test samples evaluated (default 30)")
    parser.add_argument("--quick", action="store_true", help="a few samples and iterations (a check)")


def run(args: argparse.Namespace) -> int:
    from core.training.sprint import SprintPlan, run_sprint

    workers = (os.cpu_count() or 1) if args.workers is None else args.workers
    if workers < 1 or args.minutes <= 0 or args.eval_count < 2:
        raise InputError("--workers and --minutes must be positive, --eval-count at least 2")
    if args.quick:
        plan = SprintPlan.tiny(min(workers, 2))
    else:
        plan = SprintPlan.full(args.minutes, workers, args.eval_count)
    report = run_sprint(plan, args.out)
    failed = [s["name"] for s in report["stages"] if s["returncode"] != 0]
    stages, minutes = len(report["stages"]), report["minutes_so_far"]
    print(f"sprint: {stages} stages in {minutes:.1f} min; report {args.out / 'sprint.json'}")
    if failed:
        print(f"failed: {', '.join(failed)} (see their output_tail in the report)")
        return 1
    return 0
