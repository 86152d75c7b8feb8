"""``python main.py reconstruct IMAGE --keypoints PATH --out DIR [...]``.

Writes ``left.<fmt>``, ``right.<fmt>`` (camera frame, metres; vertices inside the other
hand coloured), ``penetration.<fmt>`` when the hands overlap, ``keypoints.json`` (the
keypoints used, our format) and ``report.json`` (timings, penetration volume, settings).
Without ``--keypoints`` the hands are detected first (MediaPipe + lifting, see core.detect);
``--overlay PNG`` draws the meshes over the photo."""

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
        "annotation folder / *_data.json (default: detect the hands in the image)",
    )
    parser.add_argument(
        "--camera", type=Path, default=None, help="intrinsics file when detecting (InterHand2.6M camera JSON)"
    )
    parser.add_argument(
        "--overlay", type=Path, default=None, help="also write a PNG of the meshes drawn over the photo"
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
        "--refinement-resolution",
        type=int,
        default=None,
        metavar="N",
        help="approximation: run R only up to lattice N (e.g. 128) and follow I's detail beyond it "
        "with R's interpolated correction (default: R at every level, as the reference)",
    )
    parser.add_argument(
        "--refine-keypoints", action="store_true", help="run network K first (if the weights have it)"
    )
    parser.add_argument("--half", action="store_true", help="bfloat16 / float16 point networks")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    """Long: a command script: read the inputs, reconstruct, write each output in turn."""
    from core.engine import Engine, ReconstructionSettings
    from core.io.images import load_image_rgb
    from core.io.keypoints import KeypointFrame, load_keypoints, save_keypoints_json
    from core.io.meshes import save_mesh
    from core.types import Camera, HandMesh

    image = load_image_rgb(args.image)
    h, w = image.shape[:2]
    note = None
    if args.keypoints is None:
        keypoints, camera, note = _detect_keypoints(image, args.image, args.camera)
    else:
        keypoints, camera = load_keypoints(args.keypoints, args.image)
    if camera is None:
        camera = Camera.default_for_image(w, h)
        note = "no camera in the keypoint file: default intrinsics (50 degree field of view) used"
    settings = ReconstructionSettings(
        resolution=args.resolution,
        preview_resolution=min(64, args.resolution),
        device=args.device,
        use_refinement=not args.no_refinement,
        refinement_resolution=args.refinement_resolution,
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
        "keypoints_file": str(args.keypoints) if args.keypoints else "detected",
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
        "settings": rec.settings,
        "diagnostics": {k: v for k, v in rec.diagnostics.items() if k not in ("anchors_cam_m", "notes")},
        "notes": ([note] if note else []) + list(rec.diagnostics.get("notes", [])),
    }
    if args.overlay is not None:
        from core.io.images import save_image_rgb
        from core.render.mesh_overlay import render_meshes_over_image

        overlay = render_meshes_over_image(image, camera, {"left": rec.left, "right": rec.right})
        save_image_rgb(args.overlay, overlay)
        written.append(args.overlay)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    written.append(out / "report.json")
    print(
        f"{engine.mode}: {len(written)} files in {out} "
        f"(penetration {rec.penetration_volume_cm3:.2f} cm^3, {rec.timings_s.get('total', 0):.2f} s)"
    )
    return 0


def _detect_keypoints(image, image_path: Path, camera_path: Path | None):
    """Detect and lift the hands; a clear error when none is found."""
    from core.detect import detect_image
    from core.detect.intrinsics import camera_for_image
    from core.errors import KeypointError

    h, w = image.shape[:2]
    camera, source = camera_for_image(w, h, camera_path=camera_path, image_path=image_path)
    found = detect_image(image, camera)
    if not found.keypoints.present_sides():
        raise KeypointError(
            f"no hand was detected in {image_path}; give --keypoints, or place the hands in the desktop app"
        )
    sides = ", ".join(found.keypoints.present_sides())
    return found.keypoints, found.camera, f"keypoints detected ({sides}); intrinsics from {source}"
