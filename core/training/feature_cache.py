"""Cached image features for training networks K and I (optional; a CPU shortcut).

A frozen image encoder's output is a constant of each sample's crop and can be computed
once, stored as float16 in a memory-mapped ``.npy`` and read back instead of running the
encoder (about 70 % of a K step on a CPU). Two contents:

* ``image_features``: ``KeypointRefiner.image_features(crop)``, i.e. after K's 1x1 projection
  ``img_proj_layer`` (64 x 64 x 64 values, 512 KiB per sample). Only valid while that
  projection is frozen too.
* ``encoder_maps``: ``net.encoder_maps(crop)``, the input of the net's 1x1 layer after the
  encoder (K: ``img_proj_layer``, 320 x 64 x 64 values for ResNet-18, 2.6 MB per sample; I:
  ``image_final_layer``); the recipe applies that layer with gradients, so it trains as
  without a cache.

K's cached crop is the one around the sample's **stored** noisy keypoints (draw 0, as the
engine crops around the keypoints it is given); I's is the ground-truth crop. With
``renoise`` K's items carry fresh noisy keypoints while the crop stays the stored one: the
crop frames both hands with a margin, and fresh noise moves its box by a few pixels; K never
projects its keypoints into the crop.

A cache is tied to the weights that made it: its metadata holds its content, a fingerprint of
the tensors that content depends on and the number of samples, and a mismatch is an error,
never a silent reuse.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.models.image_encoder import normalize_image
from core.training.cache_files import read_meta, state_fingerprint, write_meta
from core.training.datasets import DatasetError, _Addressed

FEATURES_FILE = "kpts_features.f16.npy"
META_FILE = "kpts_features.json"
CACHED_KEY = "image_features"  # item key of a cached projected (C, H, W) float16 map
MAPS_KEY = "encoder_maps"  # item key of a cached pre-projection (C, H, W) float16 map
# content (= item key) -> the state-dict prefixes of the tensors the cached map depends on
CONTENT_PREFIXES = {
    CACHED_KEY: ("image_encoder.", "img_proj_layer."),
    MAPS_KEY: ("image_encoder.",),
}


def _check_content(content: str) -> None:
    if content not in CONTENT_PREFIXES:
        raise DatasetError(
            f"feature cache content must be one of {sorted(CONTENT_PREFIXES)}, got {content!r}"
        )


def feature_fingerprint(net: nn.Module, content: str = CACHED_KEY) -> str:
    """SHA-1 of every tensor (weights and BatchNorm statistics) that the cached map depends on."""
    _check_content(content)
    return state_fingerprint(net, lambda name: name.startswith(CONTENT_PREFIXES[content]))


def _read_meta(folder: Path) -> dict | None:
    meta = read_meta(folder / META_FILE)
    if meta is not None:
        meta.setdefault("content", CACHED_KEY)  # caches written before there was a choice
    return meta


@torch.no_grad()
def build_feature_cache(
    net: nn.Module,
    dataset: torch.utils.data.Dataset,
    folder: str | Path,
    *,
    content: str = CACHED_KEY,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``net.image_features`` (``content="image_features"``) or ``net.encoder_maps``
    (``content="encoder_maps"``) of every item's ``image`` (draw 0) into ``folder``.
    The metadata file is written last: a cache without it is incomplete and gets rebuilt."""
    _check_content(content)
    compute = net.image_features if content == CACHED_KEY else net.encoder_maps
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)
    encoder_was_training = net.image_encoder.training
    net.image_encoder.eval()  # as in the recipe: BatchNorm on running statistics
    n = len(dataset)
    maps = None
    try:
        for start in range(0, n, batch_size):
            items = [dataset[(i, 0)] for i in range(start, min(n, start + batch_size))]
            img = normalize_image(torch.stack([it["image"] for it in items]).to(device))
            feat = compute(img).to("cpu", torch.float16).numpy()
            if maps is None:
                maps = np.lib.format.open_memmap(
                    folder / FEATURES_FILE, mode="w+", dtype=np.float16, shape=(n, *feat.shape[1:])
                )
            maps[start : start + len(items)] = feat
            if progress is not None:
                progress(start + len(items), n)
        maps.flush()
    finally:
        net.image_encoder.train(encoder_was_training)
    meta = {"count": n, "shape": list(maps.shape), "content": content,
            "fingerprint": feature_fingerprint(net, content)}  # fmt: skip
    write_meta(folder / META_FILE, meta)
    return folder


def cache_matches(folder: str | Path, net: nn.Module, count: int, content: str = CACHED_KEY) -> bool:
    meta = _read_meta(Path(folder))
    return (
        bool(meta)
        and meta["content"] == content
        and meta["count"] == count
        and meta["fingerprint"] == feature_fingerprint(net, content)
    )


class FeatureCache:
    """Read-only view of a cache folder; ``cache[i]`` is sample ``i``'s (C, H, W) float16 map
    of kind ``cache.content`` (``image_features`` or ``encoder_maps``)."""

    def __init__(
        self,
        folder: str | Path,
        net: nn.Module | None = None,
        count: int | None = None,
        content: str | None = None,
    ):
        self.folder = Path(folder)
        meta = _read_meta(self.folder)
        if meta is None or not (self.folder / FEATURES_FILE).is_file():
            raise DatasetError(f"no complete feature cache in {self.folder}")
        if content is not None and meta["content"] != content:
            raise DatasetError(f"the feature cache in {self.folder} holds {meta['content']}, not {content}")
        self.content = meta["content"]
        if count is not None and meta["count"] != count:
            raise DatasetError(
                f"the feature cache in {self.folder} holds {meta['count']} samples, the dataset {count}"
            )
        if net is not None and meta["fingerprint"] != feature_fingerprint(net, self.content):
            raise DatasetError(
                f"the feature cache in {self.folder} was made with other encoder weights; "
                "delete it to rebuild"
            )
        self.maps = np.load(self.folder / FEATURES_FILE, mmap_mode="r", allow_pickle=False)

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.maps[index]))


class CachedFeatureDataset(_Addressed):
    """``base``'s items (index, draw) with the cached map of their sample under the cache's
    content key (``image_features`` or ``encoder_maps``) instead of an ``image``."""

    def __init__(self, base: _Addressed, cache: FeatureCache):
        if len(base) != len(cache):
            raise DatasetError(f"the feature cache holds {len(cache)} samples, the dataset {len(base)}")
        self.base, self.cache, self.spec = base, cache, base.spec

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, draw = self._split(key)
        item = self.base[(index, draw)]
        item.pop("image", None)
        item[self.cache.content] = self.cache[index]
        return item
