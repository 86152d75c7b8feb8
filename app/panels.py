"""Side and bottom panels: pipeline settings, frame strip, error list."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.colors import STATE_COLORS

# Defaults mirror core.engine.ReconstructionSettings; the engine stays the authority.
DEFAULT_SETTINGS = {
    "resolution": 256,
    "preview_resolution": 64,
    "use_keypoint_refiner": False,
    "use_refinement": True,
    "refinement_resolution": None,
    "threshold_init": 0.5,
    "threshold_ref": 0.45,
    "device": "auto",
    "resolve_contact": False,
}
DEVICES = ("auto", "cpu", "cuda")
GRID_RESOLUTIONS = (32, 64, 128, 256, 512)
FAST_REFINEMENT_RESOLUTION = 128


def _select_data(combo: QComboBox, value: int) -> None:
    """Select the item holding ``value``, adding it when a project brings another one."""
    index = combo.findData(value)
    if index < 0:
        combo.addItem(f"{value}³", value)
        index = combo.count() - 1
    combo.setCurrentIndex(index)


class SettingsPanel(QWidget):
    """Pipeline toggles (K on/off, I only vs I+R), resolutions, device, thresholds, checkpoint."""

    settingsChanged = Signal()
    deviceChanged = Signal(str)
    loadCheckpointRequested = Signal()
    useDefaultWeightsRequested = Signal()

    def __init__(self, parent=None):
        """Long: builds the panel's three groups of widgets in reading order, top to bottom."""
        super().__init__(parent)
        layout = QVBoxLayout(self)

        pipeline = QGroupBox("Pipeline")
        form = QFormLayout(pipeline)
        self.use_k = QCheckBox("K: refine keypoints")
        self.stages = QComboBox()
        # Third entry: the engine's approximate guided refinement (R up to 128³, I's detail
        # beyond): 256³ final 2.05 s instead of 2.75 s on the 2-core CPU, mesh IoU 0.995
        # against the exact R (`main.py bench`, key im2hands.guided, shipped weights).
        self.stages.addItems(["I + R (refined)", "I only (initial)", "I + R, fast final (R to 128³)"])
        form.addRow(self.use_k)
        form.addRow("Occupancy", self.stages)
        # Off by default: the highlighted interpenetration is the networks' own output, which
        # a researcher wants to see; on, the meshes meet at a contact surface instead.
        self.resolve_contact = QCheckBox("Resolve contact (no overlap)")
        self.resolve_contact.setToolTip(
            "Points inside both hands go to the hand they are deeper in, so the meshes meet "
            "instead of interpenetrating (a post-process, not a network)."
        )
        form.addRow(self.resolve_contact)
        # The engine's grids are 32 * 2^k per axis; "off" = no preview stage.
        self.preview_res = QComboBox()
        self.preview_res.addItem("off", 0)
        self.final_res = QComboBox()
        for value in GRID_RESOLUTIONS:
            self.preview_res.addItem(f"{value}³", value)
            self.final_res.addItem(f"{value}³", value)
        form.addRow("Preview res.", self.preview_res)
        form.addRow("Final res.", self.final_res)
        self.threshold_init = self._threshold_box()
        self.threshold_ref = self._threshold_box()
        form.addRow("Threshold I", self.threshold_init)
        form.addRow("Threshold R", self.threshold_ref)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        form.addRow("Device", self.device)
        layout.addWidget(pipeline)

        weights = QGroupBox("Checkpoint")
        wl = QVBoxLayout(weights)
        self.checkpoint_label = QLabel("built-in / HALO-only")
        self.checkpoint_label.setWordWrap(True)
        self.checkpoint_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.mode_label = QLabel("engine: not loaded")
        row = QHBoxLayout()
        load = QPushButton("Load…")
        load.clicked.connect(self.loadCheckpointRequested)
        default = QPushButton("Default")
        default.clicked.connect(self.useDefaultWeightsRequested)
        row.addWidget(load)
        row.addWidget(default)
        wl.addWidget(self.checkpoint_label)
        wl.addWidget(self.mode_label)
        wl.addLayout(row)
        layout.addWidget(weights)

        self.tools = QGroupBox("Hands")
        self.tools_layout = QVBoxLayout(self.tools)
        layout.addWidget(self.tools)

        self.penetration_label = QLabel("")
        self.timings_label = QLabel("")
        self.timings_label.setWordWrap(True)
        # The engine's notes on the shown result (R skipped for one hand, no K in these
        # weights, ...): what was actually computed, which a researcher must not have to guess.
        self.notes_label = QLabel("")
        self.notes_label.setWordWrap(True)
        self.notes_label.setStyleSheet("font-style: italic;")
        layout.addWidget(self.penetration_label)
        layout.addWidget(self.notes_label)
        layout.addWidget(self.timings_label)
        layout.addStretch(1)
        # A fixed width: label updates after each stage must not re-layout the window
        # (that would resize and re-render the 3D view).
        self.setFixedWidth(270)

        self.set_settings(DEFAULT_SETTINGS)
        for w in (self.use_k, self.resolve_contact):
            w.toggled.connect(self.settingsChanged)
        self.stages.currentIndexChanged.connect(self.settingsChanged)
        for w in (self.preview_res, self.final_res):
            w.currentIndexChanged.connect(self.settingsChanged)
        for w in (self.threshold_init, self.threshold_ref):
            w.editingFinished.connect(self.settingsChanged)
        self.device.currentTextChanged.connect(self.deviceChanged)

    @staticmethod
    def _threshold_box() -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(0.01, 0.99)
        box.setSingleStep(0.05)
        box.setDecimals(2)
        return box

    def add_tool_button(self, action) -> None:
        button = QToolButton()
        button.setDefaultAction(action)
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.setSizePolicy(
            button.sizePolicy().horizontalPolicy().Expanding, button.sizePolicy().verticalPolicy()
        )
        self.tools_layout.addWidget(button)

    def settings(self) -> dict:
        final, preview = int(self.final_res.currentData()), int(self.preview_res.currentData())
        return {
            "resolution": final,
            "preview_resolution": preview if 0 < preview < final else final,
            "use_keypoint_refiner": self.use_k.isChecked(),
            "use_refinement": self.stages.currentIndex() != 1,
            "refinement_resolution": FAST_REFINEMENT_RESOLUTION if self.stages.currentIndex() == 2 else None,
            "threshold_init": float(self.threshold_init.value()),
            "threshold_ref": float(self.threshold_ref.value()),
            "device": self.device.currentText(),
            "resolve_contact": self.resolve_contact.isChecked(),
        }

    def set_settings(self, values: dict) -> None:
        merged = {**DEFAULT_SETTINGS, **{k: v for k, v in values.items() if k in DEFAULT_SETTINGS}}
        widgets = (self.use_k, self.stages, self.preview_res, self.final_res, self.threshold_init,
                   self.threshold_ref, self.device, self.resolve_contact)  # fmt: skip
        for w in widgets:
            w.blockSignals(True)
        try:
            self.use_k.setChecked(bool(merged["use_keypoint_refiner"]))
            self.resolve_contact.setChecked(bool(merged["resolve_contact"]))
            if not merged["use_refinement"]:
                self.stages.setCurrentIndex(1)
            else:
                self.stages.setCurrentIndex(2 if merged["refinement_resolution"] else 0)
            final = int(merged["resolution"])
            preview = int(merged["preview_resolution"])
            _select_data(self.final_res, final)
            _select_data(self.preview_res, preview if preview < final else 0)
            self.threshold_init.setValue(float(merged["threshold_init"]))
            self.threshold_ref.setValue(float(merged["threshold_ref"]))
            device = str(merged["device"])
            self.device.setCurrentIndex(DEVICES.index(device) if device in DEVICES else 0)
        finally:
            for w in widgets:
                w.blockSignals(False)

    def set_checkpoint(self, weights: str | None, mode: str | None, device: str | None) -> None:
        self.checkpoint_label.setText(weights or "built-in weights (or HALO-only)")
        self.mode_label.setText(f"engine: {mode or 'not loaded'}" + (f" on {device}" if device else ""))


