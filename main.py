"""Im2Hands Studio command line: ``python main.py <command> ...``.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args)``;
this file only dispatches, so no command holds logic another would need.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "gui": ("app.cli", "open the desktop application"),
    "reconstruct": ("core.cli.reconstruct", "image + keypoints -> two hand meshes"),
    "detect": ("core.cli.detect", "detect 3D hand keypoints in an image or video"),
    "bench": ("core.cli.bench", "benchmark the reconstruction engine"),
    "synth": ("core.cli.synth", "generate / preview synthetic two-hand data"),
    "train": ("core.cli.train", "train K, I or R"),
    "evaluate": ("core.cli.evaluate", "evaluate K, I, R on a dataset"),
    "export": ("app.export_cli", "export annotations: our JSON, COCO keypoints, InterHand2.6M"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="main.py", description="Im2Hands Studio")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # command not built yet
            raise
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    from core.errors import InputError

    try:
        return int(modules[args.command].run(args) or 0)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
