"""``python main.py export PROJECT_OR_KEYPOINTS --format {json,coco,interhand,meshes} --out PATH``.

``meshes`` reconstructs every annotated (``--reviewed``: reviewed) frame of a project into
``PATH/<frame>/{left,right,penetration}.ply``."""

from __future__ import annotations

import argparse

from core.io.exports import EXPORT_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a project (*.im2hands.json) or our keypoint JSON")
    parser.add_argument("--format", required=True, choices=(*EXPORT_FORMATS, "meshes"), help="what to write")
    parser.add_argument("--out", required=True, help="file (json, coco) or folder (interhand)")
    parser.add_argument("--reviewed", action="store_true", help="only the frames marked reviewed")
    parser.add_argument("--write-images", action="store_true",
                        help="video projects: also write the exported frames as PNG files")
    parser.add_argument("--weights", default=None, help="meshes: checkpoint (default: the shipped weights)")
    parser.add_argument("--resolution", type=int, default=128, help="meshes: grid resolution per axis")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def run(args: argparse.Namespace) -> int:
    from app.export_frames import export_file, export_project_meshes

    if args.format == "meshes":
        written = export_project_meshes(args.source, args.out, args.reviewed, args.weights, args.resolution,
                                        args.device)  # fmt: skip
    else:
        written = export_file(args.source, args.format, args.out, args.reviewed, args.write_images)
    print(f"wrote {len(written)} file(s): " + ", ".join(str(p) for p in written[:4])
          + (" ..." if len(written) > 4 else ""))
    return 0