class TimelineBar(QWidget):
    """One coloured mark per frame (its review state, app.colors.STATE_COLORS) and the
    current frame outlined; a click or drag picks a frame."""

    frameRequested = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.states: list[str] = []
        self.current = 0
        self.setMinimumHeight(14)
        self.setMaximumHeight(14)
        self.setToolTip("frame states: " + ", ".join(STATE_COLORS))

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(400, 14)

    def set_states(self, states: list[str], current: int) -> None:
        self.states, self.current = list(states), int(current)
        self.update()

    def frame_at(self, x: float) -> int:
        count = max(len(self.states), 1)
        return int(min(max(x / max(self.width(), 1) * count, 0), count - 1))

    def mark_rect(self, index: int) -> QRectF:
        step = self.width() / max(len(self.states), 1)
        return QRectF(index * step, 0, max(step, 1.0), self.height())

    def paintEvent(self, _event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(*STATE_COLORS["not annotated"]))
        for index, state in enumerate(self.states):
            if state != "not annotated":
                painter.fillRect(self.mark_rect(index), QColor(*STATE_COLORS[state]))
        if self.states:
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.drawRect(self.mark_rect(self.current).adjusted(1, 1, -1, -1))
        painter.end()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self.states:
            self.frameRequested.emit(self.frame_at(event.position().x()))

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self.states and event.buttons() & Qt.MouseButton.LeftButton:
            self.frameRequested.emit(self.frame_at(event.position().x()))


