"""One scripted annotation session on a real video (stand-in reconstruction engine, real
MediaPipe detector): open, detect all frames (every 2nd), edit two keyframes, interpolate
(bone lengths within 1 mm), mark frames reviewed, save, reopen, export COCO and InterHand2.6M,
read both back. Detection must cost at most 0.2 s of CPU per frame (all our threads), and,
when the machine is not busy with other processes, run at >= 5 frames/s with the GUI thread
never blocked > 100 ms (a 10 ms QTimer heartbeat measures the longest gap)."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox
from test_app_fakes import FakeEngine
from test_app_gui import make_window

from app.annotation import DETECTED, EDITED, INTERPOLATED, REVIEWED
from core.geometry.pose_interpolation import bone_lengths, rigid_transform_hand, rotation_about_axis
from core.io.keypoints import load_interhand_keypoints
from tests import golden

pytestmark = pytest.mark.gui
VIDEO = golden.realdata_dir() / "video" / "mediapipe_samples_hand_landmarker_test_video.mp4"
SHOTS = os.environ.get("IM2HANDS_TEST_SHOTS")  # a folder: also save screenshots there


class Heartbeat:
    """The longest gap between ticks of a 10 ms timer: how long the GUI thread was held up.
    ``longest_s`` is the raw gap; ``longest_own_s`` leaves out the time the GUI thread was
    ready to run but waited for a CPU (Linux schedstat), which is the machine's load, not
    the app: what remains is the thread's own work and its waits for the GIL or locks."""

    def __init__(self):
        self.last = None
        self.longest_s = 0.0
        self.longest_own_s = 0.0
        self.gaps: list[tuple[float, float, float]] = []  # (s from start, gap, gap less CPU wait) > 40 ms
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self._schedstat = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat")

    def _cpu_wait_s(self) -> float:
        try:
            return int(self._schedstat.read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):  # not Linux: no correction
            return 0.0

    def _tick(self) -> None:
        now, wait = time.perf_counter(), self._cpu_wait_s()
        if self.last is not None:
            gap = now - self.last
            own = max(0.0, gap - (wait - self.last_wait))
            self.longest_s = max(self.longest_s, gap)
            self.longest_own_s = max(self.longest_own_s, own)
            if gap > 0.04:
                self.gaps.append((round(now - self.started, 3), round(gap, 3), round(own, 3)))
        self.last, self.last_wait = now, wait

    def start(self) -> None:
        self.started = self.last = time.perf_counter()
        self.last_wait = self._cpu_wait_s()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()


class CpuShare:
    """CPU seconds used during a run by this process (all its threads) and by every other
    process on the machine (Linux ``/proc/stat``; elsewhere ``others_s`` is None)."""

    def __enter__(self) -> CpuShare:
        self._wall, self._own, self._busy = time.perf_counter(), time.process_time(), _machine_busy_s()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.own_s = time.process_time() - self._own
        busy = _machine_busy_s()
        known = busy is not None and self._busy is not None
        self.others_s = max(0.0, busy - self._busy - self.own_s) if known else None

    def others_fraction(self) -> float | None:
        """Share of the machine's CPU capacity that other processes took meanwhile."""
        if self.others_s is None:
            return None
        return self.others_s / (self.wall_s * (os.cpu_count() or 1))


