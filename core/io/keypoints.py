"""Keypoint files: our JSON format, Im2Hands ``.ply`` pairs, InterHand2.6M annotations.

Our format (``im2hands-studio/keypoints``, version 1; see ``docs/keypoints_format.md``)::

    {
      "format": "im2hands-studio/keypoints",
      "version": 1,
      "units": "m",              # "m" or "mm" accepted on reading; always "m" when written
      "frame": "camera",         # x right, y down, z forward (OpenCV)
      "joint_order": "mano",     # wrist, thumb CMC..tip, index MCP..tip, ... (core.hand.joints)
      "camera": {"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "width": W, "height": H} | null,
      "frames": [
        {"image": "relative/or/absolute/path.png" | null,
         "frame_index": int,         # optional: the frame of a video / image sequence
         "left":  [[x, y, z] x 21] | null,
         "right": [[x, y, z] x 21] | null,
         "visibility": {"left": [21 bools or codes], "right": [...]},   # optional
         "carried": ["left"]}        # optional: hands copied from earlier frames, not detected
      ]
    }

Visibility is either booleans (visible / not) or COCO's codes (2 visible, 1 occluded,
0 outside the image). A video frame's index is ``frame_index``, else the ``#frame=N`` tag
of its ``image`` (as older ``detect`` output wrote it), else its position in the list.

A relative ``image`` path is relative to the JSON file's folder. A missing hand is
``null``. Files are written atomically (temporary file + ``os.replace``).

Other formats read by :func:`load_keypoints`:

* **Im2Hands ``.ply`` pairs** ``<name>_left.ply`` / ``<name>_right.ply``: 21 points each,
  ``mano`` order, metres (the official ``pred_joints`` layout). A missing partner file
  means that hand is absent. Written by :func:`save_keypoints_ply_pair`.
* **InterHand2.6M annotation trio** ``*_data.json``, ``*_camera.json``, ``*_joint_3d.json``
  in one folder: the image is looked up by file name in ``data.json``'s ``images``, the
  world millimetres are moved to camera metres with ``X_cam = camrot @ (X_world - campos)``
  and reordered from InterHand's tip-first order; a hand with any invalid joint is absent.

Every malformed file raises :class:`core.errors.KeypointFileError` naming the file and
what is wrong.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError, KeypointFileError
from core.hand.joints import HAND_SIDES, INTERHAND_HAND_SLICES, NUM_JOINTS, ORDERS, convert_joints
from core.io.atomic import write_text_atomic
from core.types import Camera, TwoHandKeypoints

FORMAT_NAME = "im2hands-studio/keypoints"
FORMAT_VERSION = 1
_UNIT_SCALE_TO_M = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}


@dataclass
class KeypointFrame:
    """One image's keypoints (camera frame, metres, ``mano`` order)."""

    keypoints: TwoHandKeypoints
    image: str | None = None  # as written in the file (relative to the file's folder)
    visibility: dict[str, np.ndarray] | None = None  # side -> (21,) bool, or int codes 0/1/2
    frame_index: int | None = None  # frame of a video / sequence (None: not recorded)
    carried: tuple[str, ...] = ()  # sides copied over from earlier frames by a smoother


def frame_tag_index(image: str | None) -> int | None:
    """``N`` from an ``image`` entry ``video.mp4#frame=N`` (None without a tag)."""
    if image is None or "#frame=" not in image:
        return None
    tag = image.rsplit("#frame=", 1)[1]
    return int(tag) if tag.isdigit() else None


@dataclass
class KeypointFile:
    camera: Camera | None
    frames: list[KeypointFrame] = field(default_factory=list)
    path: Path | None = None

    def image_path(self, index: int) -> Path | None:
        """The frame's image path, resolved against the file's folder."""
        image = self.frames[index].image
        if image is None:
            return None
        p = Path(image)
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    def frame_for_image(self, image_path: str | Path | None) -> KeypointFrame:
        """The frame whose image has the same file name as ``image_path``; the only frame
        when there is one and nothing matches by name."""
        if not self.frames:
            raise KeypointFileError(f"{self.path}: the file holds no frames")
        if image_path is not None:
            name = Path(image_path).name
            for i, frame in enumerate(self.frames):
                if frame.image is not None and Path(frame.image).name == name:
                    return self.frames[i]
        if len(self.frames) == 1:
            return self.frames[0]
        raise KeypointFileError(
            f"{self.path}: {len(self.frames)} frames and none for image {image_path!r}; "
            "name the image whose keypoints you want"
        )


