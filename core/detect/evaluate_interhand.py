"""Detector + lifting accuracy on InterHand2.6M frames with 3D ground truth, with and
without network K.

``python -m core.detect.evaluate_interhand [SAMPLES_DIR] [--weights DIR] [--json PATH]``
prints, per frame and hand: whether the hand was found (with the correct side), the MPJPE
in mm after aligning the wrists, the absolute wrist error, and for frames with both hands
the error of the right-to-left root vector (MRRPE); first for the lifting variants, then
before and after network K (applied as the engine applies it) on the default lifting.
K needs both hands: one-hand frames have no "after K" values. The folder holds the
InterHand2.6M annotation files ``*_data.json``, ``*_camera.json``, ``*_joint_3d.json``
and the images. ``X_cam = camrot (X_world - campos)``, millimetres.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from core.detect.detector import ImageDetection
from core.detect.lifting import DEFAULT_DEPTH_CUE, DEFAULT_METHOD, DEPTH_CUES, LIFTING_METHODS, lift_detection
from core.errors import CheckpointError
from core.hand.joints import HAND_SIDES, INTERHAND_HAND_SLICES, MANO_WRIST, convert_joints
from core.types import Camera, TwoHandKeypoints


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


# --------------------------------------------------------------------------------------
# Detection and scoring
# --------------------------------------------------------------------------------------
@dataclass
class DetectedFrame:
    """One frame's detection, lifted to the frame's true camera (metres, camera frame)."""

    frame: InterHandFrame
    image_rgb: np.ndarray
    keypoints: TwoHandKeypoints
    views_tried: int
    seconds: float
    detection: ImageDetection | None = None
    lift_seconds: float = 0.0


def run_detector(frames: list[InterHandFrame], detector) -> list[DetectedFrame]:
    """Run ``detector`` on each frame (keypoints not lifted yet: both hands ``None``)."""
    import cv2

    out = []
    for fr in frames:
        rgb = cv2.cvtColor(cv2.imread(str(fr.image_path)), cv2.COLOR_BGR2RGB)
        det = detector.detect(rgb)
        none = TwoHandKeypoints(None, None)
        out.append(DetectedFrame(fr, rgb, none, len(det.views_tried), det.seconds, det))
    return out


def with_true_2d(d: DetectedFrame) -> ImageDetection:
    """``d``'s detection with each annotated hand's landmarks replaced by the projected ground
    truth (a diagnostic: what the lifting does when the 2D is right)."""
    hands = []
    for hand in d.detection.hands:
        gt = d.frame.joints_cam_m.get(hand.side)
        hands.append(hand if gt is None else replace(hand, landmarks_px=d.frame.camera.project(gt)))
    return replace(d.detection, hands=hands)


def lift_frames(detected: list[DetectedFrame], lifting: str = DEFAULT_METHOD, snap_to_2d: bool | None = None,
                ray_correction: bool = True, true_2d: bool = False,
                depth_cue: str = DEFAULT_DEPTH_CUE) -> list[DetectedFrame]:
    """The detections lifted with ``lifting`` ("skeleton" or "world", see
    :func:`core.detect.lifting.lift_detection_with_fits`) in each frame's true camera;
    ``true_2d``: from the projected ground truth instead of the detected landmarks."""
    out = []
    for d in detected:
        start = time.perf_counter()
        det = with_true_2d(d) if true_2d else d.detection
        kp = lift_detection(det, d.frame.camera, snap_to_2d=snap_to_2d, ray_correction=ray_correction,
                            method=lifting, depth_cue=depth_cue)
        out.append(replace(d, keypoints=kp, lift_seconds=time.perf_counter() - start))
    return out


def score_keypoints(frame: InterHandFrame, keypoints: TwoHandKeypoints, views_tried: int = 0,
                    seconds: float = 0.0) -> FrameResult:
    """Per annotated hand: found, MPJPE after wrist alignment, wrist error; and the MRRPE."""
    res = FrameResult(frame.image_path.name, views_tried=views_tried, seconds=seconds)
    for side, gt in frame.joints_cam_m.items():
        if gt is None:
            continue
        pred = keypoints.hand(side)
        res.found[side] = pred is not None
        if pred is None:
            continue
        aligned = (pred - pred[MANO_WRIST]) - (gt - gt[MANO_WRIST])
        res.mpjpe_mm[side] = float(np.linalg.norm(aligned, axis=1).mean() * 1000)
        res.wrist_error_mm[side] = float(np.linalg.norm(pred[MANO_WRIST] - gt[MANO_WRIST]) * 1000)
    gl, gr = frame.joints_cam_m["left"], frame.joints_cam_m["right"]
    if gl is not None and gr is not None and keypoints.left is not None and keypoints.right is not None:
        v_pred = keypoints.left[MANO_WRIST] - keypoints.right[MANO_WRIST]
        v_gt = gl[MANO_WRIST] - gr[MANO_WRIST]
        res.root_vector_error_mm = float(np.linalg.norm(v_pred - v_gt) * 1000)
    return res


def score_frames(lifted: list[DetectedFrame]) -> list[FrameResult]:
    return [score_keypoints(d.frame, d.keypoints, d.views_tried, d.seconds) for d in lifted]


def lifting_summary(results: list[FrameResult]) -> dict:
    """Recall, MPJPE (mean and worst hand), mean wrist error and mean root-vector error."""
    mpjpe = [e for r in results for e in r.mpjpe_mm.values()]
    wrist = [e for r in results for e in r.wrist_error_mm.values()]
    roots = [r.root_vector_error_mm for r in results if r.root_vector_error_mm is not None]
    return {
        "hands_found": sum(sum(r.found.values()) for r in results),
        "hands_annotated": sum(len(r.found) for r in results),
        "mpjpe_mm_mean": float(np.mean(mpjpe)) if mpjpe else None,
        "mpjpe_mm_worst": float(np.max(mpjpe)) if mpjpe else None,
        "wrist_error_mm_mean": float(np.mean(wrist)) if wrist else None,
        "root_vector_error_mm_mean": float(np.mean(roots)) if roots else None,
    }


# --------------------------------------------------------------------------------------
# Network K
# --------------------------------------------------------------------------------------
class EngineKeypointRefiner:
    """Network K applied as the engine applies it (:meth:`core.engine.Engine.refine_keypoints`:
    the engine's 256 px crop around both hands, the backend's image features, K).

    ``weights``: None = the shipped weights; a folder like ``resources/weights`` (see
    :func:`core.engine.backends.load_backend`); it must hold ``kpts_ref.safetensors``."""

    def __init__(self, weights: str | Path | None = None, device: str = "auto"):
        from core.engine import Engine
        from core.engine.backends import SHIPPED_WEIGHTS_DIR

        self.engine = Engine(weights, device=device)
        if not self.engine.backend.has_keypoint_refiner:
            where = SHIPPED_WEIGHTS_DIR if weights is None else weights
            raise CheckpointError(
                f"{where} has no network K (kpts_ref.safetensors next to ref_occ/init_occ.safetensors); "
                "pass --weights a folder that holds one"
            )

    def __call__(
        self, keypoints: TwoHandKeypoints, image_rgb: np.ndarray, camera: Camera
    ) -> TwoHandKeypoints:
        """Refined keypoints (camera frame, metres); unchanged (a copy) unless both hands are present."""
        return self.engine.refine_keypoints(image_rgb, camera, keypoints)


@dataclass
class RefinerComparison:
    """One frame before and after K. ``after`` is None where K did not run (it needs both
    hands); ``k_shift_mm`` is K's mean per-joint displacement of each hand."""

    before: FrameResult
    after: FrameResult | None
    k_shift_mm: dict[str, float] = field(default_factory=dict)


