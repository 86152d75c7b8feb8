"""Keeps the reconstruction in step with the document (GUI thread, no widgets).

Edits re-queue a reconstruction after a short debounce; the controller turns the current
frame + settings into a request for the worker, drops results of superseded requests and
remembers the latest reconstruction per frame. A frame's final result is cached under the key
of its inputs (media, frame, image bytes, active keypoints, settings): revisiting the frame,
or a change that leaves the inputs alike (joint visibility, review marks), shows the cached
meshes instead of running the engine again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from app.document import Document
from app.worker import ReconstructionRequest, ReconstructionWorker, StageResult, WorkerFailure
from core.types import Reconstruction

DEBOUNCE_MS = 150


def make_engine_settings(values: dict):
    """``core.engine.ReconstructionSettings`` from a settings dict (unknown keys ignored)."""
    from core.engine import ReconstructionSettings

    names = {f.name for f in dataclasses.fields(ReconstructionSettings)}
    return ReconstructionSettings(**{k: v for k, v in values.items() if k in names})


class ReconstructionController(QObject):
    stageShown = Signal(object)  # StageResult of the current frame's newest request
    failed = Signal(object)  # WorkerFailure of the newest request (or of the engine)
    requestFinished = Signal(int)  # the newest request is done (final, failed or cancelled)
    cleared = Signal()  # the current frame has nothing to reconstruct
    busyChanged = Signal(bool)

    def __init__(self, doc: Document, worker: ReconstructionWorker, settings: Callable[[], dict],
                 settings_factory: Callable[[dict], object] = make_engine_settings,
                 parent: QObject | None = None):  # fmt: skip
        super().__init__(parent)
        self.doc = doc
        self.worker = worker
        self._settings = settings
        self._settings_factory = settings_factory
        self.latest_id = 0
        self.results: dict[int, Reconstruction] = {}  # frame -> newest shown reconstruction
        self.enabled = True
        self.busy = False
        self.submitted_count = 0
        self.cache_hits = 0
        self._final_cache: dict[int, tuple[str, StageResult]] = {}  # frame -> (input key, final)
        self._request_keys: dict[int, str] = {}  # request id -> input key
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.submit_now)
        worker.stageReady.connect(self._on_stage)
        worker.failed.connect(self._on_failed)
        worker.requestDone.connect(self._on_done)
        doc.keypointsChanged.connect(self._on_keypoints_changed)
        doc.currentFrameChanged.connect(lambda _i: self.schedule(immediate=True))
        doc.mediaChanged.connect(self._forget_all)

    def _forget_all(self) -> None:
        self.results.clear()
        self._final_cache.clear()

    def _on_keypoints_changed(self, frame: int) -> None:
        if frame == self.doc.current_frame:
            self.schedule()

    def input_key(self, frame: int, image, keypoints, settings_values: dict) -> str:
        """What a reconstruction depends on, hashed (the image's bytes: ~1 ms per frame)."""
        digest = hashlib.sha1()
        digest.update(str((str(self.doc.media.path), frame, sorted(settings_values.items()))).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        for side in ("left", "right"):
            hand = keypoints.hand(side)
            digest.update(b"-" if hand is None else np.ascontiguousarray(hand, dtype=np.float64).tobytes())
        return digest.hexdigest()

    def cancel(self) -> None:
        """Stop the running reconstruction; the frame shows what it had."""
        self._debounce.stop()
        self.worker.cancel()
        self.latest_id = self.worker.latest_request_id
        self._set_busy(False)

    def schedule(self, immediate: bool = False) -> None:
        """Re-queue the current frame; edits are debounced so a drag makes few requests."""
        if immediate:
            self._debounce.stop()
            self.submit_now()
        else:
            self._debounce.start()

    def pending(self) -> bool:
        return self._debounce.isActive() or self.busy

    def submit_now(self) -> int:
        self._debounce.stop()
        if not self.enabled:
            return 0
        frame = self.doc.current_frame
        keypoints = self.doc.active_keypoints(frame)
        if self.doc.media is None or keypoints is None or not keypoints.present_sides():
            self.worker.cancel()
            self.latest_id = self.worker.latest_request_id
            self._set_busy(False)
            self.cleared.emit()
            return 0
        try:
            values = self._settings()
            image = self.doc.frame_image(frame)
            key = self.input_key(frame, image, keypoints, values)
            cached = self._final_cache.get(frame)
            if cached is not None and cached[0] == key:
                return self._show_cached(cached[1])
            settings = self._settings_factory(values)
            request = ReconstructionRequest(
                frame_index=frame, image_rgb=image,
                camera=self.doc.camera_for_frame(frame), keypoints=keypoints.copy(), settings=settings,
            )  # fmt: skip
        except Exception as exc:  # e.g. the engine package is missing, or a bad frame
            self.failed.emit(WorkerFailure(0, frame, "reconstruct", str(exc), ""))
            return 0
        self.latest_id = self.worker.submit(request)
        self._request_keys[self.latest_id] = key
        self.submitted_count += 1
        self._set_busy(True)
        return self.latest_id

    def _show_cached(self, result: StageResult) -> int:
        self.worker.cancel()  # whatever runs is for older inputs
        self.latest_id = self.worker.latest_request_id
        self.cache_hits += 1
        self.results[result.frame_index] = result.reconstruction
        self._set_busy(False)
        self.stageShown.emit(result)
        return 0

    def _set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self.busyChanged.emit(busy)

    def _on_stage(self, result: StageResult) -> None:
        if result.request_id != self.latest_id:
            return  # superseded: a newer request is on its way
        self.results[result.frame_index] = result.reconstruction
        key = self._request_keys.get(result.request_id)
        if result.reconstruction.stage == "final" and key is not None:
            self._final_cache[result.frame_index] = (key, result)
        if self._settings().get("use_keypoint_refiner"):
            self.doc.set_refined(result.frame_index, result.reconstruction.keypoints)
        if result.frame_index == self.doc.current_frame:
            self.stageShown.emit(result)

    def _on_failed(self, failure: WorkerFailure) -> None:
        if failure.request_id in (0, self.latest_id):
            self.failed.emit(failure)

    def _on_done(self, request_id: int) -> None:
        self._request_keys.pop(request_id, None)
        if request_id == self.latest_id:
            self._set_busy(False)
            self.requestFinished.emit(request_id)

    def refiner_on(self) -> bool:
        return bool(self._settings().get("use_keypoint_refiner"))

    def current_result(self) -> Reconstruction | None:
        return self.results.get(self.doc.current_frame)
