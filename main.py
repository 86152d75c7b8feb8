"""Im2Hands Studio command line: ``python main.py <command> ...``.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args)``;
this file only dispatches, so no command holds logic another would need.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core.openmp import limit_openmp_spinning

limit_openmp_spinning()  # before any command imports torch (see core/openmp.py)

COMMANDS = {
    "gui": ("app.cli", "open the desktop application"),
    "reconstruct": ("core.cli.reconstruct", "image + keypoints -> two hand meshes"),
    "detect": ("core.cli.detect", "detect 3D hand keypoints in an image or video"),
    "bench": ("core.cli.bench", "benchmark the reconstruction engine"),
    "synth": ("core.cli.synth", "generate / preview synthetic two-hand data"),
    "train": ("core.cli.train", "train K, I or R"),
    "evaluate": ("core.cli.evaluate", "evaluate K, I, R on a dataset"),
    "sprint": ("core.cli.sprint", "a timed training sprint of the shipped recipes (for a GPU machine)"),
    "export": ("app.export_cli", "export annotations: our JSON, COCO keypoints, InterHand2.6M"),
}


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes are one ``error:`` line too (exit 2), like every other failure."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = _OneLineParser(prog="main.py", description="Im2Hands Studio")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    """Run one command. Any failure becomes one line ``error: ...`` on stderr and exit code 2
    (internal errors too); ``--debug`` (anywhere on the line) shows the traceback as well."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser, modules = build_parser()
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    from core.errors import describe_error

    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place where every failure becomes a clear line
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
