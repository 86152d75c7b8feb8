"""``python main.py gui``: the desktop application (headless-drivable for checks)."""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--open", metavar="FILE", help="image, video, image folder or project to open")
    parser.add_argument(
        "--keypoints", metavar="PATH", help="our JSON, an Im2Hands .ply pair or an InterHand2.6M folder"
    )
    parser.add_argument(
        "--detect", action="store_true",
        help="detect the hands on opening when no --keypoints are given (Edit > Detect hands)",
    )  # fmt: skip
    parser.add_argument(
        "--weights",
        metavar="PATH",
        default=os.environ.get("IM2HANDS_WEIGHTS") or None,
        help="checkpoint file or folder (default: $IM2HANDS_WEIGHTS, else the shipped weights)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--resolution", type=int, help="final grid resolution per axis")
    parser.add_argument("--preview-resolution", type=int, help="preview grid resolution (0: no preview)")
    parser.add_argument(
        "--resolve-contact", action="store_true", help="start with 'Resolve contact (no overlap)' on"
    )
    parser.add_argument(
        "--screenshot", metavar="PNG", help="save a screenshot once the final reconstruction is shown"
    )
    parser.add_argument("--exit", action="store_true", help="quit after --screenshot (headless checks)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the reconstruction")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument(
        "--timings", action="store_true",
        help="print when each stage reached the screen (to compare with `main.py reconstruct`)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(max(1, args.threads))
    # core.engine loads torch/torchvision/triton on the main thread before any GL context
    # exists (triton's LLVM loaded later beside Mesa's llvmpipe crashes the process);
    # app.main_window imports cv2 through app.media, which repairs Qt's plugin path.
    from PySide6.QtWidgets import QApplication

    import core.engine  # noqa: F401
    from app.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("im2hands")
    app.setApplicationName("Im2Hands Studio")
    headless = bool(args.screenshot and args.exit)
    window = MainWindow(weights=args.weights, device=args.device, interactive=not headless)
    try:
        return _run_window(app, window, args)
    finally:
        window.shutdown()  # also when a failure escapes: a running QThread would abort Python


def _run_window(app, window, args: argparse.Namespace) -> int:
    overrides = {}
    if args.resolution:
        overrides["resolution"] = args.resolution
    if args.preview_resolution is not None:
        overrides["preview_resolution"] = args.preview_resolution
    if args.resolve_contact:
        overrides["resolve_contact"] = True
    if overrides:
        window.settings_panel.set_settings({**window.settings_panel.settings(), **overrides})
    window.show()
    clock = _StageClock(window) if args.timings else None
    if args.open:
        window.open_path(args.open)
    if args.keypoints:
        window.load_keypoints(args.keypoints)
    elif args.detect and args.open:
        window.detect_current_frame()  # off the GUI thread; --screenshot waits for it
    if clock is not None:
        clock.started()
    exit_code = {"value": 0}

    if args.screenshot:

        def shoot(ok: bool) -> None:
            if not ok:
                print(f"error: no final reconstruction within {args.timeout:.0f} s", file=sys.stderr)
                exit_code["value"] = 1
            if clock is not None:
                print(clock.report(), flush=True)
            if not window.save_screenshot(args.screenshot):
                exit_code["value"] = 1
            for entry in window.error_panel.entries():
                print(f"error: {entry.title}: {entry.message}", file=sys.stderr)
                exit_code["value"] = 1
            if args.exit:
                window.shutdown()
                app.exit(exit_code["value"])

        window.when_idle(shoot, args.timeout)
    rc = app.exec()
    return exit_code["value"] or rc


class _StageClock:
    """When the engine became ready and each stage reached the screen, in seconds of wall time
    from the keypoints' load (the request waits for the engine when it loads later)."""

    def __init__(self, window):
        import time

        self._now = time.perf_counter
        self._window = window
        self._t0 = self._now()
        self._engine_s: float | None = None
        self.shown: list[tuple[str, float, float, dict]] = []  # stage, on screen, worker, timings
        window.worker.engineReady.connect(lambda _info: setattr(self, "_engine_s", self._now()))
        window.controller.stageShown.connect(self._on_stage)

    def started(self) -> None:
        self._t0 = self._now()

    def _on_stage(self, result) -> None:
        rec = result.reconstruction
        self.shown.append((rec.stage, self._now(), result.elapsed_s, dict(rec.timings_s)))

    def report(self) -> str:
        start = max(self._t0, self._engine_s or self._t0)
        parts = [f"{stage} on screen {at - start:.2f} s (worker {worker:.2f} s)"
                 for stage, at, worker, _ in self.shown]  # fmt: skip
        engine = "" if self._engine_s is None else f"; engine ready {self._engine_s - self._t0:+.2f} s"
        final = next((t for stage, _a, _w, t in reversed(self.shown) if stage == "final"), {})
        stages = ", ".join(f"{k} {v:.2f}" for k, v in final.items())
        shown = "; ".join(parts) or "no stage shown"
        return f"app timings: {shown}{engine}; final's engine timings (s): {stages}"