def evaluate_with_refiner(frames: list[InterHandFrame], detector, refiner, snap_to_2d: bool | None = None,
                          ray_correction: bool = True, lifting: str = DEFAULT_METHOD,
                          detected: list[DetectedFrame] | None = None,
                          depth_cue: str = DEFAULT_DEPTH_CUE) -> list[RefinerComparison]:
    """Detect once per frame (or take ``detected``, already run); score the lifted keypoints,
    then ``refiner``'s output on them for frames where both hands were found."""
    out = []
    if detected is None:
        detected = run_detector(frames, detector)
    for d in lift_frames(detected, lifting, snap_to_2d, ray_correction, depth_cue=depth_cue):
        before = score_keypoints(d.frame, d.keypoints, d.views_tried, d.seconds)
        kp = d.keypoints
        if kp.left is None or kp.right is None:
            out.append(RefinerComparison(before, None))
            continue
        refined = refiner(kp, d.image_rgb, d.frame.camera)
        after = score_keypoints(d.frame, refined, d.views_tried, d.seconds)
        shift = {
            s: float(np.linalg.norm(refined.hand(s) - kp.hand(s), axis=1).mean() * 1000) for s in HAND_SIDES
        }
        out.append(RefinerComparison(before, after, shift))
    return out


def refiner_summary(rows: list[RefinerComparison]) -> dict:
    """Recall per hand side, and means over the same hands before and after K."""
    hands = [(r, s) for r in rows for s in r.before.found]
    recall = {s: [sum(r.before.found[s] for r, t in hands if t == s), sum(t == s for _, t in hands)]
              for s in HAND_SIDES}
    k_hands = [(r, s) for r, s in hands if r.after is not None and s in r.after.mpjpe_mm]
    k_frames = [r for r in rows if r.after is not None and r.after.root_vector_error_mm is not None]

    def mean(values):
        return float(np.mean(values)) if values else None

    return {
        "recall": {s: f"{k}/{n}" for s, (k, n) in recall.items()},
        "hands_found": sum(r.before.found[s] for r, s in hands),
        "hands_annotated": len(hands),
        "hands_with_k": len(k_hands),
        "mpjpe_mm_all_found": mean([e for r in rows for e in r.before.mpjpe_mm.values()]),
        "mpjpe_mm_before_k": mean([r.before.mpjpe_mm[s] for r, s in k_hands]),
        "mpjpe_mm_after_k": mean([r.after.mpjpe_mm[s] for r, s in k_hands]),
        "wrist_error_mm_before_k": mean([r.before.wrist_error_mm[s] for r, s in k_hands]),
        "wrist_error_mm_after_k": mean([r.after.wrist_error_mm[s] for r, s in k_hands]),
        "root_vector_error_mm_before_k": mean([r.before.root_vector_error_mm for r in k_frames]),
        "root_vector_error_mm_after_k": mean([r.after.root_vector_error_mm for r in k_frames]),
        "k_shift_mm": mean([r.k_shift_mm[s] for r, s in k_hands]),
    }


