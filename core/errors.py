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


class TrainConfigError(InputError):
    """A training configuration that cannot be used (unknown key, option of another network ...)."""
