"""The shortcut sheet (Help > Keyboard and mouse, F1), built from the window's own actions so
it cannot drift from what the keys do, and the one-meaning-per-key check."""

from __future__ import annotations

from collections import defaultdict

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout

MOUSE_HELP = (
    ("Drag a joint (2D or 3D)", "move that joint (2D: along its camera ray, depth kept; with Edit > Keep "
                                "bone lengths plausible the 2D drag refits the hand's skeleton)"),
    ("Shift + drag a joint", "move the whole hand"),
    ("Ctrl + drag a joint", "turn and scale the whole hand about its wrist"),
    ("Shift + wheel on a joint (2D)", "move the joint nearer / farther (5 mm a step)"),
    ("Right-click a joint (2D)", "cycle its visibility: visible, occluded, outside"),
    ("Wheel / drag the background (2D)", "zoom / pan; double-click: fit"),
    ("Timeline marks", "grey: not annotated, light grey: no hands, blue: detected, yellow: "
                       "interpolated, orange: edited (keyframe), green: reviewed"),
    ("Dashed white skeleton", "network K's refined keypoints, not accepted yet (A)"),
    ("Red ring / red sphere on a joint", "the detector is unsure of it (confidence < 0.5): check it first"),
)  # fmt: skip


def _clean(text: str) -> str:
    return text.replace("&", "").replace("…", "")


def shortcut_rows(actions: list[QAction]) -> list[tuple[str, str]]:
    """(keys, action) for every action with a shortcut, sorted by action name."""
    rows = []
    for action in actions:
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()]
        if keys:
            rows.append((", ".join(keys), _clean(action.text())))
    return sorted(rows, key=lambda r: r[1].lower())


def shortcut_conflicts(actions: list[QAction]) -> dict[str, list[str]]:
    """Keys bound to more than one action (should be empty)."""
    by_key = defaultdict(list)
    for action in actions:
        for key in action.shortcuts():
            by_key[key.toString(QKeySequence.SequenceFormat.PortableText)].append(_clean(action.text()))
    return {key: names for key, names in by_key.items() if len(names) > 1}


class HelpDialog(QDialog):
    """Non-modal: it can stay open beside the views."""

    def __init__(self, actions: list[QAction], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard and mouse")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Keys work whichever view has the focus."))
        rows = shortcut_rows(actions) + [("", "")] + list(MOUSE_HELP)
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Key / mouse", "Does"])
        for r, (key, what) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(key))
            self.table.setItem(r, 1, QTableWidgetItem(what))
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        layout.addWidget(self.table)
        self.resize(640, 720)

    def rows(self) -> list[tuple[str, str]]:
        cell = self.table.item
        return [(cell(r, 0).text(), cell(r, 1).text()) for r in range(self.table.rowCount())]
