"""``python main.py synth --preview PNG [--seed S] [--count 8]`` draws a contact sheet of synthetic
samples (image + keypoint skeletons, ground-truth meshes from the camera and from the side);
``python main.py synth --out DIR --count N [--seed S] [--workers W] [--budget-minutes M]`` writes
samples to disk (``<seed>.png`` + ``<seed>.npz`` each, see :func:`core.synth.samples.save_sample`);
with a budget it stops when the time is up, keeping every sample finished by then (an npz
appears only complete), so a timed run gives as many renders as the machine makes."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from core.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preview", type=Path, default=None, help="write a contact sheet PNG here")
    parser.add_argument("--out", type=Path, default=None, help="write samples (png + npz) into this folder")
    parser.add_argument("--count", type=int, default=8, help="number of samples (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sample; seeds are consecutive")
    parser.add_argument("--interaction", default=None, help="force one interaction (see core.synth.scenes)")
    parser.add_argument(
        "--points",
        type=int,
        default=2048,
        help="occupancy samples per hand and kind (uniform / near-surface), default 2048",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes for --out (one torch thread each)")
    parser.add_argument("--meshes", action="store_true", help="also store the ground-truth meshes in the npz")
    parser.add_argument(
        "--budget-minutes", type=float, default=None,
        help="--out: stop after this many minutes (at most --count samples; the finished ones stay)",
    )  # fmt: skip


def _config(args: argparse.Namespace, keep_meshes: bool):
    from core.synth.samples import SynthConfig
    from core.synth.scenes import INTERACTIONS

    if args.interaction is not None and args.interaction not in INTERACTIONS:
        raise InputError(f"unknown interaction {args.interaction!r}; choose one of {', '.join(INTERACTIONS)}")
    if args.points < 1:
        raise InputError("--points must be at least 1")
    return SynthConfig(
        n_uniform=args.points, n_surface=args.points, interaction=args.interaction, keep_meshes=keep_meshes
    )


def _write_one(job: tuple[int, Path, object]) -> str:
    from core.synth.samples import generate_sample, save_sample

    seed, out, cfg = job
    return str(save_sample(generate_sample(seed, cfg), out))


def run(args: argparse.Namespace) -> int:
    if args.preview is None and args.out is None:
        raise InputError("nothing to do: give --preview PNG and/or --out DIR")
    from core.io.output_set import check_output_file

    if args.preview is not None:
        check_output_file(args.preview, (".png", ".jpg", ".jpeg"), "--preview")
    if args.count < 1:
        raise InputError("--count must be at least 1")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise InputError("--budget-minutes must be positive")
    if args.preview is not None:
        from core.io.images import save_image_rgb
        from core.synth.preview import contact_sheet
        from core.synth.samples import generate_sample

        cfg = _config(args, keep_meshes=True)
        samples = [generate_sample(args.seed + i, cfg) for i in range(args.count)]
        save_image_rgb(args.preview, contact_sheet(samples))
        print(f"wrote {args.preview} ({args.count} samples, seeds {args.seed}..{args.seed + args.count - 1})")
    if args.out is not None:
        cfg = _config(args, keep_meshes=args.meshes)
        jobs = [(args.seed + i, args.out, cfg) for i in range(args.count)]
        start = time.time()
        deadline = math.inf if args.budget_minutes is None else start + 60.0 * args.budget_minutes
        written = _write_all(jobs, args.workers, start, deadline)
        elapsed = time.time() - start
        stop = "" if written == args.count else f" (of {args.count}: the budget ran out)"
        print(
            f"\nwrote {written} samples{stop} to {args.out} in {elapsed:.1f} s "
            f"({3600 * written / max(elapsed, 1e-9):.0f} samples/hour)"
        )
    return 0


def _write_all(jobs: list, workers: int, start: float, deadline: float) -> int:
    """Write the jobs' samples until done or past ``deadline``; how many were written. With a
    pool, leaving the ``with`` block terminates the renders still running."""
    written = 0
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs):
                written += 1
                _progress(written, len(jobs), start)
                if time.time() >= deadline:
                    break
        return written
    for job in jobs:
        if time.time() >= deadline:
            break
        _write_one(job)
        written += 1
        _progress(written, len(jobs), start)
    return written


def _progress(done: int, total: int, start: float) -> None:
    rate = done / max(time.time() - start, 1e-9)
    sys.stdout.write(f"\r{done}/{total} samples, {rate * 3600:.0f}/hour")
    sys.stdout.flush()
