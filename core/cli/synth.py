"""``python main.py synth --preview PNG [--seed S] [--count 8]`` draws a contact sheet of synthetic
samples (image + keypoint skeletons, ground-truth meshes from the camera and from the side);
``python main.py synth --out DIR --count N [--seed S] [--workers W]`` writes samples to disk
(``<seed>.png`` + ``<seed>.npz`` each, see :func:`core.synth.samples.save_sample`)."""

from __future__ import annotations

import argparse
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
        if args.workers > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(args.workers) as pool:
                for k, _ in enumerate(pool.imap(_write_one, jobs), 1):
                    _progress(k, args.count, start)
        else:
            for k, job in enumerate(jobs, 1):
                _write_one(job)
                _progress(k, args.count, start)
        elapsed = time.time() - start
        print(
            f"\nwrote {args.count} samples to {args.out} in {elapsed:.1f} s "
            f"({3600 * args.count / max(elapsed, 1e-9):.0f} samples/hour)"
        )
    return 0


def _progress(done: int, total: int, start: float) -> None:
    rate = done / max(time.time() - start, 1e-9)
    sys.stdout.write(f"\r{done}/{total} samples, {rate * 3600:.0f}/hour")
    sys.stdout.flush()