def _machine_busy_s() -> float | None:
    """CPU seconds all processes have used since boot (user, nice, system, irq, softirq, steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def shoot(widget, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        widget.grab().save(str(Path(SHOTS) / name))


def test_video_annotation_session(qtbot, tmp_path, monkeypatch):
    """The issue's scripted session, step by step (long: one story, seven numbered steps)."""
    if QGuiApplication.platformName() != "xcb":
        pytest.skip("3D view needs an X server")
    if not VIDEO.is_file():
        pytest.skip(f"{VIDEO} not present")
    window = make_window(qtbot, tmp_path, monkeypatch, FakeEngine(stage_delay_s=0.01))
    window.resize(960, 640)
    doc = window.doc
    # 1. open the video
    assert window.open_path(VIDEO)
    total = doc.frame_count()
    assert total == 202 and doc.frame_states() == ["not annotated"] * total
    # 2. detect all frames (every 2nd), GUI heartbeat running
    window.preload_detector()  # what the app does at start-up with the real engine
    gc.collect()  # garbage of earlier tests in this process: not this session's pauses
    beat = Heartbeat()
    beat.start()
    with CpuShare() as cpu:
        assert window.detect_all_frames(every=2)
        qtbot.waitUntil(lambda: window.last_detect_all is not None, timeout=300_000)
    beat.stop()
    result = window.last_detect_all
    assert result.error is None and not result.cancelled and len(result.keypoints) == 101
    frames_per_cpu_s = len(result.keypoints) / cpu.own_s
    others = cpu.others_fraction()
    report = (f"detect all: {result.frames_per_s:.1f} frames/s in {result.elapsed_s:.2f} s, "
              f"{frames_per_cpu_s:.1f} frames per CPU second of this process ({cpu.own_s:.2f} s), other "
              f"processes took {'?' if others is None else f'{others:.0%}'} of the CPUs; longest GUI gap "
              f"{beat.longest_s * 1000:.0f} ms, {beat.longest_own_s * 1000:.0f} ms less waits for a CPU; "
              f"gaps > 40 ms (s from start, gap, less CPU wait): {beat.gaps}")  # fmt: skip
    print(report)
    # ">= 5 frames/s on this CPU": the CPU time all our threads spent (decoding, MediaPipe's
    # graph, smoothing, the GUI) is at most 0.2 s per frame, whatever else runs. Wall-clock
    # figures (the rate, the GUI's longest gap) also count waiting for a CPU, and for the GIL
    # held by one of our threads that waits for a CPU, which no per-thread figure separates
    # from the app's own stalls; so they are held to their limits only when other processes
    # left us the machine (took < 10 % of it), and reported otherwise.
    assert frames_per_cpu_s >= 5.0, report
    if others is None or others < 0.10:
        assert result.frames_per_s >= 5.0, report
        assert beat.longest_s < 0.100, f"GUI thread blocked: {report}"
    else:
        warnings.warn(f"wall rate and raw GUI gaps not checked: the machine was shared ({report})",
                      stacklevel=1)  # fmt: skip
    states = doc.frame_states()
    detected = [i for i in range(0, total, 2) if states[i] == DETECTED]
    assert len(detected) >= 80, "the hand should be found in most frames"
    assert all(states[i] == "not annotated" for i in range(1, total, 2))
    # 3. edit two keyframes: frame a (move a fingertip), frame b (frame a's hand, turned and moved)
    a, b = detected[10], detected[10] + 20
    side = doc.active_keypoints(a).present_sides()[0]
    doc.set_current_frame(a)
    doc.move_keypoint_3d(a, side, 8, doc.active_keypoints(a).hand(side)[8] + [0.0, -0.01, 0.0])
    hand_a = doc.active_keypoints(a).hand(side)
    target_wrist = (doc.active_keypoints(b) or doc.active_keypoints(a)).hand(side)
    target_wrist = hand_a[0] if target_wrist is None else target_wrist[0]
    hand_b = rigid_transform_hand(hand_a, rotation_about_axis([0.2, 0.3, 1.0], 0.9),
                                  translation=target_wrist - hand_a[0])  # fmt: skip
    doc.set_current_frame(b)
    doc.set_active_hand(b, side, hand_b, "Edit keyframe")
    assert doc.frame_states()[a] == EDITED and doc.frame_states()[b] == EDITED
    # 4. interpolate (key I) and check the bones
    QTest.keyClick(window, Qt.Key.Key_I)
    states = doc.frame_states()
    assert states[a + 1:b] == [INTERPOLATED] * (b - a - 1)
    reference = bone_lengths(hand_a)
    for index in range(a + 1, b):
        assert np.abs(bone_lengths(doc.active_keypoints(index).hand(side)) - reference).max() < 1e-3
    # 5. mark frames reviewed (R), and N to the next one needing review
    doc.set_current_frame(a)
    for _ in range(b - a + 1):
        QTest.keyClick(window, Qt.Key.Key_R)
        QTest.keyClick(window, Qt.Key.Key_N)
    qtbot.waitUntil(lambda: window.review_label.text() == f"reviewed {b - a + 1} / {total}")
    assert doc.frame_states()[a:b + 1] == [REVIEWED] * (b - a + 1)
    if SHOTS:  # a reviewed, interpolated frame with its hands
        doc.set_current_frame((a + b) // 2)
        qtbot.waitUntil(lambda: not window.controller.pending() and not window.scene_view.render_pending)
        shoot(window, "session_window.png")
    shoot(window.frame_strip, "timeline_states.png")
    # 6. save, reopen, export
    assert window.save_as(tmp_path / "session")
    expected = {i: doc.annotation(i).copy() for i in doc.frames}
    saved_states = doc.frame_states()
    window.unsaved_answer = QMessageBox.StandardButton.Discard
    assert window.open_path(tmp_path / "session.im2hands.json")
    assert doc.frame_states() == saved_states and doc.review_counts() == (b - a + 1, total)
    for index, ann in expected.items():
        got = doc.annotation(index)
        assert (got.reviewed, got.interpolated) == (ann.reviewed, ann.interpolated)
        if ann.active() is not None and ann.active().hand(side) is not None:
            np.testing.assert_allclose(got.active().hand(side), ann.active().hand(side), atol=1e-7)
    coco_path = tmp_path / "export" / "coco.json"
    assert window.export_annotations("coco", coco_path)
    ih_dir = tmp_path / "export" / "interhand"
    written = window.export_annotations("interhand", ih_dir, only_reviewed=True, write_images=True)
    assert len([p for p in written if p.suffix == ".png"]) == b - a + 1
    assert window.error_panel.entries() == []
    # 7. read both back and compare
    from pycocotools.coco import COCO

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("error")
        coco = COCO(str(coco_path))
    annotated = [i for i, ann in doc.frames.items() if ann.active() and ann.active().present_sides()]
    assert len(coco.getImgIds()) == len(annotated)
    camera = doc.camera_for_frame(0)
    image_id = next(im["id"] for im in coco.dataset["images"] if im["frame_index"] == a + 1)
    category = 2 if side == "right" else 1
    (ann,) = [x for x in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])) if x["category_id"] == category]
    uv = np.reshape(ann["keypoints"], (21, 3))
    projected = camera.project(doc.active_keypoints(a + 1).hand(side))
    seen = uv[:, 2] > 0
    assert seen.sum() >= 15 and np.abs(uv[seen, :2] - projected[seen]).max() < 2e-3
    for index in (a, (a + b) // 2, b):
        name = f"{VIDEO.stem}_frame{index:06d}.png"
        kps, cam = load_interhand_keypoints(ih_dir, name)
        assert np.abs(kps.hand(side) - doc.active_keypoints(index).hand(side)).max() < 1e-6
        np.testing.assert_allclose(cam.K, camera.K)