# --------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _table_head(title: str, columns: list[str]) -> list[str]:
    """A markdown title and table header."""
    return [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def format_table(results: list[FrameResult], title: str) -> str:
    columns = ["image", "hand", "found", "MPJPE wrist-aligned (mm)", "wrist error (mm)",
               "root vector error (mm)", "views", "time (s)"]  # fmt: skip
    lines = _table_head(title, columns)
    for r in results:
        for side in r.found:
            lines.append(
                f"| {r.image} | {side} | {'yes' if r.found[side] else 'no'} | {_fmt(r.mpjpe_mm.get(side))} | "
                f"{_fmt(r.wrist_error_mm.get(side))} | {_fmt(r.root_vector_error_mm)} | {r.views_tried} | "
                f"{r.seconds:.2f} |"
            )
    s = lifting_summary(results)
    lines += ["", f"recall {s['hands_found']}/{s['hands_annotated']} hands; "
                  f"MPJPE mean {_fmt(s['mpjpe_mm_mean'])} mm, worst hand {_fmt(s['mpjpe_mm_worst'])} mm; "
                  f"mean wrist error {_fmt(s['wrist_error_mm_mean'])} mm; "
                  f"root vector error {_fmt(s['root_vector_error_mm_mean'])} mm"]
    return "\n".join(lines)


def format_refiner_table(rows: list[RefinerComparison], title: str) -> str:
    """Before / after K side by side ("after K" columns: '-' where K did not run)."""
    columns = ["image", "hand", "found", "MPJPE (mm)", "MPJPE after K (mm)", "wrist error (mm)", "after K",
               "root vector error (mm)", "after K", "K moved joints by (mm)"]  # fmt: skip
    lines = _table_head(title, columns)
    for row in rows:
        b, a = row.before, row.after
        for side in b.found:
            a_mpjpe = a.mpjpe_mm.get(side) if a else None
            a_wrist = a.wrist_error_mm.get(side) if a else None
            a_root = a.root_vector_error_mm if a else None
            note = _fmt(row.k_shift_mm.get(side)) if a else ("no K: one hand" if b.found[side] else "-")
            lines.append(
                f"| {b.image} | {side} | {'yes' if b.found[side] else 'no'} | {_fmt(b.mpjpe_mm.get(side))} | "
                f"{_fmt(a_mpjpe)} | {_fmt(b.wrist_error_mm.get(side))} | {_fmt(a_wrist)} | "
                f"{_fmt(b.root_vector_error_mm)} | {_fmt(a_root)} | {note} |"
            )
    s = refiner_summary(rows)
    lines += ["",
              f"recall left {s['recall']['left']}, right {s['recall']['right']}; "
              f"mean MPJPE of all found hands {_fmt(s['mpjpe_mm_all_found'])} mm",
              f"K ran on {s['hands_with_k']} hands (frames with both hands found): MPJPE "
              f"{_fmt(s['mpjpe_mm_before_k'])} -> {_fmt(s['mpjpe_mm_after_k'])} mm, root vector "
              f"{_fmt(s['root_vector_error_mm_before_k'])} -> {_fmt(s['root_vector_error_mm_after_k'])} mm, "
              f"mean joint shift {_fmt(s['k_shift_mm'])} mm"]
    return "\n".join(lines)


def refiner_report(rows: list[RefinerComparison], **settings) -> dict:
    """A JSON-ready record of a before/after-K evaluation."""
    return {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()},
            "summary": refiner_summary(rows),
            "frames": [asdict(r) for r in rows]}


