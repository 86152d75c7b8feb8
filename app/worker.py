"""Reconstruction off the GUI thread.

:class:`ReconstructionWorker` is a ``QThread`` that owns the engine. The GUI submits
requests; only the newest one matters, so a new request supersedes a running one (the
engine's ``should_cancel`` turns true and stale stages are dropped). Results leave the
thread as plain data (numpy arrays in :class:`core.types.Reconstruction`) through queued
signals, so VTK objects are only ever touched by the GUI thread.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal

from core.types import Camera, Reconstruction, TwoHandKeypoints


class EngineLike(Protocol):
    mode: str

    def reconstruct_progressive(
        self,
        image_rgb: np.ndarray,
        camera: Camera,
        keypoints: TwoHandKeypoints,
        settings: Any,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Iterator[Reconstruction]: ...  # fmt: skip


EngineFactory = Callable[[str | None, str], EngineLike]  # (weights path, device) -> engine


def default_engine_factory(weights: str | None, device: str) -> EngineLike:
    from core.engine import Engine  # torch and the models load here, in the worker thread

    return Engine(weights=weights, device=device)


@dataclass(frozen=True)
class ReconstructionRequest:
    frame_index: int
    image_rgb: np.ndarray
    camera: Camera
    keypoints: TwoHandKeypoints
    settings: Any  # core.engine.ReconstructionSettings
    request_id: int = 0  # set by ReconstructionWorker.submit


@dataclass(frozen=True)
class StageResult:
    """One stage (preview or final) of a request, as the worker hands it to the GUI thread."""

    request_id: int
    frame_index: int
    reconstruction: Reconstruction
    elapsed_s: float  # since the request started running


@dataclass(frozen=True)
class WorkerFailure:
    request_id: int  # 0 for engine (checkpoint) failures
    frame_index: int
    kind: str  # "engine" or "reconstruct"
    message: str
    details: str


@dataclass(frozen=True)
class EngineInfo:
    weights: str | None
    device: str
    mode: str


DETECTION_NICENESS_STEP = 10  # detection threads: this much nicer than the process, at most 19


def _lower_this_thread_priority(step: int = DETECTION_NICENESS_STEP) -> None:
    """Make this thread ``step`` nicer than it is (at most 19), so the GUI thread wins the CPU:
    on Linux, nice is per thread and the threads this one starts later (MediaPipe's graph
    threads) inherit it. Relative, never absolute: under ``nice -n 19`` an absolute 10 would
    raise the thread above the GUI (as root) or fail. Elsewhere this is a no-op."""
    if hasattr(os, "getpriority") and hasattr(threading, "get_native_id"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
        except OSError:
            pass


class ReconstructionWorker(QThread):
    stageReady = Signal(object)  # StageResult
    failed = Signal(object)  # WorkerFailure
    engineReady = Signal(object)  # EngineInfo
    requestDone = Signal(int)  # request id: finished, failed or superseded
    busyChanged = Signal(bool)
    jobProgress = Signal(int, int)  # done, total
    jobDone = Signal(object)  # the job's return value, or the exception it raised

    def __init__(self, engine_factory: EngineFactory | None = None, weights: str | None = None,
                 device: str = "auto", parent: QObject | None = None):  # fmt: skip
        super().__init__(parent)
        self._factory = engine_factory or default_engine_factory
        self._cond = threading.Condition()
        self._pending: ReconstructionRequest | None = None
        self._engine_spec = (weights, device)
        self._engine_dirty = True
        self._stopping = False
        self._next_id = 0
        self._running_id = 0
        self._job: Callable | None = None  # a batch job run with the engine (mesh export)
        self._job_cancel = threading.Event()
        self.engine: EngineLike | None = None
        self.engine_info: EngineInfo | None = None

    # --- GUI-thread API ---------------------------------------------------------------------
    def submit(self, request: ReconstructionRequest) -> int:
        with self._cond:
            self._next_id += 1
            self._pending = replace(request, request_id=self._next_id)
            self._cond.notify_all()
            return self._next_id

    def configure_engine(self, weights: str | None, device: str) -> None:
        """Load other weights or move to another device (done in the worker thread)."""
        with self._cond:
            self._engine_spec = (weights, device)
            self._engine_dirty = True
            self._cond.notify_all()

    @property
    def engine_spec(self) -> tuple[str | None, str]:
        return self._engine_spec

    @property
    def latest_request_id(self) -> int:
        return self._next_id

    def cancel(self) -> None:
        """Drop the pending request and stop the running one at its next check."""
        with self._cond:
            self._pending = None
            self._next_id += 1  # anything running is now stale
            self._cond.notify_all()

    def submit_job(self, job: Callable) -> None:
        """Run ``job(engine, should_cancel, progress)`` in this thread once the current
        request is done; it reports ``progress(done, total)`` and its result in jobDone."""
        with self._cond:
            self._job_cancel.clear()
            self._job = job
            self._cond.notify_all()

    def cancel_job(self) -> None:
        self._job_cancel.set()

    def stop(self, timeout_ms: int = 30_000) -> None:
        with self._cond:
            self._stopping = True
            self._pending = None
            self._job_cancel.set()
            self._cond.notify_all()
        self.wait(timeout_ms)

    # --- worker thread ------------------------------------------------------------------------
    def _superseded(self, request_id: int) -> bool:
        return self._stopping or self._engine_dirty or request_id != self._next_id

    def run(self) -> None:  # noqa: D401 - QThread entry point
        # Not lowered: at the process's own priority the final takes what the CLI takes beside
        # the same load (a nicer worker got ~10 % of a core next to any normal process: 2-5x
        # slower finals on a shared machine), and the GUI stays responsive without it (the
        # stall tests pass with the worker at the GUI's priority, and passed above it).
        while True:
            with self._cond:
                while not (self._stopping or self._pending is not None or self._engine_dirty or self._job):
                    self._cond.wait()
                if self._stopping:
                    return
                rebuild, spec = self._engine_dirty, self._engine_spec
                self._engine_dirty = False
                request, self._pending = self._pending, None
                job, self._job = (self._job, None) if request is None else (None, self._job)
            if rebuild:  # a failed build is not retried per request: it would only fail again
                self._build_engine(spec)
            if request is not None:
                self._run_request(request)
            if job is not None:
                self._run_job(job)

    def _run_job(self, job: Callable) -> None:
        try:
            if self.engine is None:
                raise RuntimeError("no reconstruction engine is loaded; load a checkpoint")
            cancelled = lambda: self._job_cancel.is_set() or self._stopping  # noqa: E731
            result = job(self.engine, cancelled, self.jobProgress.emit)
        except Exception as exc:
            result = exc
        self.jobDone.emit(result)

    def _build_engine(self, spec: tuple[str | None, str]) -> None:
        weights, device = spec
        self.engine = None
        try:
            engine = self._factory(weights, device)
        except Exception as exc:  # bad checkpoint, missing CUDA, ...: report, keep running
            self.failed.emit(WorkerFailure(0, -1, "engine", f"cannot load the engine: {exc}",
                                           traceback.format_exc()))  # fmt: skip
            return
        self.engine = engine
        actual_device = str(getattr(engine, "device", device))
        self.engine_info = EngineInfo(weights, actual_device, str(getattr(engine, "mode", "?")))
        self.engineReady.emit(self.engine_info)

    def _run_request(self, request: ReconstructionRequest) -> None:
        rid = request.request_id
        if self.engine is None:
            message = "no reconstruction engine is loaded (see the error above); load a checkpoint"
            self.failed.emit(WorkerFailure(rid, request.frame_index, "engine", message, ""))
            self.requestDone.emit(rid)
            return
        self._running_id = rid
        self.busyChanged.emit(True)
        start = time.perf_counter()
        try:
            stages = self.engine.reconstruct_progressive(
                request.image_rgb, request.camera, request.keypoints, request.settings,
                should_cancel=lambda: self._superseded(rid),
            )  # fmt: skip
            for reconstruction in stages:
                if self._superseded(rid):
                    break
                self.stageReady.emit(StageResult(rid, request.frame_index, reconstruction,
                                                 time.perf_counter() - start))  # fmt: skip
        except Exception as exc:
            if not self._superseded(rid):  # a cancelled run may end in any exception
                self.failed.emit(WorkerFailure(rid, request.frame_index, "reconstruct", str(exc) or
                                               type(exc).__name__, traceback.format_exc()))  # fmt: skip
        finally:
            self._running_id = 0
            self.busyChanged.emit(False)
            self.requestDone.emit(rid)


class _TaskSignals(QObject):
    done = Signal(object)
    failed = Signal(object)  # the exception


class BackgroundTask(QRunnable):
    """Run ``fn()`` on the global thread pool; results come back as queued signals."""

    def __init__(self, fn: Callable[[], Any]):
        super().__init__()
        self.fn = fn
        self.signals = _TaskSignals()

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:
            self.signals.failed.emit(exc)
        else:
            self.signals.done.emit(result)


def run_in_background(fn: Callable[[], Any], on_done: Callable[[Any], None],
                      on_error: Callable[[BaseException], None]) -> BackgroundTask:  # fmt: skip
    task = BackgroundTask(fn)
    task.signals.done.connect(on_done)
    task.signals.failed.connect(on_error)
    task.setAutoDelete(False)  # the caller keeps the Python object (and its signals) alive
    QThreadPool.globalInstance().start(task)
    return task