# --------------------------------------------------------------------------------------
# Our JSON format
# --------------------------------------------------------------------------------------
def camera_to_json(camera: Camera | None) -> dict | None:
    """The ``camera`` entry of our JSON files (also used by project files)."""
    if camera is None:
        return None
    return {
        "K": np.asarray(camera.K, dtype=np.float64).tolist(),
        "width": int(camera.width),
        "height": int(camera.height),
    }


def _hand_to_json(joints: np.ndarray | None) -> list | None:
    if joints is None:
        return None
    j = np.asarray(joints, dtype=np.float64)
    if j.shape != (NUM_JOINTS, 3) or not np.all(np.isfinite(j)):
        raise KeypointFileError(
            f"cannot save keypoints of shape {j.shape} with non-finite values; need (21, 3)"
        )
    return j.tolist()


def save_keypoints_json(
    path: str | Path, frames: list[KeypointFrame], camera: Camera | None, *, extra: dict | None = None
) -> Path:
    """Write ``frames`` (and the camera, which may be None) in our JSON format, atomically.
    ``extra``: further top-level entries (e.g. a video's declared and decoded frame counts),
    which readers ignore."""
    path = Path(path)
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "units": "m",
        "frame": "camera",
        "joint_order": "mano",
        "camera": camera_to_json(camera),
        "frames": [],
        **(extra or {}),
    }
    for frame in frames:
        entry = {"image": None if frame.image is None else str(frame.image)}
        if frame.frame_index is not None:
            entry["frame_index"] = int(frame.frame_index)
        entry["left"] = _hand_to_json(frame.keypoints.left)
        entry["right"] = _hand_to_json(frame.keypoints.right)
        if frame.visibility:
            entry["visibility"] = {s: _visibility_to_json(v) for s, v in frame.visibility.items()}
        if frame.carried:
            entry["carried"] = list(frame.carried)
        doc["frames"].append(entry)
    write_text_atomic(path, json.dumps(doc, indent=1))
    return path


def _visibility_to_json(values) -> list:
    arr = np.asarray(values)
    return arr.astype(bool).tolist() if arr.dtype == bool else arr.astype(int).tolist()


