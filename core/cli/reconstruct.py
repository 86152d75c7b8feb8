"""``python main.py reconstruct IMAGE --keypoints PATH --out DIR [...]``.

Writes ``left.<fmt>``, ``right.<fmt>`` (camera frame, metres; vertices inside the other
hand coloured), ``penetration.<fmt>`` when the hands overlap, ``keypoints.json`` (the
keypoints used, our format) and ``report.json`` (timings, penetration volume, settings)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="the photo (JPEG, PNG, WebP, ...)")
    parser.add_argument(
        "--keypoints",
        type=Path,
        default=None,
        help="our keypoints JSON, an Im2Hands *_left.ply/*_right.ply pair, or an InterHand2.6M "
        "annotation folder / *_data.json",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="weights folder or file (default: shipped weights; the official HALO checkpoint "
        "gives the keypoint-only HALO mode)",
    )
    parser.add_argument("--resolution", type=int, default=256, help="grid resolution per axis (32 x 2^k)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--format", default="ply", choices=("ply", "obj", "glb"), help="mesh file format")
    parser.add_argument("--no-refinement", action="store_true", help="network I only (skip R)")
    parser.add_argument(
        "--refine-keypoints", action="store_true", help="run network K first (if the weights have it)"
    )
    parser.add_argument("--half", action="store_true", help="bfloat16 / float16 point networks")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from core.engine import Engine, ReconstructionSettings
    from core.errors import KeypointFileError
    from core.io.images import load_image_rgb
    from core.io.keypoints import KeypointFrame, load_keypoints, save_keypoints_json
    from core.io.meshes import save_mesh
    from core.types import Camera, HandMesh

    if args.keypoints is None:
        raise KeypointFileError(
            "reconstruct needs --keypoints PATH for now (automatic detection is not wired into this "
            "command yet); "
            "run `python main.py detect IMAGE` to make a keypoint file, or place keypoints in the desktop app"
        )
    image = load_image_rgb(args.image)
    keypoints, camera = load_keypoints(args.keypoints, args.image)
    h, w = image.shape[:2]
    note = None
    if camera is None:
        camera = Camera.default_for_image(w, h)
        note = "no camera in the keypoint file: default intrinsics (50 degree field of view) used"
    settings = ReconstructionSettings(
        resolution=args.resolution,
        preview_resolution=min(64, args.resolution),
        device=args.device,
        use_refinement=not args.no_refinement,
        use_keypoint_refiner=args.refine_keypoints,
        half_precision=args.half,
    )
    engine = Engine(args.weights, device=args.device)
    rec = engine.reconstruct(image, camera, keypoints, settings)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for side in ("left", "right"):
        mesh: HandMesh | None = getattr(rec, side)
        if mesh is not None:
            written.append(save_mesh(out / f"{side}.{args.format}", mesh, args.format))
    if rec.penetration_mesh is not None and not rec.penetration_mesh.is_empty:
        written.append(save_mesh(out / f"penetration.{args.format}", rec.penetration_mesh, args.format))
    written.append(
        save_keypoints_json(
            out / "keypoints.json", [KeypointFrame(rec.keypoints, image=str(args.image.resolve()))], camera
        )
    )
    report = {
        "image": str(args.image),
        "keypoints_file": str(args.keypoints),
        "mode": engine.mode,
        "resolution": rec.resolution,
        "penetration_volume_cm3": rec.penetration_volume_cm3,
        "timings_s": rec.timings_s,
        "hands": {
            side: {
                "vertices": len(m.vertices),
                "faces": len(m.faces),
                "vertices_inside_other": int(m.inside_other.sum()) if m.inside_other is not None else 0,
            }
            for side in ("left", "right")
            if (m := getattr(rec, side)) is not None
        },
        "settings": {k: v for k, v in rec.settings.items() if k != "anchors_cam_m"},
        "notes": ([note] if note else []) + list(rec.settings.get("notes", [])),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    written.append(out / "report.json")
    print(
        f"{engine.mode}: {len(written)} files in {out} "
        f"(penetration {rec.penetration_volume_cm3:.2f} cm^3, {rec.timings_s.get('total', 0):.2f} s)"
    )
    return 0