class FrameStrip(QWidget):
    """Slider over the frames of a video / image folder, with the timeline of frame states."""

    frameRequested = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 0, 4, 0)
        outer.setSpacing(2)
        layout = QHBoxLayout()
        outer.addLayout(layout)
        self.timeline = TimelineBar()
        outer.addWidget(self.timeline)
        self.timeline.frameRequested.connect(self.frameRequested)
        self.previous = QToolButton()
        self.previous.setArrowType(Qt.ArrowType.LeftArrow)
        self.next = QToolButton()
        self.next.setArrowType(Qt.ArrowType.RightArrow)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.label = QLabel("no media")
        self.label.setMinimumWidth(220)
        for w in (self.previous, self.slider, self.next, self.label):
            layout.addWidget(w)
        self.slider.valueChanged.connect(self.frameRequested)
        self.previous.clicked.connect(lambda: self.frameRequested.emit(self.slider.value() - 1))
        self.next.clicked.connect(lambda: self.frameRequested.emit(self.slider.value() + 1))
        self.set_frames(0, 0, "")

    def set_frames(self, count: int, current: int, name: str) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(count - 1, 0))
        self.slider.setValue(current)
        self.slider.blockSignals(False)
        self.setVisible(count > 1)
        self.label.setText(f"{current + 1} / {count}  {name}" if count else "no media")
        self.timeline.current = current
        self.timeline.update()

    def set_states(self, states: list[str], current: int) -> None:
        self.timeline.set_states(states, current)


@dataclass(frozen=True)
class ErrorEntry:
    title: str
    message: str
    details: str = ""


class ErrorPanel(QWidget):
    """Non-modal list of errors: the app keeps running, tests can read :meth:`entries`."""

    errorAdded = Signal(object)  # ErrorEntry

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        layout.addWidget(self.list)
        layout.addWidget(clear, alignment=Qt.AlignmentFlag.AlignRight)
        self._entries: list[ErrorEntry] = []

    def add_error(self, title: str, message: str, details: str = "") -> ErrorEntry:
        entry = ErrorEntry(title, message, details)
        self._entries.append(entry)
        item = QListWidgetItem(f"{title}: {message}")
        item.setToolTip(details or message)
        self.list.addItem(item)
        self.list.scrollToBottom()
        self.errorAdded.emit(entry)
        return entry

    def entries(self) -> list[ErrorEntry]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.list.clear()
