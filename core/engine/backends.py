"""The networks behind the engine, behind one small interface.

* :class:`Im2HandsBackend` -- networks I and R (and optionally K) of Im2Hands;
* :class:`HaloOnlyBackend` -- the keypoints-only HALO base model (no image, no R).

A backend evaluates occupancies of box points for one hand; everything about grids,
meshes and caching lives in :mod:`core.engine.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import checkpoints
from core.engine.hands import HandFrame
from core.errors import CheckpointError
from core.geometry.kpts_frame import keypoints_to_kpts_ref_input, kpts_ref_output_to_keypoints
from core.models.halo_base import HaloBaseNet, load_torch_checkpoint
from core.models.image_encoder import normalize_image
from core.models.init_occ import InitOccNet
from core.models.kpts_ref import KeypointRefiner
from core.models.ref_occ import AnchorContext, RefOccNet
from core.models.registry import NETWORKS, build_network, load_network
from core.types import TwoHandKeypoints

SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "resources" / "weights"
# Our queries come in MISE batches: a fixed depth reference (the wrist) keeps I's output
# independent of how points are batched (the reference's quirk Q2 is not).
I_DEPTH_REFERENCE = "wrist"
# Queries per decoder call in R: small chunks keep its (chunk, 10, 200) attention tensors
# in cache, which is several times faster on CPU than large ones.
REF_DECODER_CHUNK_CPU = 512
REF_DECODER_CHUNK_CUDA = 65536


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from core.engine.settings import SettingsError

        raise SettingsError("device 'cuda' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")
    return torch.device(device)


def autocast(device: torch.device, enabled: bool):
    """bfloat16 on CPU / float16 on CUDA for the point networks when ``enabled``."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


@dataclass
class ImageFeatures:
    """What one image crop yields, reused across calls while only keypoints change."""

    image: torch.Tensor  # (1, 3, 256, 256) normalised crop
    cam_K: torch.Tensor  # (1, 3, 3) crop intrinsics
    ref: object | None = None  # RefOccImageFeatures
    init: object | None = None  # InitOccImageFeatures (I alone)
    kpts: torch.Tensor | None = None  # K's image features


class HaloOnlyBackend:
    """HALO base model: occupancy from keypoints alone (HALO-repo matrices)."""

    mode = "halo_only"
    needs_image = False
    has_refinement = False
    has_keypoint_refiner = False

    def __init__(self, net: HaloBaseNet, device: torch.device):
        self.device = device
        self.net = net.to(device).eval()

    def image_features(self, crop_u8: np.ndarray, cam_K_crop: np.ndarray) -> ImageFeatures:
        raise NotImplementedError("the HALO-only mode uses no image")

    def init_occupancy(
        self, features, hand: HandFrame, points_box: np.ndarray, half: bool, exact: bool = False
    ) -> np.ndarray:
        """HALO's occupancy at box points. The decoder runs in its folded order (~1.7x faster;
        occupancies within ~1e-5 of the exact order) unless ``exact``: the HALO repo's own
        float32 order, as the reference path uses."""
        cached = getattr(hand, "_halo_base_inputs", None)
        if cached is None:
            cached = hand._halo_base_inputs = hand.halo_base_inputs(self.device)
        mats, lengths = cached
        p = torch.as_tensor(points_box, dtype=torch.float32, device=self.device)[None]
        with autocast(self.device, half):
            return self.net(p, mats, lengths, fold=None if exact else True)[0].float().cpu().numpy()


