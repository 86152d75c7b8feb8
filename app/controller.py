"""Keeps the reconstruction in step with the document (GUI thread, no widgets).

Edits re-queue a reconstruction after a short debounce; the controller turns the current
frame + settings into a request for the worker, drops results of superseded requests and
remembers the latest reconstruction per frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.submit_now)
        worker.stageReady.connect(self._on_stage)
        worker.failed.connect(self._on_failed)
        worker.requestDone.connect(self._on_done)
        doc.keypointsChanged.connect(self._on_keypoints_changed)
        doc.currentFrameChanged.connect(lambda _i: self.schedule(immediate=True))
        doc.mediaChanged.connect(lambda: self.results.clear())

    def _on_keypoints_changed(self, frame: int) -> None:
        self.results.pop(frame, None)
        if frame == self.doc.current_frame:
            self.schedule()

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
            settings = self._settings_factory(self._settings())
            request = ReconstructionRequest(
                frame_index=frame, image_rgb=self.doc.frame_image(frame),
                camera=self.doc.camera_for_frame(frame), keypoints=keypoints.copy(), settings=settings,
            )  # fmt: skip
        except Exception as exc:  # e.g. the engine package is missing, or a bad frame
            self.failed.emit(WorkerFailure(0, frame, "reconstruct", str(exc), ""))
            return 0
        self.latest_id = self.worker.submit(request)
        self.submitted_count += 1
        self._set_busy(True)
        return self.latest_id

    def _set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self.busyChanged.emit(busy)

    def _on_stage(self, result: StageResult) -> None:
        if result.request_id != self.latest_id:
            return  # superseded: a newer request is on its way
        self.results[result.frame_index] = result.reconstruction
        if self._settings().get("use_keypoint_refiner"):
            self.doc.set_refined(result.frame_index, result.reconstruction.keypoints)
        if result.frame_index == self.doc.current_frame:
            self.stageShown.emit(result)

    def _on_failed(self, failure: WorkerFailure) -> None:
        if failure.request_id in (0, self.latest_id):
            self.failed.emit(failure)

    def _on_done(self, request_id: int) -> None:
        if request_id == self.latest_id:
            self._set_busy(False)
            self.requestFinished.emit(request_id)

    def current_result(self) -> Reconstruction | None:
        return self.results.get(self.doc.current_frame)