# (lifting, snap_to_2d, ray_correction) variants printed before the K comparison
LIFTING_VARIANTS = (("skeleton", False, True), ("skeleton", True, True), ("world", True, True),
                    ("world", False, True), ("world", False, False))


def main(argv: list[str] | None = None) -> int:
    from core.detect.detector import MediaPipeHandDetector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2].parent / "shared/realdata/interhand26m_samples"
    parser.add_argument("samples", nargs="?", default=str(default))
    parser.add_argument("--weights", default=None,
                        help="folder of weights with network K (default: the shipped resources/weights)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (network K)")
    parser.add_argument("--lifting", default=DEFAULT_METHOD, choices=LIFTING_METHODS,
                        help="lifting used for the before/after-K comparison (default: %(default)s)")
    parser.add_argument("--depth-cue", default=DEFAULT_DEPTH_CUE, choices=DEPTH_CUES,
                        help="the skeleton fit's depth-direction cue (default: %(default)s)")
    parser.add_argument("--json", default=None,
                        help="also write the before/after-K results to this JSON file")
    parser.add_argument("--no-variants", action="store_true",
                        help="skip the lifting-variant tables; only the before/after-K comparison")
    args = parser.parse_args(argv)
    frames = load_interhand_frames(args.samples)
    refiner = EngineKeypointRefiner(args.weights, args.device)
    if not args.no_variants:
        with MediaPipeHandDetector(retries=False) as det:
            detected = run_detector(frames, det)
        for lifting, snap, ray in LIFTING_VARIANTS:
            res = score_frames(lift_frames(detected, lifting, snap, ray))
            print(format_table(res, f"retries=False, lifting={lifting}, snap_to_2d={snap}, "
                                    f"ray_correction={ray}") + "\n")
    with MediaPipeHandDetector(retries=True) as det:
        detected = run_detector(frames, det)
    if not args.no_variants:
        for lifting, snap, ray in LIFTING_VARIANTS:
            lifted = lift_frames(detected, lifting, snap, ray)
            title = f"retries=True, lifting={lifting}, snap_to_2d={snap}, ray_correction={ray}"
            print(format_table(score_frames(lifted), title))
            ms = [1000 * d.lift_seconds / max(1, len(d.keypoints.present_sides())) for d in lifted]
            print(f"lifting time per hand: {', '.join(f'{m:.0f}' for m in ms)} ms (wall, per frame)\n")
        for cue in (c for c in DEPTH_CUES if c != DEFAULT_DEPTH_CUE):  # the default: the first table
            res = score_frames(lift_frames(detected, "skeleton", depth_cue=cue))
            print(format_table(res, f"retries=True, lifting=skeleton, depth_cue={cue}") + "\n")
        for lifting in LIFTING_METHODS:
            res = score_frames(lift_frames(detected, lifting, true_2d=True))
            title = f"diagnostic: true 2D landmarks (projected ground truth), lifting={lifting}"
            print(format_table(res, title) + "\n")
    rows = evaluate_with_refiner(frames, None, refiner, lifting=args.lifting, detected=detected,
                                 depth_cue=args.depth_cue)
    weights = args.weights or "shipped resources/weights"
    print(format_refiner_table(rows, f"network K ({weights}); retries=True, lifting={args.lifting}") + "\n")
    if args.json:
        report = refiner_report(rows, samples=args.samples, weights=weights,
                                device=str(refiner.engine.device), retries=True, lifting=args.lifting,
                                depth_cue=args.depth_cue)
        from core.io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
