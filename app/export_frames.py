"""The document's frames -> :mod:`core.io.exports` (no Qt), and the ``export`` command's input:
a project file or one of our keypoint JSON files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.annotation import VISIBLE, FrameAnnotation, visibility_from_bools
from app.media import FrameSource, open_media
from core.errors import InputError
from core.hand.joints import HAND_SIDES
from core.io.exports import ExportFrame, write_export
from core.io.images import save_image_rgb
from core.io.keypoints import load_keypoints_json
from core.types import Camera


def frame_image_name(media: FrameSource, index: int) -> str:
    """The file name an export gives a frame: the image's own, or ``<video>_frame000123.png``."""
    path = media.frame_path(index)
    return path.name if path is not None else f"{media.path.stem}_frame{index:06d}.png"


def export_frames(frames: dict[int, FrameAnnotation], media: FrameSource,
                  only_reviewed: bool = False) -> list[ExportFrame]:  # fmt: skip
    """Frames with hands (``only_reviewed``: the reviewed ones), in frame order."""
    out = []
    for index in sorted(frames):
        ann = frames[index]
        active = ann.active()
        if active is None or not active.present_sides() or (only_reviewed and not ann.reviewed):
            continue
        out.append(ExportFrame(index, frame_image_name(media, index), active.copy(), ann.visibility.copy()))
    return out


def document_camera(camera: Camera | None, media: FrameSource) -> Camera:
    """The camera the keypoints were made with (the default of the frame size when unset)."""
    if camera is not None:
        return camera
    height, width = media.frame_rgb(0).shape[:2]
    return Camera.default_for_image(width, height)


def write_frame_images(media: FrameSource, frames: list[ExportFrame], folder: Path) -> list[Path]:
    """Video frames as PNG files under the names the export uses (image media: nothing to do)."""
    if media.kind != "video":
        return []
    written = []
    for frame in frames:
        target = Path(folder) / frame.image
        save_image_rgb(target, media.frame_rgb(frame.index))
        written.append(target)
    return written


def mesh_job_frames(frames: list[ExportFrame], media: FrameSource):
    """The frames for :func:`core.io.frame_meshes.export_frame_meshes`, each decoded when its
    turn comes."""
    from core.io.frame_meshes import MeshJobFrame

    def loader(index: int):
        return lambda: media.frame_rgb(index)

    return [MeshJobFrame(f.index, Path(f.image).stem, loader(f.index), f.keypoints) for f in frames]


@contextmanager
def project_frames(
    source: Path, only_reviewed: bool
) -> Iterator[tuple[FrameSource, list[ExportFrame], Camera]]:
    """A project's open media (closed on exit), its exported frames and its camera."""
    from app.project import load_project_file

    data = load_project_file(source)
    if data.media_path is None:
        raise InputError(f"{source}: the project has no media (its images name and hold the frames)")
    media = open_media(data.media_path)
    try:
        yield media, export_frames(data.frames, media, only_reviewed), document_camera(data.camera, media)
    finally:
        media.close()


def export_project_meshes(source: str | Path, out: str | Path, only_reviewed: bool, weights: str | None,
                          resolution: int, device: str, fmt: str = "ply") -> list[Path]:  # fmt: skip
    """``export --format meshes``: every annotated (or reviewed) frame of a project."""
    from app.project import is_project_path
    from core.engine import Engine, ReconstructionSettings
    from core.io.frame_meshes import export_frame_meshes

    if not is_project_path(source):
        raise InputError(f"{source}: mesh export needs a project (its media holds the images)")
    with project_frames(Path(source), only_reviewed) as (media, frames, camera):
        engines = []  # loaded at the first frame, after every frame's folder was checked
        settings = ReconstructionSettings(resolution=resolution, preview_resolution=min(64, resolution),
                                          device=device)  # fmt: skip

        def progress(done: int, total: int) -> None:
            print(f"  meshes {done}/{total}", flush=True)

        def reconstruct(image, keypoints):
            if not engines:
                engines.append(Engine(weights, device=device))
            return engines[0].reconstruct(image, camera, keypoints, settings)

        result = export_frame_meshes(reconstruct, mesh_job_frames(frames, media), out, fmt, progress)
        if result.empty_frames:
            print(f"  no mesh (both hands empty) for frame(s) {', '.join(map(str, result.empty_frames))}")
        return result.written


def export_file(source: str | Path, fmt: str, out: str | Path, only_reviewed: bool = False,
                write_images: bool = False) -> list[Path]:  # fmt: skip
    """``python main.py export``: a project or our keypoint JSON -> ``fmt`` at ``out``."""
    from app.project import is_project_path

    source = Path(source)
    if is_project_path(source):
        with project_frames(source, only_reviewed) as (media, frames, camera):
            written = write_export(fmt, out, frames, camera)
            if write_images:
                folder = Path(out) if fmt == "interhand" else Path(out).parent
                written += write_frame_images(media, frames, folder)
        return written
    if only_reviewed:
        raise InputError(f"{source}: keypoint files have no review states; --reviewed needs a project")
    kp_file = load_keypoints_json(source)
    frames = []
    for position, frame in enumerate(kp_file.frames):
        if not frame.keypoints.present_sides():
            continue
        index = position if frame.frame_index is None else frame.frame_index
        codes = np.full((2, 21), VISIBLE, dtype=np.int8)
        for row, side in enumerate(HAND_SIDES):
            values = None if frame.visibility is None else frame.visibility.get(side)
            if values is not None:
                values = np.asarray(values)
                codes[row] = visibility_from_bools(values) if values.dtype == bool else values
        image = frame.image or ""
        if "#frame=" in image or not image:  # a video frame: named as the app names it
            name = f"{Path(image.split('#frame=')[0]).stem or 'frame'}_frame{index:06d}.png"
        else:
            name = Path(image).name
        frames.append(ExportFrame(index, name, frame.keypoints, codes))
    return write_export(fmt, out, frames, kp_file.camera)
