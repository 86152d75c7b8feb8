"""Output sets: several files that belong together, replaced as a unit.

Two ways, one per kind of target:

* :class:`OutputFolder` -- a folder that is wholly ours (``reconstruct --out DIR``): the new
  set is written into a hidden sibling folder, a ``manifest.json`` listing it is written
  last, then the two folders are exchanged atomically (``renameat2(RENAME_EXCHANGE)`` on
  Linux; elsewhere two renames). A kill at any moment leaves the complete old folder or
  the complete new one, and files of an earlier run that this run does not produce are
  gone with the old folder. A non-empty folder without our manifest is refused.
* :class:`OutputFiles` -- files named ``<stem>_<part>`` beside other people's files (the
  app's exports): every file is staged first, then renamed into place, then
  ``<stem>.manifest.json`` is written last; parts the previous manifest listed and this
  run does not produce are removed.

:func:`check_output_file` validates a single output path before any work starts."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from core.errors import InputError
from core.io.atomic import (
    _fsync_dir,
    _fsync_path,
    atomic_path,
    pid_alive,
    remove_stale_temporaries,
    write_text_atomic,
)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "im2hands-studio/output-set"
_SIDE_FOLDER = re.compile(r"^\.(?P<name>.+)\.(?:staging|old)-(?P<pid>\d+)$")

Writer = Callable[[Path], object]


class OutputPathError(InputError):
    """An output path that cannot be used (a file where a folder belongs, not writable, ...)."""


def _writable_dir(folder: Path, what: str) -> None:
    """The nearest existing ancestor of ``folder`` must be a writable folder."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"{what}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what}: folder {probe} is not writable")


def check_output_file(path: str | Path, suffixes: tuple[str, ...], what: str) -> Path:
    """Validate ``path`` as a new or replaceable file with one of ``suffixes``."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise OutputPathError(f"{what} {path}: the file must end in one of {', '.join(suffixes)}")
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path} exists and is not writable")
    _writable_dir(path.parent, what)
    return path


def read_manifest(path: Path) -> dict | None:
    """Our manifest at ``path``, or None when there is none or it is not ours."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        return None
    files = doc.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return doc


def _manifest(files: list[str], extra: dict | None) -> str:
    return json.dumps({"format": MANIFEST_FORMAT, "files": sorted(files), **(extra or {})}, indent=1)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False when not supported here."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: file system or kernel lacks it
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def _remove_stale_side_folders(target: Path) -> None:
    """Staging / old folders of killed runs beside ``target`` (their pid no longer runs)."""
    if not target.exists():  # killed between the two renames of the fallback: roll back
        olds = sorted(target.parent.glob(f".{target.name}.old-*"))
        if olds:
            with contextlib.suppress(OSError):
                os.rename(olds[-1], target)
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            match = _SIDE_FOLDER.match(entry.name)
            if match and match["name"] == target.name and not pid_alive(int(match["pid"])):
                shutil.rmtree(entry, ignore_errors=True)


class OutputFolder:
    """A folder written as a unit (see the module docstring). Use::

    out = OutputFolder(path)       # validates the path: raises OutputPathError
    out.add("left.ply", writer)    # writer(path) writes the file
    out.commit()                   # runs the writers, then swaps the folders"""

    def __init__(self, folder: str | Path, what: str = "output folder"):
        self.folder = Path(folder)
        self.what = what
        self._writers: dict[str, Writer] = {}
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputPathError(f"{what} {self.folder} is a file; give a folder")
        _writable_dir(self.folder.parent, what)
        if self.folder.is_dir():
            if not os.access(self.folder, os.W_OK | os.X_OK):
                raise OutputPathError(f"{what} {self.folder} is not writable")
            entries = list(self.folder.iterdir())
            if entries and read_manifest(self.folder / MANIFEST_NAME) is None:
                raise OutputPathError(
                    f"{what} {self.folder} holds files that an earlier run of this program did not "
                    f"write (no {MANIFEST_NAME}); choose a new or empty folder"
                )

    def add(self, name: str, writer: Writer) -> None:
        if name in self._writers or name == MANIFEST_NAME or Path(name).name != name:
            raise ValueError(f"bad or repeated output file name {name!r}")
        self._writers[name] = writer

    def commit(self, extra: dict | None = None) -> list[Path]:
        """Write every file, then the manifest, then swap. Returns the final paths."""
        parent = self.folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_side_folders(self.folder)
        staging = parent / f".{self.folder.name}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            for name, writer in self._writers.items():
                with atomic_path(staging / name) as tmp:
                    writer(tmp)
            write_text_atomic(staging / MANIFEST_NAME, _manifest(list(self._writers), extra))
            self._swap_in(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return [self.folder / name for name in self._writers]

    def _swap_in(self, staging: Path) -> None:
        if not self.folder.exists():
            os.rename(staging, self.folder)
        elif not _exchange(staging, self.folder):
            old = self.folder.parent / f".{self.folder.name}.old-{os.getpid()}"
            os.rename(self.folder, old)
            os.rename(staging, self.folder)
            os.rename(old, staging)  # removed by the caller's cleanup
        _fsync_dir(self.folder.parent)


class OutputFiles:
    """Files ``<stem>_<part>`` beside foreign files, replaced together (module docstring)."""

    def __init__(self, folder: str | Path, stem: str, what: str = "export"):
        self.folder = Path(folder)
        self.stem = stem
        self.what = what
        self._writers: dict[str, Writer] = {}
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputPathError(f"{what}: {self.folder} is a file, not a folder")
        _writable_dir(self.folder, what)

    @property
    def manifest_path(self) -> Path:
        return self.folder / f"{self.stem}.manifest.json"

    def add(self, name: str, writer: Writer) -> None:
        if Path(name).name != name or name in self._writers:
            raise ValueError(f"bad or repeated output file name {name!r}")
        target = self.folder / name
        if target.is_dir():
            raise OutputPathError(f"{self.what}: {target} is a folder")
        self._writers[name] = writer

    def commit(self) -> list[Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)
        previous = read_manifest(self.manifest_path)
        staged: dict[str, Path] = {}
        try:
            for name, writer in self._writers.items():  # everything staged before any rename
                tmp = self.folder / f".{name}.{os.getpid()}.staged.tmp"
                staged[name] = tmp
                writer(tmp)
                _fsync_path(tmp)
            for name, tmp in staged.items():
                os.replace(tmp, self.folder / name)
            _fsync_dir(self.folder)
        finally:
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
        write_text_atomic(self.manifest_path, _manifest(list(self._writers), None))
        for name in (previous or {}).get("files", []):
            if name not in self._writers and Path(name).name == name and name.startswith(self.stem):
                (self.folder / name).unlink(missing_ok=True)
        return [self.folder / name for name in self._writers]
