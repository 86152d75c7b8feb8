"""The image ablation of ``evaluate --shuffle-images``: each test sample is paired with the
image of another test sample, so a network's figures on mismatched images show how much it
reads the image. Keypoints, camera and ground truth stay the sample's own; only the pixels are
swapped (the engine then crops and encodes the foreign image, and its feature cache, keyed by
the image's digest, follows the swap).

The pairing is a fixed derangement: sample ``i`` gets the image of sample ``(i + 1) mod n``.
It never maps a sample to itself (for ``n >= 2``) and streams with one sample of look-ahead."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

import numpy as np

from core.errors import InputError

NOTHING_TO_SHUFFLE = (
    "--shuffle-images needs at least 2 test samples (with 1 there is no other image to "
    "shuffle with); use count=2 or more"
)


class HasImage(Protocol):
    image: np.ndarray


S = TypeVar("S", bound=HasImage)


def image_partner(index: int, count: int) -> int:
    """The index of the sample whose image sample ``index`` gets (of ``count`` samples)."""
    if count < 2:
        raise InputError(NOTHING_TO_SHUFFLE)
    if not 0 <= index < count:
        raise IndexError(f"sample index {index} outside 0..{count - 1}")
    return (index + 1) % count


def derangement(count: int) -> list[int]:
    """``partner[i]`` for every sample: a permutation without fixed points."""
    return [image_partner(i, count) for i in range(count)]


def with_partner_images(samples: Iterable[S]) -> Iterator[tuple[S, np.ndarray]]:
    """``(sample i, image of sample partner(i))`` in the samples' order, streamed: sample ``i``
    is yielded once sample ``i + 1`` has been drawn; the last gets the first one's image.
    Raises :class:`InputError` when the stream holds fewer than 2 samples."""
    iterator = iter(samples)
    first = next(iterator, None)
    if first is None:
        raise InputError(NOTHING_TO_SHUFFLE)
    previous = first
    count = 1
    for sample in iterator:
        count += 1
        yield previous, sample.image
        previous = sample
    if count < 2:
        raise InputError(NOTHING_TO_SHUFFLE)
    yield previous, first.image
