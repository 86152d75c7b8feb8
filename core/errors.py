"""User-facing error types. Every bad-input path raises one of these with a message
a user understands (what was wrong, and what to do)."""


class InputError(ValueError):
    """Base class for invalid user input (images, keypoints, files, checkpoints)."""


class KeypointError(InputError):
    """Keypoints that cannot be reconstructed: NaN/inf, collapsed or missing hands."""


class ImageError(InputError):
    """An image that cannot be read or has the wrong size / channel count."""


class KeypointFileError(InputError):
    """A keypoint file that does not parse or has the wrong layout."""


class CheckpointError(InputError):
    """A checkpoint that does not match the network: missing, unexpected or mis-shaped keys."""


class LimitError(InputError):
    """An input within the format but beyond what this program handles (size, memory)."""


def describe_error(exc: BaseException, debug_hint: bool = True) -> str:
    """One line for the user: our own errors as they are; file-system errors with the path;
    anything else named as an internal error with a pointer to ``--debug``."""
    if isinstance(exc, InputError):
        return " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "out of memory; try a lower --resolution"
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot access{where}: {exc.strerror or exc}"
    text = " ".join(str(exc).split())[:300]
    hint = "; run with --debug for the traceback" if debug_hint else ""
    return f"internal error ({type(exc).__name__}: {text}){hint}"


class TrainConfigError(InputError):
    """A training configuration that cannot be used (unknown key, option of another network ...)."""
