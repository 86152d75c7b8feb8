"""Detector + lifting accuracy on InterHand2.6M frames with 3D ground truth.

``python -m core.detect.evaluate_interhand [SAMPLES_DIR]`` prints, per frame and hand:
whether the hand was found (with the correct side), the MPJPE in mm after aligning the
wrists, the absolute wrist error, and for frames with both hands the error of the
right-to-left root vector (MRRPE). The folder holds the InterHand2.6M annotation files
``*_data.json``, ``*_camera.json``, ``*_joint_3d.json`` and the images.
``X_cam = camrot (X_world - campos)``, millimetres.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.hand.joints import INTERHAND_HAND_SLICES, MANO_WRIST, convert_joints
from core.types import Camera


@dataclass
class InterHandFrame:
    image_path: Path
    camera: Camera
    joints_cam_m: dict[str, np.ndarray | None]  # side -> (21, 3) mano order, metres, or None


@dataclass
class FrameResult:
    image: str
    found: dict[str, bool] = field(default_factory=dict)  # GT side -> found with this side
    mpjpe_mm: dict[str, float] = field(default_factory=dict)
    wrist_error_mm: dict[str, float] = field(default_factory=dict)
    root_vector_error_mm: float | None = None
    views_tried: int = 0
    seconds: float = 0.0


def _find(folder: Path, suffix: str) -> Path:
    hits = sorted(folder.glob(f"*{suffix}"))
    if not hits:
        raise FileNotFoundError(f"no *{suffix} in {folder}")
    return hits[0]


def load_interhand_frames(folder: str | Path) -> list[InterHandFrame]:
    """All frames of an InterHand2.6M sample folder, joints in the camera frame (metres)."""
    folder = Path(folder)
    data = json.loads(_find(folder, "_data.json").read_text())
    cams = json.loads(_find(folder, "_camera.json").read_text())
    joints = json.loads(_find(folder, "_joint_3d.json").read_text())
    frames = []
    for rec in data["images"]:
        image_path = folder / rec["file_name"]
        if not image_path.is_file():
            continue
        cap, cam, idx = str(rec["capture"]), str(rec["camera"]), str(rec["frame_idx"])
        block = cams[cap]
        R = np.asarray(block["camrot"][cam], dtype=np.float64)
        campos_mm = np.asarray(block["campos"][cam], dtype=np.float64)
        fx, fy = block["focal"][cam]
        cx, cy = block["princpt"][cam]
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
        camera = Camera(K=K, width=int(rec["width"]), height=int(rec["height"]), R=R, T=-R @ campos_mm / 1000)
        world_mm = np.asarray(joints[cap][idx]["world_coord"], dtype=np.float64)
        valid = np.asarray(joints[cap][idx]["joint_valid"], dtype=bool).reshape(-1)
        cam_m = (world_mm - campos_mm) @ R.T / 1000.0
        per_side = {}
        for side, sl in INTERHAND_HAND_SLICES.items():
            per_side[side] = convert_joints(cam_m[sl], "interhand", "mano") if valid[sl].all() else None
        frames.append(InterHandFrame(image_path, camera, per_side))
    return frames


def evaluate_frames(frames: list[InterHandFrame], detector, snap_to_2d: bool = True,
                    ray_correction: bool = True, refine=None) -> list[FrameResult]:
    """Run ``detector`` + lifting (+ optional ``refine(TwoHandKeypoints, image, camera)``)
    on each frame, with the frame's true camera."""
    import cv2

    from core.detect.lifting import lift_detection

    results = []
    for fr in frames:
        rgb = cv2.cvtColor(cv2.imread(str(fr.image_path)), cv2.COLOR_BGR2RGB)
        det = detector.detect(rgb)
        kp = lift_detection(det, fr.camera, snap_to_2d=snap_to_2d, ray_correction=ray_correction)
        if refine is not None:
            kp = refine(kp, rgb, fr.camera)
        res = FrameResult(fr.image_path.name, views_tried=len(det.views_tried), seconds=det.seconds)
        for side, gt in fr.joints_cam_m.items():
            if gt is None:
                continue
            pred = kp.hand(side)
            res.found[side] = pred is not None
            if pred is None:
                continue
            aligned = (pred - pred[MANO_WRIST]) - (gt - gt[MANO_WRIST])
            res.mpjpe_mm[side] = float(np.linalg.norm(aligned, axis=1).mean() * 1000)
            res.wrist_error_mm[side] = float(np.linalg.norm(pred[MANO_WRIST] - gt[MANO_WRIST]) * 1000)
        gl, gr = fr.joints_cam_m["left"], fr.joints_cam_m["right"]
        if gl is not None and gr is not None and kp.left is not None and kp.right is not None:
            v_pred = kp.left[MANO_WRIST] - kp.right[MANO_WRIST]
            v_gt = gl[MANO_WRIST] - gr[MANO_WRIST]
            res.root_vector_error_mm = float(np.linalg.norm(v_pred - v_gt) * 1000)
        results.append(res)
    return results


def format_table(results: list[FrameResult], title: str) -> str:
    def fmt(x):
        return "-" if x is None else f"{x:.1f}"

    lines = [f"### {title}", "",
             "| image | hand | found | MPJPE wrist-aligned (mm) | wrist error (mm) "
             "| root vector error (mm) | views | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for side in r.found:
            lines.append(
                f"| {r.image} | {side} | {'yes' if r.found[side] else 'no'} | {fmt(r.mpjpe_mm.get(side))} | "
                f"{fmt(r.wrist_error_mm.get(side))} | {fmt(r.root_vector_error_mm)} | {r.views_tried} | "
                f"{r.seconds:.2f} |"
            )
    n = sum(len(r.found) for r in results)
    k = sum(sum(r.found.values()) for r in results)
    errs = [e for r in results for e in r.mpjpe_mm.values()]
    lines.append("")
    summary = f"recall {k}/{n} hands"
    lines.append(f"{summary}; mean MPJPE {np.mean(errs):.1f} mm" if errs else summary)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from core.detect.detector import MediaPipeHandDetector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2].parent / "shared/realdata/interhand26m_samples"
    parser.add_argument("samples", nargs="?", default=str(default))
    args = parser.parse_args(argv)
    frames = load_interhand_frames(args.samples)
    for retries in (False, True):
        with MediaPipeHandDetector(retries=retries) as det:
            for snap, ray in ((True, True), (False, True), (False, False)):
                res = evaluate_frames(frames, det, snap_to_2d=snap, ray_correction=ray)
                title = f"retries={retries}, snap_to_2d={snap}, ray_correction={ray}"
                print(format_table(res, title) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