class Im2HandsBackend:
    """Networks I + R (``ref`` given) or I alone (``init`` given), optionally K."""

    mode = "im2hands"
    needs_image = True

    def __init__(
        self,
        device: torch.device,
        ref: RefOccNet | None = None,
        init: InitOccNet | None = None,
        kpts: KeypointRefiner | None = None,
    ):
        if ref is None and init is None:
            raise ValueError("Im2HandsBackend needs network R or network I")
        self.device = device
        self.ref = None if ref is None else ref.to(device).eval()
        self.init = (self.ref.init_occ if self.ref is not None else init.to(device)).eval()
        self.kpts = None if kpts is None else kpts.to(device).eval()
        if self.ref is not None:
            self.ref.trans_dec.query_chunk = (
                REF_DECODER_CHUNK_CUDA if device.type == "cuda" else REF_DECODER_CHUNK_CPU
            )

    @property
    def has_refinement(self) -> bool:
        return self.ref is not None

    @property
    def has_keypoint_refiner(self) -> bool:
        return self.kpts is not None

    def ref_init_affine(self) -> tuple[float, float] | None:
        """(a, b) when R's logit is ``a * o_I + b`` of I's occupancy (an R still at its
        identity start: :meth:`RefOccNet.init_occupancy_affine`), else None. Read per job:
        a network being trained may leave that form between calls."""
        return None if self.ref is None else self.ref.init_occupancy_affine()

    # -- per image ---------------------------------------------------------------------------
    def image_features(self, crop_u8: np.ndarray, cam_K_crop: np.ndarray, with_kpts: bool) -> ImageFeatures:
        img = normalize_image(torch.as_tensor(np.ascontiguousarray(crop_u8))[None].to(self.device))
        cam_K = torch.as_tensor(cam_K_crop, dtype=torch.float32, device=self.device)[None]
        feats = ImageFeatures(image=img, cam_K=cam_K)
        if self.ref is not None:
            feats.ref = self.ref.encode_image(img, cam_K=cam_K)
            feats.init = feats.ref.init_occ
        else:
            feats.init = self.init.encode_image(img, cam_K=cam_K)
        if with_kpts and self.kpts is not None:
            feats.kpts = self.kpts.image_features(img)
        return feats

    def refine_keypoints(self, features: ImageFeatures, keypoints: TwoHandKeypoints) -> TwoHandKeypoints:
        """Network K (needs both hands; otherwise the keypoints come back unchanged)."""
        if self.kpts is None or keypoints.left is None or keypoints.right is None:
            return keypoints.copy()
        if features.kpts is None:
            features.kpts = self.kpts.image_features(features.image)
        k_in = keypoints_to_kpts_ref_input(keypoints.left, keypoints.right)
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)
        out = self.kpts(features.image, as_t(k_in.left_mm), as_t(k_in.right_mm), img_feat=features.kpts)
        to_np = lambda t: t.detach().float().cpu().numpy().astype(np.float64)
        return TwoHandKeypoints(
            left=kpts_ref_output_to_keypoints(to_np(out.left_mm), k_in.origin_cam_m)[0],
            right=kpts_ref_output_to_keypoints(to_np(out.right_mm), k_in.origin_cam_m)[0],
        )

    # -- per point ---------------------------------------------------------------------------
    def init_occupancy(
        self, features: ImageFeatures, hand: HandFrame, points_box: np.ndarray, half: bool
    ) -> np.ndarray:
        inputs = _cached_inputs(hand, self.device)
        p = torch.as_tensor(points_box, dtype=torch.float32, device=self.device)[None]
        with autocast(self.device, half):
            occ = self.init.query(
                features.init, hand.side, inputs, p, chunk_size=None, depth_reference=I_DEPTH_REFERENCE
            )
        return occ[0].float().cpu().numpy()

    def encode_anchors(
        self,
        features: ImageFeatures,
        hands: dict[str, HandFrame],
        anchors_cam_m: dict[str, np.ndarray],
        reuse: dict[str, AnchorContext] | None = None,
    ) -> AnchorContext:
        """Both hands' anchors (camera metres) -> R's anchor context (computed once per call);
        ``reuse``: see :meth:`RefOccNet.encode_anchors`."""
        anchors_mm = {
            s: torch.as_tensor(
                (anchors_cam_m[s] - hands[s].wrist_cam_m) * 1000.0, dtype=torch.float32, device=self.device
            )[None]
            for s in hands
        }
        inputs = {s: _cached_inputs(hands[s], self.device) for s in hands}
        return self.ref.encode_anchors(features.ref, anchors_mm, inputs, features.cam_K, reuse=reuse)

    def ref_occupancy(
        self,
        features: ImageFeatures,
        context: AnchorContext,
        hand: HandFrame,
        points_box: np.ndarray,
        init_occ: np.ndarray,
        half: bool,
    ) -> np.ndarray:
        inputs = _cached_inputs(hand, self.device)
        p = torch.as_tensor(points_box, dtype=torch.float32, device=self.device)[None]
        init = torch.as_tensor(init_occ, dtype=torch.float32, device=self.device)[None]
        with autocast(self.device, half):
            occ = self.ref.query(features.ref, context, hand.side, inputs, p, init_occ=init)
        return occ[0].float().cpu().numpy()


def _cached_inputs(hand: HandFrame, device: torch.device):
    cached = getattr(hand, "_net_inputs", None)
    if cached is None or cached[0] != device:
        cached = (device, hand.network_inputs(device))
        hand._net_inputs = cached
    return cached[1]


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def _first_reconstructing_file(folder: Path) -> Path | None:
    """R (with I inside) before I alone: the most complete network a weights folder holds."""
    for name in ("ref_occ", "init_occ"):
        path = folder / NETWORKS[name].file_name
        if path.is_file():
            return path
    return None


def _backend_for(network: str, net, device: torch.device):
    if network == "halo_base":
        return HaloOnlyBackend(net, device)
    return Im2HandsBackend(device, **{"ref" if network == "ref_occ" else "init": net})


def load_backend(weights: str | Path | None, device: torch.device):
    """A backend for ``weights``:

    * ``None``: the shipped weights in ``resources/weights`` (``ref_occ.safetensors`` with
      I inside, or ``init_occ.safetensors``; ``kpts_ref.safetensors`` when present);
    * a folder with those files;
    * one file: our ``.safetensors`` or an official ``.pt`` of R (I + R), I (I only) or the
      HALO base model (HALO-only mode)."""
    if weights is None:
        path = _first_reconstructing_file(SHIPPED_WEIGHTS_DIR)
        if path is None:
            raise CheckpointError(
                f"no shipped weights in {SHIPPED_WEIGHTS_DIR}; pass weights= an Im2Hands checkpoint or, for "
                "the HALO-only mode, the official HALO checkpoint (halo_base_yt3d_model_best.pt)"
            )
        return load_backend(path.parent, device)
    path = Path(weights)
    if path.is_dir():
        main = _first_reconstructing_file(path)
        if main is None:
            raise CheckpointError(f"{path} holds neither ref_occ.safetensors nor init_occ.safetensors")
        backend = load_backend(main, device)
        kpts_path = path / NETWORKS["kpts_ref"].file_name
        if kpts_path.is_file() and isinstance(backend, Im2HandsBackend):
            backend.kpts = load_network(kpts_path, device)
        return backend
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    ours = path.suffix == checkpoints.OUR_SUFFIX
    if ours:
        network = checkpoints.read_checkpoint_info(path).network
    else:
        network = checkpoints.detect_official_kind(path, load_torch_checkpoint(path))
    if network not in NETWORKS or not NETWORKS[network].reconstructs:
        raise CheckpointError(f"{path.name} holds network {network!r}, which cannot reconstruct meshes")
    if ours:  # our files carry their network config (backbone, widths), so build from it
        net = load_network(path, device)
    else:
        net = build_network(network, None)
        checkpoints.load_weights(net, path, network)
    return _backend_for(network, net, device)
