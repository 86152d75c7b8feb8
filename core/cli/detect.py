"""``python main.py detect IMAGE_OR_VIDEO --out FILE``: 3D hand keypoints per frame.

Writes our keypoint JSON (camera frame, metres, ``mano`` order; a hand not found is
``null``). Video frames carry their index in ``frame_index`` (and, for older readers, are
named ``<video file>#frame=<index>`` in ``image``); hands the smoother copied over from an
earlier frame are listed in ``carried``.
Intrinsics: ``--camera`` file, else EXIF, else the default 50-degree camera.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="an image (JPEG, PNG, WebP, ...) or a video (MP4, MOV, ...)")
    parser.add_argument("--out", required=True, help="keypoint JSON file to write")
    parser.add_argument("--camera", help="camera file: InterHand2.6M *_camera.json or {K, width, height}")
    parser.add_argument("--camera-capture", help="capture id in an InterHand2.6M camera file")
    parser.add_argument("--camera-name", help="camera id in an InterHand2.6M camera file")
    parser.add_argument("--every", type=int, default=1, help="video: use every N-th frame (default 1)")
    parser.add_argument("--max-frames", type=int, default=None, help="video: at most N frames")
    parser.add_argument("--no-retries", action="store_true",
                        help="one MediaPipe pass only (faster, finds fewer interacting hands)")
    parser.add_argument("--no-smoothing", action="store_true", help="video: raw per-frame keypoints")
    parser.add_argument("--mirrored", action="store_true", help="the input is mirrored (selfie camera)")
    parser.add_argument("--overlay", help="image input: also write the keypoints drawn over the image here")
    parser.add_argument("--second-opinion", metavar="ENCODER",
                        help="a trained image encoder (image_encoder.safetensors from 'train encoder'): "
                             "where MediaPipe finds one hand, the encoder may add the other beside it")


def _write(out: Path, frames, camera, extra: dict | None = None) -> Path:
    """The single place where keypoints are written (helper E's JSON writer)."""
    from core.io.keypoints import save_keypoints_json

    return save_keypoints_json(out, frames, camera, extra=extra)


def _image_ref(image_path: Path, out: Path) -> str:
    try:
        return str(image_path.resolve().relative_to(out.resolve().parent))
    except ValueError:
        return str(image_path.resolve())


def run(args: argparse.Namespace) -> int:
    from core.detect.detector import MediaPipeHandDetector
    from core.detect.video import is_video_path
    from core.io.output_set import check_output_file

    source = Path(args.input)
    out = Path(args.out)
    if not source.is_file():
        raise InputError(f"input not found: {source}")
    if args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise InputError("--every and --max-frames must be at least 1")
    check_output_file(out, (".json",), "--out")
    if args.overlay:
        check_output_file(Path(args.overlay), (".png", ".jpg", ".jpeg", ".webp", ".bmp"), "--overlay")
    extra = None
    second_opinion = _load_second_opinion(args.second_opinion)
    with MediaPipeHandDetector(retries=not args.no_retries, image_is_mirrored=args.mirrored) as mediapipe:
        detector = mediapipe if second_opinion is None else second_opinion(mediapipe)
        if is_video_path(source):
            frames, camera, extra = _detect_video(args, source, out, detector)
        else:
            frames, camera = _detect_image(args, source, out, detector)
    _write(out, frames, camera, extra)
    n_found = sum(len(f.keypoints.present_sides()) for f in frames)
    print(f"wrote {len(frames)} frame(s), {n_found} hand(s) to {out}")
    if n_found == 0:
        print("no hand was found; place the hands by hand in the app (template)", file=sys.stderr)
    return 0


def _load_second_opinion(path: str | None):
    """None, or a function wrapping a detector into an :class:`EncoderSecondOpinion` (the
    encoder is loaded first, so a wrong file fails before any detection runs)."""
    if path is None:
        return None
    from core.detect.second_opinion import EncoderSecondOpinion
    from core.models.registry import load_image_encoder

    if not Path(path).is_file():
        raise InputError(f"--second-opinion: encoder file not found: {path}")
    encoder = load_image_encoder(path)
    return lambda primary: EncoderSecondOpinion(primary, encoder)


def _detect_video(args: argparse.Namespace, source: Path, out: Path, detector):
    """Frames, camera and the frame counts (declared / decoded) of a video; a truncated file
    is reported on stderr."""
    from core.detect.intrinsics import camera_for_image
    from core.detect.pipeline import detect_image
    from core.detect.smoothing import TwoHandSmoother
    from core.detect.video import VideoReader
    from core.io.keypoints import KeypointFrame

    frames = []
    with VideoReader(source) as video:
        camera, origin = camera_for_image(video.width, video.height, args.camera, None,
                                          args.camera_capture, args.camera_name)
        print(f"{source.name}: {video.frame_count} frames at {video.fps:.1f} fps, "
              f"{video.width}x{video.height}; camera from {origin}")
        smoother = None if args.no_smoothing else TwoHandSmoother()
        ref = _image_ref(source, out)
        for index, frame in video.frames(every=args.every, max_frames=args.max_frames):
            result = detect_image(frame, camera, detector)
            keypoints = result.keypoints
            if smoother is not None:
                keypoints = smoother(keypoints, video.time_of(index))
            carried = [] if smoother is None else [s for s, c in smoother.carried.items() if c]
            frames.append(KeypointFrame(keypoints, image=f"{ref}#frame={index}", frame_index=index,
                                        carried=tuple(carried)))  # fmt: skip
            print(f"  frame {index}: found {', '.join(result.keypoints.present_sides()) or 'none'}"
                  + (f"; carried over {', '.join(carried)}" if carried else ""))
        decoded = video.truncated_at if video.truncated_at is not None else video.frame_count
        extra = {"video": {"frames_declared": video.frame_count, "frames_decoded": decoded,
                           "truncated": video.truncated_at is not None}}
        if video.truncation_warning:
            print(video.truncation_warning, file=sys.stderr)
    return frames, camera, extra


def _detect_image(args: argparse.Namespace, source: Path, out: Path, detector):
    from core.detect.intrinsics import camera_for_image
    from core.detect.pipeline import detect_image
    from core.io.images import load_image_rgb
    from core.io.keypoints import KeypointFrame

    image = load_image_rgb(source)
    h, w = image.shape[:2]
    camera, origin = camera_for_image(w, h, args.camera, source, args.camera_capture, args.camera_name)
    t0 = time.perf_counter()
    result = detect_image(image, camera, detector)
    found = ", ".join(f"{hd.side} ({hd.source})" for hd in result.detection.hands) or "no hand"
    print(f"{source.name}: {w}x{h}, camera from {origin}; found {found} "
          f"in {time.perf_counter() - t0:.2f} s, {len(result.detection.views_tried)} views")
    if args.overlay:
        from core.detect.overlay import draw_keypoints
        from core.io.images import save_image_rgb

        save_image_rgb(args.overlay, draw_keypoints(image, result.keypoints, camera))
        print(f"overlay written to {args.overlay}")
    return [KeypointFrame(result.keypoints, image=_image_ref(source, out))], camera
