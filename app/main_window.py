"""The main window: wires the document, the views, the panels and the worker together."""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QToolButton,
)

from app.annotation import NOT_ANNOTATED, VISIBILITY_NAMES, frame_state
from app.controller import ReconstructionController, make_engine_settings
from app.detect_all import DetectAllResult, DetectAllWorker, DetectProgress
from app.document import Document
from app.export import MESH_SUFFIXES, export_meshes
from app.help import HelpDialog, shortcut_conflicts
from app.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from app.panels import ErrorPanel, FrameStrip, SettingsPanel
from app.project import PROJECT_SUFFIX, is_project_path
from app.views.image_view import ImageView
from app.views.scene3d import Scene3DView
from app.worker import (
    EngineFactory,
    EngineInfo,
    ReconstructionWorker,
    StageResult,
    WorkerFailure,
    _lower_this_thread_priority,
    run_in_background,
)
from core.errors import InputError, describe_error
from core.geometry.pose_interpolation import rotation_about_axis
from core.hand.joints import HAND_SIDES
from core.io.atomic import atomic_path

DEPTH_STEP_M = 0.005  # Shift+wheel on a joint moves it this far along its camera ray

APP_NAME = "Im2Hands Studio"
_HAND_CYCLE = (None, "left", "right")


class MainWindow(QMainWindow):
    """``interactive=False`` (tests, headless runs) never opens a modal dialog: questions get
    the answer in :attr:`unsaved_answer` and errors go to the error panel only."""

    frameDisplayed = Signal(int)

    def __init__(self, engine_factory: EngineFactory | None = None, weights: str | None = None,
                 device: str = "auto", interactive: bool = True, settings_factory=None,
                 parent=None):  # fmt: skip
        super().__init__(parent)
        if engine_factory is None:
            # Load torch/torchvision/triton here, on the main thread, before the 3D view makes
            # a GL context: triton's LLVM loaded later from the worker thread next to Mesa's
            # llvmpipe crashes the process.
            import core.engine  # noqa: F401
        self._video_detector = None
        if engine_factory is None:
            self.preload_detector()
        self.interactive = interactive
        self.unsaved_answer = QMessageBox.StandardButton.Cancel  # used when not interactive
        self.setWindowTitle(APP_NAME)
        self.resize(1400, 850)

        self.doc = Document(self)
        self.worker = ReconstructionWorker(engine_factory, weights, device, parent=self)
        self.image_view = ImageView()
        self.scene_view = Scene3DView()
        self.settings_panel = SettingsPanel()
        self.settings_panel.device.setCurrentText(device)
        self.frame_strip = FrameStrip()
        self.error_panel = ErrorPanel()
        self.controller = ReconstructionController(
            self.doc,
            self.worker,
            self.settings_panel.settings,
            settings_factory or make_engine_settings,
            parent=self,
        )
        self._background_tasks = set()
        self.detect_all_worker: DetectAllWorker | None = None
        self.last_detect_all: DetectAllResult | None = None
        self.last_mesh_export = None  # FrameMeshExport, or the exception
        self.help_dialog: HelpDialog | None = None
        self._states_timer = QTimer(self)  # coalesces timeline / counter updates
        self._states_timer.setSingleShot(True)
        self._states_timer.setInterval(0)
        self._states_timer.timeout.connect(self._refresh_states)
        self._build_layout()
        self._build_status_bar()
        self._build_actions()
        self._connect()
        self.settings_panel.set_checkpoint(weights, None, None)
        self.worker.start()
        self._update_title()
        self._refresh_hint()

    # --- construction -------------------------------------------------------------------------
    def _build_layout(self) -> None:
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.image_view)
        splitter.addWidget(self.scene_view)
        splitter.setSizes([650, 650])
        self.setCentralWidget(splitter)
        side = QDockWidget("Pipeline", self)
        side.setObjectName("pipeline_dock")
        side.setWidget(self.settings_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, side)
        frames = QDockWidget("Frames", self)
        frames.setObjectName("frames_dock")
        frames.setWidget(self.frame_strip)
        frames.setTitleBarWidget(QLabel(""))
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, frames)
        self.error_dock = QDockWidget("Errors", self)
        self.error_dock.setObjectName("errors_dock")
        self.error_dock.setWidget(self.error_panel)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.error_dock)
        self.error_dock.hide()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.stage_label = QLabel("no reconstruction")
        self.stage_label.setMinimumWidth(260)
        self.progress = QProgressBar()
        # Never indeterminate: its busy animation repaints the window ~60 times a second, and
        # beside the OpenGL 3D view every repaint composes the whole window (in software without
        # a GPU) -- a CPU core taken from the reconstruction it is waiting for (measured: the
        # app's 256^3 final took 6.0 s against the CLI's 4.1 s). The stage label says the rest.
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("working…")
        self.progress.setMaximumWidth(140)
        self.progress.hide()
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.setToolTip("stop the reconstruction (Esc)")
        self.cancel_button.clicked.connect(self.cancel_reconstruction)
        self.cancel_button.hide()
        self.detect_label = QLabel("")
        self.detect_progress = QProgressBar()
        self.detect_progress.setMaximumWidth(160)
        self.detect_cancel_button = QToolButton()
        self.detect_cancel_button.setText("Stop detecting")
        self.detect_cancel_button.clicked.connect(self.cancel_detect_all)
        self.detect_cancel_button.clicked.connect(self.worker.cancel_job)
        for w in (self.detect_label, self.detect_progress, self.detect_cancel_button):
            w.hide()
        self.review_label = QLabel("reviewed 0 / 0")
        widest = self.review_label.fontMetrics().horizontalAdvance("reviewed 00000 / 00000")
        self.review_label.setMinimumWidth(widest)
        bar.addPermanentWidget(self.detect_label)
        bar.addPermanentWidget(self.detect_progress)
        bar.addPermanentWidget(self.detect_cancel_button)
        bar.addPermanentWidget(self.review_label)
        bar.addPermanentWidget(self.stage_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        # Showing a progress bar must not grow the status bar: that re-lays out the window
        # and re-renders the 3D view on the GUI thread.
        bar.setFixedHeight(max(self.progress.sizeHint().height(), self.cancel_button.sizeHint().height(),
                               self.detect_cancel_button.sizeHint().height()) + 8)  # fmt: skip

    def _action(self, text: str, slot, shortcuts=(), menu=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcuts:
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
        action.setStatusTip(tip or text)
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work whatever widget has focus
        if menu is not None:
            menu.addAction(action)
        return action

    def _build_actions(self) -> None:
        """Menus and keys; one meaning per key (app.help.shortcut_conflicts checks it)."""
        bar = self.menuBar()
        self._build_file_menu(bar.addMenu("&File"))
        self._build_edit_menu(bar.addMenu("&Edit"))
        self._build_review_menu(bar.addMenu("&Review"))
        view = bar.addMenu("&View")
        a = self._action
        a("&Next frame", lambda: self.doc.step_frame(1), ["PgDown", "."], view)
        a("&Previous frame", lambda: self.doc.step_frame(-1), ["PgUp", ","], view)
        view.addSeparator()
        a("&Reset 3D view", self.scene_view.reset_view, ["Home"], view)
        a("&Fit image", self.image_view.fit, ["F"], view)
        self.toggle_meshes_action = self._toggle("Show &meshes", "meshes", "M", view)
        self.toggle_keypoints_action = self._toggle("Show &joints (keypoints)", "keypoints", "J", view)
        self.toggle_penetration_action = self._toggle("Show &penetration", "penetration", "P", view)
        view.addSeparator()
        view.addAction(self.error_dock.toggleViewAction())
        help_menu = bar.addMenu("&Help")
        self.help_action = a("&Keyboard and mouse…", self.show_help, ["F1"], help_menu)

        for action in (self.detect_action, self.detect_all_action, self.add_left_action,
                       self.add_right_action, self.skeleton_fit_action, self.accept_refined_action,
                       self.reconstruct_action):  # fmt: skip
            self.settings_panel.add_tool_button(action)

    def _build_file_menu(self, file_menu) -> None:
        a = self._action
        self.open_action = a(
            "&Open image, video or project…", self._open_dialog, [QKeySequence.StandardKey.Open], file_menu
        )
        a("Open image &folder…", self._open_folder_dialog, [], file_menu)
        a("Load &keypoints…", self._load_keypoints_dialog, ["Ctrl+L"], file_menu)
        a("Load &checkpoint…", self._load_checkpoint_dialog, [], file_menu)
        file_menu.addSeparator()
        a("&Save project", self.save, [QKeySequence.StandardKey.Save], file_menu)
        a("Save project &as…", self.save_as, ["Ctrl+Shift+S"], file_menu)
        a("&Recover autosave", self.recover_autosave, [], file_menu)
        file_menu.addSeparator()
        a("Export &meshes…", self._export_meshes_dialog, ["Ctrl+E"], file_menu)
        a("Export meshes of &all frames…", lambda: self._export_all_meshes_dialog(False), [], file_menu)
        a("Export meshes of re&viewed frames…", lambda: self._export_all_meshes_dialog(True), [], file_menu)
        a("Export keypoints (JSON)…", self._export_keypoints_dialog, ["Ctrl+Shift+E"], file_menu)
        a("Export keypoints (&COCO)…", lambda: self._export_dialog("coco"), [], file_menu)
        a("Export keypoints (&InterHand2.6M)…", lambda: self._export_dialog("interhand"), [], file_menu)
        a("Save screens&hot…", self._screenshot_dialog, ["F12"], file_menu)
        file_menu.addSeparator()
        a("&Quit", self.close, [QKeySequence.StandardKey.Quit], file_menu)

    def _build_edit_menu(self, edit) -> None:
        a = self._action
        self.undo_action = self.doc.undo_stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        self.redo_action = self.doc.undo_stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for action in (self.undo_action, self.redo_action):
            self.addAction(action)
            edit.addAction(action)
        edit.addSeparator()
        self.detect_action = a("&Detect hands", self.detect_current_frame, ["Ctrl+D"], edit,
                               "find the hands in this frame with the keypoint detector")  # fmt: skip
        self.detect_all_action = a("Detect &all frames", lambda: self.detect_all_frames(), ["Ctrl+Shift+D"],
                                   edit, "detect the hands in every frame of the video / folder")  # fmt: skip
        self.swap_action = a("S&wap left/right", lambda: self.doc.swap_hands(), ["S"], edit)
        self.select_hand_action = a("Select next &hand", self.cycle_selected_hand, ["H"], edit)
        self.add_left_action = a("Add &left hand", lambda: self._add_hand("left"), [], edit)
        self.add_right_action = a("Add &right hand", lambda: self._add_hand("right"), [], edit)
        self.remove_hand_action = a("Remove selected hand", self._remove_selected_hand, ["Del"], edit)
        self.skeleton_fit_action = a(
            "Keep bone lengths &plausible (skeleton fit)", lambda _on: None, [], edit,
            "Add hand and 2D joint drags refit the hand's skeleton with the anthropometric prior; "
            "off: the template and single-joint moves",
        )  # fmt: skip
        self.skeleton_fit_action.setCheckable(True)
        self.skeleton_fit_action.setChecked(True)
        self.skeleton_fit_action.setIconText("Plausible bone lengths")  # the panel's button: no elision
        self.visibility_action = a("Cycle joint &visibility (visible, occluded, outside)",
                                   self.cycle_selected_joint_visibility, ["V"], edit)  # fmt: skip
        edit.addSeparator()
        self.accept_refined_action = a("&Accept refiner's keypoints", self._accept_refined, ["A"], edit,
                                       "take network K's refined keypoints (the dashed ghosts)")  # fmt: skip
        a("Accept refiner's left hand", lambda: self._accept_refined_hand("left"), [], edit)
        a("Accept refiner's right hand", lambda: self._accept_refined_hand("right"), [], edit)
        self.reconstruct_action = a("Reconstruct &now", lambda: self.controller.schedule(True), ["F5"], edit)
        self.cancel_action = a("&Cancel reconstruction", self.cancel_reconstruction, ["Esc"], edit)

    def _build_review_menu(self, review) -> None:
        a = self._action
        self.reviewed_action = a("Mark frame &reviewed", self.toggle_reviewed, ["R"], review)
        self.next_review_action = a("&Next frame needing review", self.go_to_next_needing_review, ["N"],
                                    review)  # fmt: skip
        self.copy_next_action = a("&Copy to next frame", self.copy_to_next_frame, ["C"], review)
        self.interpolate_action = a("&Interpolate between keyframes", self.interpolate_keyframes, ["I"],
                                    review)  # fmt: skip

    def _toggle(self, text: str, layer: str, key: str, menu) -> QAction:
        action = self._action(text, lambda checked: self.set_layer_shown(layer, checked), [key], menu)
        action.setCheckable(True)
        action.setChecked(True)
        return action

    def _connect(self) -> None:
        doc = self.doc
        doc.mediaChanged.connect(self._on_media_changed)
        doc.currentFrameChanged.connect(self._on_frame_changed)
        doc.keypointsChanged.connect(self._on_keypoints_changed)
        doc.cameraChanged.connect(self._refresh_keypoints)
        doc.modifiedChanged.connect(lambda _m: self._update_title())
        doc.projectPathChanged.connect(lambda _p: self._update_title())
        doc.autosaved.connect(lambda p: self.statusBar().showMessage(f"autosaved to {p}", 3000))
        self.image_view.keypointDragged.connect(self._on_2d_drag)
        # The dragged handle follows the mouse; at the end it shows where the edit put the joint
        # (the skeleton fit lands it within a pixel, not exactly).
        self.image_view.dragFinished.connect(lambda *_: self._refresh_keypoints())
        self.image_view.jointVisibilityToggled.connect(self._cycle_joint_visibility)
        self.image_view.jointDepthStepped.connect(self._step_joint_depth)
        self.image_view.boxDrawn.connect(self._on_box_drawn)
        self.image_view.jointHovered.connect(lambda label: self.statusBar().showMessage(label, 2000))
        self.image_view.handSelected.connect(self._select_hand)
        self.scene_view.keypointMoved.connect(self._on_3d_drag)
        self.scene_view.handSelected.connect(self._select_hand)
        self.frame_strip.frameRequested.connect(doc.set_current_frame)
        self.controller.stageShown.connect(self._on_stage)
        self.controller.failed.connect(self._on_failure)
        self.controller.busyChanged.connect(self.progress.setVisible)
        self.controller.busyChanged.connect(self.cancel_button.setVisible)
        self.controller.cleared.connect(lambda: self.scene_view.show_reconstruction(None))
        self.worker.engineReady.connect(self._on_engine_ready)
        self.worker.jobProgress.connect(self._on_job_progress)
        self.worker.jobDone.connect(self._on_job_done)
        self.settings_panel.settingsChanged.connect(self._on_settings_changed)
        self.settings_panel.deviceChanged.connect(self._on_device_changed)
        self.settings_panel.loadCheckpointRequested.connect(self._load_checkpoint_dialog)
        self.settings_panel.useDefaultWeightsRequested.connect(lambda: self.load_checkpoint(None))
        self.error_panel.errorAdded.connect(lambda _e: self.error_dock.show())
        # Autosave failures (a read-only folder, a full disk) go to the error panel, once each.
        self._autosave_failure = ""
        self.doc.autosave_timer.timeout.disconnect()
        self.doc.autosave_timer.timeout.connect(self._autosave)

    # --- document -> views ----------------------------------------------------------------------
    def _on_media_changed(self) -> None:
        self.image_view.set_image(self.doc.frame_image())
        self._update_frame_strip()
        self._update_title()
        self._refresh_hint()
        self._states_timer.start()

    def _on_frame_changed(self, index: int) -> None:
        self.image_view.set_image(self.doc.frame_image())
        self._update_frame_strip()
        self._refresh_keypoints()
        self.scene_view.show_reconstruction(self.controller.current_result())
        self.frameDisplayed.emit(index)

    def _on_keypoints_changed(self, index: int) -> None:
        if index == self.doc.current_frame:
            self._refresh_keypoints()
        self._states_timer.start()

    def _refresh_states(self) -> None:
        """Timeline marks and the review counter (coalesced: a bulk change updates once)."""
        reviewed, total = self.doc.review_counts()
        self.review_label.setText(f"reviewed {reviewed} / {total}")
        self.frame_strip.set_states(self.doc.frame_states(), self.doc.current_frame)

    def _refresh_hint(self) -> None:
        if self.doc.media is None:
            hint = "Open an image, a video or an image folder: Ctrl+O.   Shortcuts: F1."
        elif self.doc.active_keypoints() is None or not self.doc.active_keypoints().present_sides():
            annotated = frame_state(self.doc.frames.get(self.doc.current_frame)) != NOT_ANNOTATED
            first = "No hands on this frame" if annotated else "This frame is not annotated yet"
            hint = (f"{first}: press Ctrl+D to detect hands (Ctrl+Shift+D: all frames), "
                    "Ctrl+L to load keypoints, or Edit > Add left/right hand.")  # fmt: skip
        else:
            hint = ""
        self.image_view.set_hint(hint)

    def _refresh_keypoints(self) -> None:
        kps = self.doc.active_keypoints()
        camera = self.doc.camera_for_frame()
        uv = {}
        for side in HAND_SIDES:
            hand = None if kps is None else kps.hand(side)
            uv[side] = None if hand is None or camera is None else camera.project(hand)
        ann = self.doc.annotation()
        weak = ann.weak_joints()
        self.image_view.set_keypoints(uv, ann.visibility, weak)
        ghosts = {}
        for side in HAND_SIDES:
            hand = None if ann.refined is None else ann.refined.hand(side)
            ghosts[side] = None if hand is None or camera is None else camera.project(hand)
        self.image_view.set_ghosts(ghosts)
        self.scene_view.show_keypoints(kps, camera, ann.visibility, weak)
        self._refresh_hint()

    def _update_frame_strip(self) -> None:
        count = self.doc.frame_count()
        name = self.doc.media.frame_name(self.doc.current_frame) if count else ""
        self.frame_strip.set_frames(count, self.doc.current_frame, name)

    def _update_title(self) -> None:
        name = "untitled"
        if self.doc.project_path is not None:
            name = self.doc.project_path.name
        elif self.doc.media is not None:
            name = self.doc.media.path.name
        self.setWindowTitle(f"{name}{' *' if self.doc.is_modified() else ''} — {APP_NAME}")

    # --- reconstruction results -----------------------------------------------------------------
    def _on_stage(self, result: StageResult) -> None:
        rec = result.reconstruction
        if self.controller.refiner_on():
            self._refresh_keypoints()  # the refiner's ghosts
        self.scene_view.show_reconstruction(rec)
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in rec.timings_s.items())
        self.stage_label.setText(f"{rec.stage} {rec.resolution}³ in {result.elapsed_s:.2f} s")
        self.settings_panel.timings_label.setText(timings)
        self.settings_panel.penetration_label.setText(f"penetration: {rec.penetration_volume_cm3:.2f} cm³")
        self.settings_panel.notes_label.setText("\n".join(rec.diagnostics.get("notes") or []))

    def _on_failure(self, failure: WorkerFailure) -> None:
        title = "Checkpoint" if failure.kind == "engine" else "Reconstruction"
        self.report_error(title, failure.message, failure.details)
        self.stage_label.setText(f"{title.lower()} failed")

    def _on_engine_ready(self, info: EngineInfo) -> None:
        self.settings_panel.set_checkpoint(info.weights, info.mode, info.device)
        self.statusBar().showMessage(f"engine ready: {info.mode} on {info.device}", 4000)

    def _on_settings_changed(self) -> None:
        self.doc.set_settings(self.settings_panel.settings(), self.worker.engine_spec[0])
        self.controller.schedule(immediate=True)

    def _on_device_changed(self, device: str) -> None:
        self.worker.configure_engine(self.worker.engine_spec[0], device)
        self._on_settings_changed()

    # --- editing ----------------------------------------------------------------------------------
    def _on_2d_drag(self, side: str, joint: int, u: float, v: float, drag_id: int) -> None:
        """Drag a joint; Shift+drag moves the whole hand, Ctrl+drag turns and scales it about
        its wrist (the grabbed joint follows the mouse at its depth)."""
        modifiers = self.image_view.drag_modifiers
        shift = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
        ctrl = bool(modifiers & Qt.KeyboardModifier.ControlModifier)
        frame, key = self.doc.current_frame, ("2d", drag_id)
        if not (shift or ctrl):
            self.doc.move_keypoint_2d(frame, side, joint, (u, v), merge_key=key,
                                      skeleton_fit=self.skeleton_fit_action.isChecked())  # fmt: skip
            return
        hand = self.doc.active_keypoints(frame).hand(side)
        camera = self.doc.camera_for_frame(frame)
        target = camera.backproject(np.array([u, v]), np.array(float(hand[joint][2])))
        self._hand_scale_edit(side, joint, target, ctrl, key)

    def _on_3d_drag(self, side: str, joint: int, x: float, y: float, z: float, drag_id: int) -> None:
        shift, ctrl = self.scene_view.drag_modifiers()
        if shift or ctrl:
            self._hand_scale_edit(side, joint, np.array([x, y, z]), ctrl, ("3d", drag_id))
            return
        self.doc.move_keypoint_3d(self.doc.current_frame, side, joint, (x, y, z), merge_key=("3d", drag_id))

    def _hand_scale_edit(self, side: str, joint: int, target, turn: bool, merge_key) -> None:
        """Move the whole hand so ``joint`` reaches ``target``: by translation, or (``turn``)
        by the rotation and scale about the wrist that carry the joint there."""
        frame = self.doc.current_frame
        hand = self.doc.active_keypoints(frame).hand(side)
        if not turn or joint == 0:
            self.doc.transform_hand(frame, side, translation=target - hand[joint], text=f"Move {side} hand",
                                    merge_key=merge_key)  # fmt: skip
            return
        before, after = hand[joint] - hand[0], np.asarray(target) - hand[0]
        axis = np.cross(before, after)
        angle = float(np.arctan2(np.linalg.norm(axis), np.dot(before, after)))
        rotation = rotation_about_axis(axis, angle) if np.linalg.norm(axis) > 1e-12 else None
        scale = float(np.linalg.norm(after) / max(np.linalg.norm(before), 1e-9))
        self.doc.transform_hand(frame, side, rotation=rotation, scale=scale, text=f"Turn/scale {side} hand",
                                merge_key=merge_key)  # fmt: skip

    def _step_joint_depth(self, side: str, joint: int, direction: int) -> None:
        hand = self.doc.active_keypoints().hand(side)
        if hand is None:
            return
        depth = float(hand[joint][2]) + direction * DEPTH_STEP_M
        key = ("depth", side, joint)
        if self.doc.set_joint_depth(self.doc.current_frame, side, joint, depth, merge_key=key):
            self.statusBar().showMessage(f"{side} joint {joint} depth {depth * 100:.1f} cm", 2000)

    def _cycle_joint_visibility(self, side: str, joint: int) -> None:
        code = self.doc.cycle_joint_visibility(self.doc.current_frame, side, joint)
        self.statusBar().showMessage(f"{side} joint {joint}: {VISIBILITY_NAMES[code]}", 2000)

    def selected_joint(self) -> tuple[str, int] | None:
        """The joint last grabbed in either view."""
        return self.image_view.selected_joint() or self.scene_view.keypoints.selected

    def cycle_selected_joint_visibility(self) -> None:
        joint = self.selected_joint()
        if joint is None or self.doc.active_keypoints() is None:
            self.statusBar().showMessage("click a joint first: V cycles visible / occluded / outside", 4000)
            return
        self._cycle_joint_visibility(*joint)

    # --- review and propagation ------------------------------------------------------------------
    def toggle_reviewed(self) -> None:
        if self.doc.media is None:
            return
        reviewed = not self.doc.annotation().reviewed
        self.doc.set_reviewed(reviewed)
        done, total = self.doc.review_counts()
        what = "reviewed" if reviewed else "reopened"
        self.statusBar().showMessage(f"frame {self.doc.current_frame} {what} ({done} / {total})", 3000)

    def go_to_next_needing_review(self) -> None:
        index = self.doc.next_needing_review() if self.doc.media is not None else None
        if index is None:
            self.statusBar().showMessage("every frame is reviewed", 4000)
        else:
            self.doc.set_current_frame(index)

    def copy_to_next_frame(self) -> None:
        if not self.doc.copy_to_next_frame():
            self.statusBar().showMessage("nothing to copy (no hands here, or the last frame)", 4000)

    def interpolate_keyframes(self) -> int:
        filled = self.doc.interpolate_keyframes()
        keys = len(self.doc.keyframes())
        message = f"{filled} frames interpolated between {keys} keyframes"
        self.statusBar().showMessage(message if filled else "edit two frames (keyframes) first", 5000)
        return filled

    def _select_hand(self, side: str | None) -> None:
        self.image_view.set_selected_hand(side)
        self.statusBar().showMessage(f"selected: {side or 'both hands'}", 2000)

    def cycle_selected_hand(self) -> None:
        current = _HAND_CYCLE.index(self.image_view.selected_hand())
        self._select_hand(_HAND_CYCLE[(current + 1) % len(_HAND_CYCLE)])

    def _add_hand(self, side: str) -> None:
        """Arm the 2D view: the user drags a box and the template hand is fitted into it."""
        if self.doc.frame_image() is None:
            self.statusBar().showMessage("open an image first", 4000)
            return
        self.image_view.request_box(side)
        self.statusBar().showMessage(f"drag a box around the {side} hand in the image (Esc: cancel)", 8000)

    def _on_box_drawn(self, side: str, u0: float, v0: float, u1: float, v1: float) -> None:
        try:
            fit = self.skeleton_fit_action.isChecked()
            self.doc.add_hand_in_box(side, (u0, v0, u1, v1), skeleton_fit=fit)
        except ValueError as exc:
            self.statusBar().showMessage(str(exc), 5000)

    def _remove_selected_hand(self) -> None:
        side = self.image_view.selected_hand()
        if side is None:
            self.statusBar().showMessage("select a hand first (H)", 3000)
            return
        self.doc.remove_hand(side)

    def _accept_refined(self) -> None:
        if not self.doc.accept_refined():
            self.statusBar().showMessage("no refined keypoints yet: enable the refiner K, reconstruct", 4000)

    def _accept_refined_hand(self, side: str) -> None:
        if not self.doc.accept_refined_hand(side):
            self.statusBar().showMessage(f"no refined {side} hand yet", 4000)

    def cancel_reconstruction(self) -> None:
        """Esc: first an armed "Add hand" box, else the running reconstruction."""
        if self.image_view.box_requested():
            self.image_view.request_box(None)
            self.statusBar().showMessage("add hand cancelled", 2000)
            return
        if self.controller.pending():
            self.controller.cancel()
            self.stage_label.setText("reconstruction cancelled (F5 to run it again)")

    def show_help(self) -> HelpDialog:
        if self.help_dialog is None:
            self.help_dialog = HelpDialog(self.actions(), self)
        self.help_dialog.show()
        self.help_dialog.raise_()
        return self.help_dialog

    def shortcut_conflicts(self) -> dict[str, list[str]]:
        return shortcut_conflicts(self.actions())

    def set_layer_shown(self, layer: str, shown: bool) -> None:
        self.scene_view.set_layer_shown(layer, shown)
        if layer == "keypoints":
            self.image_view.set_keypoints_shown(shown)

    # --- files ---------------------------------------------------------------------------------------
    def report_error(self, title: str, message: str, details: str = "") -> None:
        """Errors never stop the app: listed in the (non-modal) error panel + status bar."""
        self.error_panel.add_error(title, message, details)
        self.statusBar().showMessage(f"{title}: {message}", 8000)

    def _autosave(self) -> None:
        try:
            self.doc.autosave()
        except Exception as exc:  # never stop the app; say it once per distinct failure
            message = describe_error(exc, debug_hint=False)
            if message != self._autosave_failure:
                self._autosave_failure = message
                self.report_error("Autosave", message, traceback.format_exc())
        else:
            self._autosave_failure = ""

    def _guarded(self, title: str, fn, *args) -> bool:
        """Run ``fn``; any failure goes to the error panel (the app never aborts on input)."""
        try:
            fn(*args)
        except Exception as exc:  # a bad file can raise anything below our own checks
            self.report_error(title, describe_error(exc, debug_hint=False), traceback.format_exc())
            return False
        return True

    def open_path(self, path: str | Path) -> bool:
        """Open an image, a video, a folder of images, or a project file."""
        if not self._confirm_discard():
            return False
        if is_project_path(path):
            ok = self._guarded("Open project", self._open_project, path)
        else:
            ok = self._guarded("Open", self.doc.open_media, path)
        if ok:
            self.doc.set_settings(self.settings_panel.settings(), self.worker.engine_spec[0])
            if self.doc.find_recovery() is not None:
                self.statusBar().showMessage(
                    "an autosave of unsaved work exists: File > Recover autosave", 10000
                )
            self.controller.schedule(immediate=True)
        return ok

    def _open_project(self, path: str | Path) -> None:
        self.doc.load_project(path)
        self.settings_panel.set_settings(self.doc.settings)
        if self.doc.weights_path and self.doc.weights_path != self.worker.engine_spec[0]:
            self.load_checkpoint(self.doc.weights_path)

    def load_keypoints(self, path: str | Path) -> bool:
        if self.doc.media is None:
            self.report_error("Load keypoints", "open an image, video or folder first")
            return False
        try:
            from app.keypoint_files import load_for_media

            loaded = load_for_media(path, self.doc.media, self.doc.current_frame)
        except Exception as exc:  # routed to the error panel, whatever it is
            self.report_error("Load keypoints", describe_error(exc, debug_hint=False), traceback.format_exc())
            return False
        self.doc.set_detected_keypoints(loaded.keypoints, loaded.camera, loaded.visibility,
                                        text=f"Load keypoints {Path(path).name}")  # fmt: skip
        self.statusBar().showMessage(f"keypoints for {len(loaded.keypoints)} frame(s) loaded", 4000)
        return True

    def load_checkpoint(self, path: str | None) -> None:
        """Swap the engine's weights (ours or the official kinds; None: the default)."""
        self.worker.configure_engine(path, self.settings_panel.device.currentText())
        self.settings_panel.set_checkpoint(path, "loading…", None)
        self.doc.set_settings(self.settings_panel.settings(), path)
        self.controller.schedule(immediate=True)

    def detect_current_frame(self) -> None:
        image = self.doc.frame_image()
        camera = self.doc.camera_for_frame()
        if image is None:
            self.report_error("Detect", "open an image, video or folder first")
            return
        frame = self.doc.current_frame
        self.statusBar().showMessage("detecting hands…")
        from app.detection import detect_hands

        def done(found) -> None:
            self._background_tasks.discard(task)
            self.doc.set_detected_keypoints({frame: found.keypoints}, text="Detect hands",
                                            confidence_by_frame={frame: found.confidence})  # fmt: skip
            weak = self.doc.annotation(frame).weak_joints().sum()
            note = f"; {weak} weak joints (red rings)" if weak else ""
            sides = ", ".join(found.keypoints.present_sides())
            self.statusBar().showMessage(f"detected: {sides}{note}", 4000)

        def failed(exc) -> None:
            self._background_tasks.discard(task)
            self.report_error("Detect", str(exc) or type(exc).__name__)

        task = run_in_background(lambda: detect_hands(image, camera), done, failed)
        self._background_tasks.add(task)

    def detect_all_frames(self, every: int = 1) -> bool:
        """Detect the hands in every ``every``-th frame off the GUI thread (progress, ETA and
        a stop button in the status bar); the results land as one undoable step, leaving
        frames the user edited or reviewed alone."""
        if self.doc.media is None:
            self.report_error("Detect all frames", "open a video or an image folder first")
            return False
        if self.detect_all_worker is not None:
            self.statusBar().showMessage("already detecting: Stop detecting first", 4000)
            return False
        worker = DetectAllWorker(self.doc.media.path, self.doc.camera_for_frame(0), every,
                                 video_detector=self._video_detector, parent=self)  # fmt: skip
        worker.progressed.connect(self._on_detect_progress)
        worker.finishedDetecting.connect(self._on_detect_all_finished)
        self.detect_all_worker = worker
        self.detect_progress.setRange(0, 1)  # not indeterminate (see the reconstruction bar)
        self.detect_progress.setValue(0)
        for w in (self.detect_label, self.detect_progress, self.detect_cancel_button):
            w.show()
        self.detect_label.setText("detecting: starting…")
        worker.start()
        return True

    def preload_detector(self) -> None:
        """Import MediaPipe and warm a video-mode detector at start-up (~1.5 s): done later
        by the detection thread, the import and the model's start-up hold the GIL and stall
        the GUI for up to ~100 ms at a time while "Detect all frames" runs."""
        if self._video_detector is not None:
            return
        import core.detect.pipeline  # noqa: F401
        from core.detect.detector import MediaPipeHandDetector

        def build() -> None:
            # In a lowered-priority thread: MediaPipe's graph threads inherit its niceness.
            _lower_this_thread_priority()
            detector = MediaPipeHandDetector(video_mode=True)
            detector.forget_tracks()  # the first frame loads the models
            self._video_detector = detector

        thread = threading.Thread(target=build, name="detector-warm-up")
        thread.start()
        thread.join()

    def cancel_detect_all(self) -> None:
        if self.detect_all_worker is not None:
            self.detect_all_worker.cancel()
            self.detect_label.setText("stopping…")

    def _on_detect_progress(self, progress: DetectProgress) -> None:
        self.detect_progress.setRange(0, progress.total)
        self.detect_progress.setValue(progress.done)
        self.detect_label.setText(progress.text())

    def _on_detect_all_finished(self, result: DetectAllResult) -> None:
        worker, self.detect_all_worker = self.detect_all_worker, None
        if worker is not None:
            worker.wait()
            worker.deleteLater()
        for w in (self.detect_label, self.detect_progress, self.detect_cancel_button):
            w.hide()
        self.last_detect_all = result
        if result.error:
            self.report_error("Detect all frames", result.error, result.details)
        changed = self.doc.set_detected_keypoints(result.keypoints, text="Detect all frames",
                                                  keep_user_work=True,
                                                  confidence_by_frame=result.confidence)  # fmt: skip
        hands = sum(len(k.present_sides()) for k in result.keypoints.values())
        self.statusBar().showMessage(
            f"{'stopped: ' if result.cancelled else ''}{len(result.keypoints)} frames detected "
            f"({hands} hands, {result.frames_per_s:.1f} frames/s); {changed} updated", 8000
        )

    def export_all_meshes(self, out_dir: str | Path, only_reviewed: bool = False) -> bool:
        """Reconstruct every annotated (or reviewed) frame into ``out_dir/<frame>/`` in the
        worker thread, with progress and a stop button; the result lands in
        :attr:`last_mesh_export` (a :class:`core.io.frame_meshes.FrameMeshExport`, or the
        exception). Each frame's folder is replaced whole (never half-written)."""
        from app.export_frames import document_camera, export_frames, mesh_job_frames
        from app.media import open_media
        from core.io.frame_meshes import export_frame_meshes

        if self.doc.media is None:
            self.report_error("Export meshes", "nothing is open")
            return False
        frames = export_frames(self.doc.frames, self.doc.media, only_reviewed)
        if not frames:
            self.report_error("Export meshes", "no annotated frames to export")
            return False
        camera = document_camera(self.doc.camera, self.doc.media)
        values = self.settings_panel.settings()
        # The final only: a preview per frame would be computed and thrown away.
        settings = self.controller._settings_factory({**values, "preview_resolution": values["resolution"]})
        media_path = self.doc.media.path

        def job(engine, should_cancel, progress):
            def reconstruct(image, keypoints):
                stages = list(engine.reconstruct_progressive(image, camera, keypoints, settings))
                return stages[-1]

            media = open_media(media_path)  # this thread's own decoder
            try:
                return export_frame_meshes(reconstruct, mesh_job_frames(frames, media), out_dir, "ply",
                                           progress, should_cancel)  # fmt: skip
            finally:
                media.close()

        self.last_mesh_export = None
        self.detect_progress.setRange(0, len(frames))
        self.detect_progress.setValue(0)
        self.detect_label.setText(f"meshes 0/{len(frames)}")
        for w in (self.detect_label, self.detect_progress, self.detect_cancel_button):
            w.show()
        self.worker.submit_job(job)
        return True

    def _on_job_progress(self, done: int, total: int) -> None:
        self.detect_progress.setRange(0, total)
        self.detect_progress.setValue(done)
        self.detect_label.setText(f"meshes {done}/{total}")

    def _on_job_done(self, result) -> None:
        for w in (self.detect_label, self.detect_progress, self.detect_cancel_button):
            w.hide()
        self.last_mesh_export = result
        if isinstance(result, BaseException):
            self.report_error("Export meshes", str(result) or type(result).__name__)
            return
        empty = ", ".join(map(str, result.empty_frames))
        empty = f"; no mesh (both hands empty) for frame(s) {empty}" if empty else ""
        stopped = "stopped: " if result.cancelled else ""
        self.statusBar().showMessage(f"{stopped}wrote {len(result.written)} mesh files{empty}", 8000)

    def export_annotations(self, fmt: str, path: str | Path, only_reviewed: bool = False,
                           write_images: bool = False) -> list[Path]:  # fmt: skip
        """Our JSON, COCO keypoints or the InterHand2.6M trio (``path``: a folder) of the
        annotated frames (``only_reviewed``: the reviewed ones)."""
        from app.export_frames import document_camera, export_frames, write_frame_images
        from core.io.exports import write_export

        written: list[Path] = []

        def run() -> None:
            if self.doc.media is None:
                raise InputError("nothing is open")
            frames = export_frames(self.doc.frames, self.doc.media, only_reviewed)
            camera = document_camera(self.doc.camera, self.doc.media)
            written.extend(write_export(fmt, path, frames, camera))
            if write_images:
                folder = Path(path) if fmt == "interhand" else Path(path).parent
                written.extend(write_frame_images(self.doc.media, frames, folder))

        self._guarded(f"Export {fmt}", run)
        return written

    def save(self) -> bool:
        if self.doc.project_path is None:
            return self.save_as()
        return self._guarded("Save project", self.doc.save_project, None)

    def save_as(self, path: str | Path | None = None) -> bool:
        if path is None:
            if not self.interactive:
                return False
            start = str(self.doc.media.path.with_suffix("")) + PROJECT_SUFFIX if self.doc.media else ""
            path, _ = QFileDialog.getSaveFileName(
                self, "Save project", start, f"Projects (*{PROJECT_SUFFIX})"
            )
            if not path:
                return False
        return self._guarded("Save project", self.doc.save_project, path)

    def recover_autosave(self) -> None:
        if not self._guarded("Recover autosave", self.doc.recover):
            return
        self.statusBar().showMessage("autosaved work restored (unsaved: save it to keep it)", 6000)

    def export_meshes(self, path: str | Path) -> list[Path]:
        written = []
        self._guarded(
            "Export meshes", lambda: written.extend(export_meshes(path, self.controller.current_result()))
        )
        return written

    def export_keypoints(self, path: str | Path) -> bool:
        from app.keypoint_files import save_for_media

        if self.doc.media is None:
            self.report_error("Export keypoints", "nothing is open")
            return False
        return self._guarded("Export keypoints", save_for_media, path, self.doc.frames, self.doc.media,
                             self.doc.camera)  # fmt: skip

    def save_screenshot(self, path: str | Path) -> bool:
        QApplication.processEvents()
        self.scene_view.render_now()
        pixmap = self.grab()
        fmt = Path(path).suffix.lstrip(".").upper() or "PNG"
        try:
            with atomic_path(path) as tmp:  # never a half-written file
                if not pixmap.save(str(tmp), fmt):
                    raise OSError(f"cannot encode a {fmt} screenshot")
        except (OSError, ValueError) as exc:
            self.report_error("Screenshot", f"cannot write {path}: {exc}")
            return False
        return True

    # --- dialogs (interactive only) ------------------------------------------------------------------
    def _last_dir(self) -> str:
        return str(QSettings().value("last_dir", str(Path.cwd())))

    def _remember_dir(self, path: str) -> None:
        QSettings().setValue("last_dir", str(Path(path).parent))

    def _open_dialog(self) -> None:
        images = " ".join(f"*{s}" for s in IMAGE_SUFFIXES)
        videos = " ".join(f"*{s}" for s in VIDEO_SUFFIXES)
        filters = f"Images, videos and projects ({images} {videos} *{PROJECT_SUFFIX});;All files (*)"
        path, _ = QFileDialog.getOpenFileName(self, "Open", self._last_dir(), filters)
        if path:
            self._remember_dir(path)
            self.open_path(path)

    def _open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open image folder", self._last_dir())
        if path:
            self.open_path(path)

    def _load_keypoints_dialog(self) -> None:
        filters = "Keypoints (*.json *.ply);;All files (*)"
        path, _ = QFileDialog.getOpenFileName(self, "Load keypoints", self._last_dir(), filters)
        if path:
            self.load_keypoints(path)

    def _load_checkpoint_dialog(self) -> None:
        filters = "Checkpoints (*.safetensors *.pt *.pth *.ckpt *.tar);;All files (*)"
        path, _ = QFileDialog.getOpenFileName(self, "Load checkpoint", self._last_dir(), filters)
        if path:
            self.load_checkpoint(path)

    def _export_meshes_dialog(self) -> None:
        filters = ";;".join(f"{s[1:].upper()} (*{s})" for s in MESH_SUFFIXES)
        path, _ = QFileDialog.getSaveFileName(self, "Export meshes", self._last_dir(), filters)
        if path:
            written = self.export_meshes(path)
            if written:
                self.statusBar().showMessage("wrote " + ", ".join(p.name for p in written), 5000)

    def _export_keypoints_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export keypoints", self._last_dir(), "Keypoints (*.json)"
        )
        if path and self.export_keypoints(path):
            self.statusBar().showMessage(f"wrote {path}", 5000)

    def _export_dialog(self, fmt: str) -> None:
        if fmt == "interhand":
            path = QFileDialog.getExistingDirectory(self, "Export InterHand2.6M into", self._last_dir())
        else:
            path, _ = QFileDialog.getSaveFileName(self, "Export COCO", self._last_dir(), "COCO (*.json)")
        if path:
            written = self.export_annotations(fmt, path, write_images=True)
            if written:
                self.statusBar().showMessage(f"wrote {len(written)} file(s) to {path}", 5000)

    def _export_all_meshes_dialog(self, only_reviewed: bool) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export meshes into", self._last_dir())
        if path:
            self.export_all_meshes(path, only_reviewed)

    def _screenshot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save screenshot", self._last_dir(), "PNG (*.png)")
        if path:
            self.save_screenshot(path)

    # --- closing -------------------------------------------------------------------------------------
    def _confirm_discard(self) -> bool:
        """Never lose work silently: ask to save unsaved changes (autosave stays meanwhile)."""
        if not self.doc.is_modified() or not self.doc.frames:
            return True
        buttons = QMessageBox.StandardButton
        if self.interactive:
            answer = QMessageBox.question(
                self, APP_NAME, "The annotations have unsaved changes. Save them first?",
                buttons.Save | buttons.Discard | buttons.Cancel, buttons.Save,
            )  # fmt: skip
        else:
            answer = self.unsaved_answer
        if answer == buttons.Save:
            return self.save()
        if answer == buttons.Discard:
            self.doc.discard_autosave()
            return True
        self.doc.autosave()  # cancelled: at least make sure the sidecar is current
        return False

    def closeEvent(self, event) -> None:  # noqa: N802
        if getattr(self, "_shut_down", False):
            event.accept()
            return
        if not self._confirm_discard():
            event.ignore()
            return
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop the worker and release VTK resources (idempotent)."""
        if getattr(self, "_shut_down", False):
            return
        self._shut_down = True
        self.doc.autosave_timer.stop()
        if self.detect_all_worker is not None:
            self.detect_all_worker.cancel()
            self.detect_all_worker.wait(30_000)
        self.worker.stop()
        if self._video_detector is not None:
            self._video_detector.close()
        self.scene_view.close_view()

    # --- headless helpers ------------------------------------------------------------------------------
    def when_idle(self, callback, timeout_s: float = 600.0) -> None:
        """Call ``callback(ok)`` once the current reconstruction is final (or failed, or
        there was nothing to do) and no detection is running (its keypoints would start
        another); ``ok`` is False on timeout."""
        deadline = time.monotonic() + timeout_s

        def check() -> None:
            if not self.controller.pending() and not self._background_tasks:
                callback(True)
            elif time.monotonic() > deadline:
                callback(False)
            else:
                QTimer.singleShot(100, check)

        QTimer.singleShot(100, check)
