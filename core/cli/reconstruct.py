"""``python main.py reconstruct IMAGE --keypoints PATH --out DIR [...]``.

Writes ``left.<fmt>``, ``right.<fmt>`` (camera frame, metres; vertices inside the other
hand coloured), ``penetration.<fmt>`` when the hands overlap (GLB: one ``hands.glb`` scene;
the convention of :mod:`core.io.meshes`), ``keypoints.json`` (the keypoints used, our
format), ``report.json`` (timings, penetration volume, settings) and ``manifest.json``.
The folder is replaced as a unit (:class:`core.io.output_set.OutputFolder`): a kill leaves
the old set or the new one, and a non-empty folder that we did not write is refused.
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
    parser.add_argument(
        "--resolve-contact", action="store_true",
        help="give points inside both hands to the deeper one: the meshes meet instead of overlapping",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    """Long: a command script: check every input and output path, reconstruct, then replace the
    output set as a unit."""
    from core.engine import Engine
    from core.io.images import load_image_rgb
    from core.io.keypoints import load_keypoints
    from core.io.output_set import OutputFolder
    from core.types import Camera

    settings = _settings(args)  # bad values fail before anything is read
    out = OutputFolder(args.out, "--out")
    overlay_name = _check_overlay(args.overlay, args.out)
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
    engine = Engine(args.weights, device=args.device)
    rec = engine.reconstruct(image, camera, keypoints, settings)
    overlay = _overlay_image(image, camera, rec) if args.overlay is not None else None
    _add_outputs(out, args, rec, camera, engine.mode, note, overlay, overlay_name)
    written = out.commit()
    if overlay is not None and overlay_name is None:
        from core.io.images import save_image_rgb

        written.append(save_image_rgb(args.overlay, overlay))
    print(
        f"{engine.mode}: {len(written)} files in {args.out} "
        f"(penetration {rec.penetration_volume_cm3:.2f} cm^3, {rec.timings_s.get('total', 0):.2f} s)"
    )
    return 0


def _settings(args: argparse.Namespace):
    from core.engine import ReconstructionSettings

    return ReconstructionSettings(
        resolution=args.resolution,
        preview_resolution=min(64, args.resolution) if args.resolution >= 32 else args.resolution,
        device=args.device,
        use_refinement=not args.no_refinement,
        refinement_resolution=args.refinement_resolution,
        use_keypoint_refiner=args.refine_keypoints,
        half_precision=args.half,
        resolve_contact=args.resolve_contact,
    )


def _check_overlay(overlay: Path | None, out: Path) -> str | None:
    """Validate ``--overlay``; its name inside ``--out`` when it lies there (then it is part
    of the output set), else None."""
    if overlay is None:
        return None
    from core.io.output_set import OutputPathError, check_output_file

    check_output_file(overlay, (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"), "--overlay")
    if overlay.resolve().parent == out.resolve():
        return overlay.name
    if out.resolve() in overlay.resolve().parents:
        raise OutputPathError(f"--overlay {overlay}: put it directly in --out {out} or outside it")
    return None


def _overlay_image(image, camera, rec):
    from core.render.mesh_overlay import render_meshes_over_image

    return render_meshes_over_image(image, camera, {"left": rec.left, "right": rec.right})


def _add_outputs(out, args, rec, camera, mode: str, note, overlay, overlay_name) -> None:
    """Register the meshes, keypoints, report (and overlay) of the output set."""
    from core.io.keypoints import KeypointFrame, save_keypoints_json
    from core.io.meshes import mesh_set_writers

    for name, writer in mesh_set_writers(rec, args.format).items():
        out.add(name, writer)
    frame = KeypointFrame(rec.keypoints, image=str(args.image.resolve()))
    out.add("keypoints.json", lambda path: save_keypoints_json(path, [frame], camera))
    if overlay_name is not None:
        from core.io.images import save_image_rgb

        out.add(
            overlay_name, lambda path: save_image_rgb(path, overlay, file_format=Path(overlay_name).suffix)
        )
    report = {
        "image": str(args.image),
        "keypoints_file": str(args.keypoints) if args.keypoints else "detected",
        "mode": mode,
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
        "notes": ([note] if note else [])
        + list(rec.diagnostics.get("notes", []))
        + [f"the {side} hand's mesh is empty: no file written for it" for side in _empty_sides(rec)],
    }
    text = json.dumps(report, indent=1, default=str)
    out.add("report.json", lambda path: path.write_text(text, encoding="utf-8"))


def _empty_sides(rec) -> list[str]:
    return [side for side in ("left", "right") if (m := getattr(rec, side)) is not None and m.is_empty]


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