def _visibility_from_json(values, where: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (NUM_JOINTS,):
        raise KeypointFileError(f"{where}: visibility needs 21 values per side, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not np.isin(arr, (0, 1, 2)).all():
        raise KeypointFileError(f"{where}: visibility codes must be 0 (outside), 1 (occluded) or 2 (visible)")
    return arr.astype(np.int8)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise KeypointFileError(f"keypoint file not found: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KeypointFileError(f"{path} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise KeypointFileError(f"{path} is not valid JSON: nested too deeply") from None
    except IsADirectoryError:
        raise KeypointFileError(f"{path} is a folder, not a keypoint file") from None


def camera_from_json(obj, where: str, error: type[InputError] = KeypointFileError) -> Camera | None:
    """Parse a ``camera`` entry; malformed ones raise ``error`` naming ``where``."""
    if obj is None:
        return None
    try:
        K = np.asarray(obj["K"], dtype=np.float64)
        width, height = obj["width"], obj["height"]
        if isinstance(width, bool) or isinstance(height, bool) or not float(width).is_integer() \
                or not float(height).is_integer():
            raise ValueError(f"width and height must be whole numbers, got {width!r} x {height!r}")
        check_camera_values(K, width, height, where, error)
        width, height = int(width), int(height)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise error(f"{where}: camera needs 'K' (3x3), 'width' and 'height' ({exc})") from exc
    check_camera_values(K, width, height, where, error)
    return Camera(K=K, width=width, height=height)


MAX_CAMERA_SIDE_PX = 100_000


def check_camera_values(K, width, height, where: str, error: type[InputError] = KeypointFileError) -> None:
    """The camera schema: K a finite 3x3 pinhole matrix (positive focal lengths, last row
    0 0 1), width and height whole numbers in 1..:data:`MAX_CAMERA_SIDE_PX`."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise error(f"{where}: camera 'K' must be a finite 3x3 matrix with positive focal lengths")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        raise error(
            f"{where}: camera 'K' must be a pinhole matrix with last row [0, 0, 1], got {K[2].tolist()}"
        )
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not float(value).is_integer() or not 1 <= value <= MAX_CAMERA_SIDE_PX:
            raise error(
                f"{where}: camera {name} must be a whole number of pixels in 1..{MAX_CAMERA_SIDE_PX}, "
                f"got {value!r}"
            )


def _parse_hand(obj, where: str, scale: float, order: str) -> np.ndarray | None:
    if obj is None:
        return None
    try:
        j = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KeypointFileError(f"{where}: joints must be numbers ({exc})") from exc
    if j.shape != (NUM_JOINTS, 3):
        raise KeypointFileError(f"{where}: expected 21 joints x 3 coordinates, got shape {j.shape}")
    if not np.all(np.isfinite(j)):
        raise KeypointFileError(f"{where}: joints contain NaN or infinite values")
    j = j * scale
    return np.asarray(convert_joints(j, order, "mano")) if order != "mano" else j


def load_keypoints_json(path: str | Path) -> KeypointFile:
    """Read our JSON format (any version up to :data:`FORMAT_VERSION`)."""
    path = Path(path)
    with reading(path):
        return _parse_keypoint_doc(_read_json(path), path)


@contextmanager
def reading(path: Path, error: type[InputError] = KeypointFileError):
    """Whatever a malformed file makes the parser raise becomes ``error`` naming the file
    (the explicit checks name the field; this is the net below them)."""
    try:
        yield
    except InputError:
        raise
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError, ArithmeticError) as exc:  # noqa: E501
        raise error(f"{path}: malformed content ({type(exc).__name__}: {exc})") from None


def _parse_keypoint_doc(doc: object, path: Path) -> KeypointFile:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise KeypointFileError(f"{path}: not an {FORMAT_NAME} file (missing or wrong 'format')")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise KeypointFileError(
            f"{path}: unsupported version {version!r} (this program reads 1..{FORMAT_VERSION})"
        )
    units = doc.get("units", "m")
    if not isinstance(units, str) or units not in _UNIT_SCALE_TO_M:
        raise KeypointFileError(f"{path}: unknown units {units!r}; use one of {sorted(_UNIT_SCALE_TO_M)}")
    if doc.get("frame", "camera") != "camera":
        raise KeypointFileError(
            f"{path}: only camera-frame keypoints are supported, got frame {doc.get('frame')!r}"
        )
    order = doc.get("joint_order", "mano")
    if order not in ORDERS:
        raise KeypointFileError(f"{path}: unknown joint_order {order!r}; known: {', '.join(ORDERS)}")
    camera = camera_from_json(doc.get("camera"), str(path))
    frames_obj = doc.get("frames")
    if not isinstance(frames_obj, list):
        raise KeypointFileError(f"{path}: 'frames' must be a list")
    scale = _UNIT_SCALE_TO_M[units]
    frames = []
    for i, entry in enumerate(frames_obj):
        where = f"{path}: frame {i}"
        if not isinstance(entry, dict):
            raise KeypointFileError(f"{where} must be an object")
        hands = {s: _parse_hand(entry.get(s), f"{where} {s} hand", scale, order) for s in HAND_SIDES}
        visibility = None
        if entry.get("visibility") is not None:
            visibility = {}
            if not isinstance(entry["visibility"], dict):
                raise KeypointFileError(f"{where}: 'visibility' must be an object with 'left'/'right'")
            for s, v in entry["visibility"].items():
                if s not in HAND_SIDES:
                    raise KeypointFileError(f"{where}: visibility side must be left or right, got {s!r}")
                arr = _visibility_from_json(v, where)
                visibility[s] = (
                    arr if order == "mano" else np.asarray(convert_joints(arr[:, None], order, "mano"))[:, 0]
                )
        image = entry.get("image")
        if image is not None and not isinstance(image, str):
            raise KeypointFileError(f"{where}: 'image' must be a path string or null")
        frame_index = entry.get("frame_index", frame_tag_index(image))
        if frame_index is not None and (not isinstance(frame_index, int) or frame_index < 0):
            raise KeypointFileError(f"{where}: 'frame_index' must be a non-negative integer")
        carried = tuple(entry.get("carried") or ())
        if any(c not in HAND_SIDES for c in carried):
            raise KeypointFileError(f"{where}: 'carried' lists sides, got {carried!r}")
        frames.append(KeypointFrame(TwoHandKeypoints(**hands), image=image, visibility=visibility,
                                    frame_index=frame_index, carried=carried))  # fmt: skip
    return KeypointFile(camera=camera, frames=frames, path=path)


# --------------------------------------------------------------------------------------
# Im2Hands .ply pairs
# --------------------------------------------------------------------------------------
def _ply_pair_paths(path: str | Path) -> dict[str, Path]:
    """``x_left.ply`` / ``x_right.ply`` / ``x`` -> both partner paths."""
    p = Path(path)
    stem = p.name[: -len(".ply")] if p.name.endswith(".ply") else p.name
    for s in HAND_SIDES:
        if stem.endswith("_" + s):
            stem = stem[: -len(s) - 1]
            break
    return {s: p.with_name(f"{stem}_{s}.ply") for s in HAND_SIDES}


def _write_ply_points(path: Path, points: np.ndarray) -> None:
    lines = [
        "ply",
        "format ascii 1.0",
        f"element vertex {len(points)}",
        "property float x",
        "property float y",
        "property float z",
        "end_header",
    ]
    lines += [f"{x:.9g} {y:.9g} {z:.9g}" for x, y, z in np.asarray(points, dtype=np.float64)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _read_ply_points(path: Path) -> np.ndarray:
    import trimesh

    try:
        loaded = trimesh.load(path, file_type="ply", process=False)
        points = np.asarray(loaded.vertices, dtype=np.float64)
    except Exception as exc:  # trimesh raises many types on malformed files
        raise KeypointFileError(f"{path} is not a readable .ply point file: {exc}") from exc
    if points.shape != (NUM_JOINTS, 3):
        raise KeypointFileError(f"{path}: expected 21 points (mano order, metres), got {len(points)}")
    if not np.all(np.isfinite(points)):
        raise KeypointFileError(f"{path}: points contain NaN or infinite values")
    return points


def save_keypoints_ply_pair(path_prefix: str | Path, keypoints: TwoHandKeypoints) -> list[Path]:
    """Write ``<prefix>_left.ply`` / ``<prefix>_right.ply`` for the hands present."""
    paths = _ply_pair_paths(path_prefix)
    written = []
    for s in HAND_SIDES:
        joints = keypoints.hand(s)
        if joints is not None:
            _write_ply_points(paths[s], _checked_hand(joints))
            written.append(paths[s])
    return written


def _checked_hand(joints: np.ndarray) -> np.ndarray:
    j = np.asarray(joints, dtype=np.float64)
    if j.shape != (NUM_JOINTS, 3) or not np.all(np.isfinite(j)):
        raise KeypointFileError(
            f"cannot save keypoints of shape {j.shape} with non-finite values; need (21, 3)"
        )
    return j


def load_keypoints_ply_pair(path: str | Path) -> TwoHandKeypoints:
    """Read an Im2Hands pair given either file (or the common prefix)."""
    paths = _ply_pair_paths(path)
    if not any(p.is_file() for p in paths.values()):
        raise KeypointFileError(f"no keypoint file found: expected {paths['left']} and/or {paths['right']}")
    return TwoHandKeypoints(**{s: _read_ply_points(p) if p.is_file() else None for s, p in paths.items()})


# --------------------------------------------------------------------------------------
# InterHand2.6M annotation trio
# --------------------------------------------------------------------------------------
def _interhand_files(path: Path) -> dict[str, Path]:
    folder = path if path.is_dir() else path.parent
    found = {}
    for kind in ("data", "camera", "joint_3d"):
        matches = sorted(folder.glob(f"*_{kind}.json"))
        if path.is_file() and path.name.endswith(f"_{kind}.json"):
            matches = [path]
        if not matches:
            raise KeypointFileError(f"{folder}: InterHand2.6M annotations need a *_{kind}.json file")
        if len(matches) > 1:
            prefix = path.name.rsplit("_", 1)[0] if path.is_file() else None
            same = [m for m in matches if prefix and m.name.startswith(prefix)]
            if len(same) != 1:
                raise KeypointFileError(f"{folder}: several *_{kind}.json files; pass the one to use")
            matches = same
        found[kind] = matches[0]
    return found


def is_interhand_annotation_name(path: str | Path) -> bool:
    name = Path(path).name
    return any(name.endswith(f"_{k}.json") for k in ("data", "camera", "joint_3d"))


def load_interhand_keypoints(path: str | Path, image_path: str | Path) -> tuple[TwoHandKeypoints, Camera]:
    """Keypoints (camera frame, metres, ``mano`` order) and camera of one InterHand2.6M image.

    ``path``: the annotation folder or any of its three JSON files; ``image_path``: the image
    (only its file name is used for the look-up)."""
    if image_path is None:
        raise KeypointFileError("InterHand2.6M annotations cover many images: give the image file to look up")
    files = _interhand_files(Path(path))
    data = _read_json(files["data"])
    cameras = _read_json(files["camera"])
    joints3d = _read_json(files["joint_3d"])
    name = Path(image_path).name
    try:
        record = next(im for im in data["images"] if Path(im["file_name"]).name == name)
    except (KeyError, TypeError) as exc:
        raise KeypointFileError(f"{files['data']}: no 'images' list with 'file_name' entries") from exc
    except StopIteration:
        raise KeypointFileError(f"{files['data']}: image {name!r} is not in the annotations") from None
    try:
        capture, cam, frame = str(record["capture"]), str(record["camera"]), str(record["frame_idx"])
        cam_params = cameras[capture]
        camrot = np.asarray(cam_params["camrot"][cam], dtype=np.float64)
        campos_mm = np.asarray(cam_params["campos"][cam], dtype=np.float64)
        focal = np.asarray(cam_params["focal"][cam], dtype=np.float64)
        princpt = np.asarray(cam_params["princpt"][cam], dtype=np.float64)
        entry = joints3d[capture][frame]
        world_mm = np.asarray(entry["world_coord"], dtype=np.float64)
        valid = np.asarray(entry["joint_valid"], dtype=np.float64).reshape(-1) > 0
        width, height = int(record["width"]), int(record["height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise KeypointFileError(f"InterHand2.6M annotations incomplete for {name!r}: missing {exc}") from exc
    if camrot.shape != (3, 3) or world_mm.shape != (2 * NUM_JOINTS, 3) or valid.shape != (2 * NUM_JOINTS,):
        raise KeypointFileError(f"InterHand2.6M annotations for {name!r} have unexpected shapes")
    # Joints the annotation tool marks valid in the image record as well (when given).
    annotation = next((a for a in data.get("annotations", []) if a.get("image_id") == record.get("id")), None)
    if annotation is not None and "joint_valid" in annotation:
        valid &= np.asarray(annotation["joint_valid"], dtype=np.float64).reshape(-1) > 0

    cam_m = (world_mm - campos_mm) @ camrot.T / 1000.0  # X_cam = camrot @ (X_world - campos)
    hands = {}
    for side in HAND_SIDES:
        sl = INTERHAND_HAND_SLICES[side]
        ok = bool(valid[sl].all()) and np.all(np.isfinite(cam_m[sl]))
        hands[side] = np.asarray(convert_joints(cam_m[sl], "interhand", "mano")) if ok else None
    if focal.shape != (2,) or princpt.shape != (2,):
        raise KeypointFileError(f"{files['camera']}: focal and princpt of camera {cam} need 2 numbers each")
    K = np.array([[focal[0], 0.0, princpt[0]], [0.0, focal[1], princpt[1]], [0.0, 0.0, 1.0]])
    check_camera_values(K, width, height, f"{files['camera']} camera {cam}")
    return TwoHandKeypoints(**hands), Camera(K=K, width=width, height=height)


# --------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------
def load_keypoints(
    path: str | Path, image_path: str | Path | None = None
) -> tuple[TwoHandKeypoints, Camera | None]:
    """Keypoints for one image from any supported file (see the module docstring).

    Returns the keypoints (camera frame, metres, ``mano`` order) and the camera when the
    file has one (our JSON: may be None; .ply pairs: None; InterHand2.6M: always)."""
    p = Path(path)
    with reading(p):
        return _load_any_keypoints(p, image_path)


def _load_any_keypoints(p: Path, image_path) -> tuple[TwoHandKeypoints, Camera | None]:
    if p.is_dir():
        return load_interhand_keypoints(p, image_path)
    if p.suffix.lower() == ".ply" or not p.suffix:
        return load_keypoints_ply_pair(p), None
    if p.suffix.lower() == ".json":
        doc = _read_json(p)
        if isinstance(doc, dict) and "format" in doc:
            kp_file = _parse_keypoint_doc(doc, p)
            return kp_file.frame_for_image(image_path).keypoints, kp_file.camera
        if is_interhand_annotation_name(p):
            return load_interhand_keypoints(p, image_path)
        raise KeypointFileError(
            f"{p}: neither an {FORMAT_NAME} file (no 'format' key) nor an InterHand2.6M "
            "*_data.json / *_camera.json / *_joint_3d.json annotation file"
        )
    raise KeypointFileError(
        f"{p}: unknown keypoint file type; expected our .json, an Im2Hands *_left.ply/*_right.ply pair "
        "or an InterHand2.6M annotation folder"
    )
