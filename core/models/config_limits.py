"""Bounds on a stored network config, checked before anything is allocated: a damaged or
foreign weights header (a 1 KB header can ask for a 1.4 TB network) fails with our error
instead of exhausting memory."""

from __future__ import annotations

import torch

from core.errors import TrainConfigError

MAX_CONFIG_NUMBER = 100_000  # no width, depth or count of our networks comes near this
MAX_PARAMETERS = 500_000_000  # 2 GB of float32; our largest network (R) has 33 M


def check_config_numbers(config, network: str, where: str = "config") -> None:
    """Every number in a stored config is finite and at most :data:`MAX_CONFIG_NUMBER` in
    size, checked before anything is built."""
    if isinstance(config, dict):
        for key, value in config.items():
            check_config_numbers(value, network, f"{where}.{key}")
    elif isinstance(config, list):
        if len(config) > MAX_CONFIG_NUMBER:
            raise TrainConfigError(
                f"{network} {where}: a list of {len(config)} entries is not a config value"
            )
        for i, value in enumerate(config):
            check_config_numbers(value, network, f"{where}[{i}]")
    elif isinstance(config, (int, float)) and not isinstance(config, bool):
        if not abs(config) <= MAX_CONFIG_NUMBER:  # NaN fails too
            raise TrainConfigError(
                f"{network} {where} = {config!r} is out of range (|value| <= {MAX_CONFIG_NUMBER}); "
                "the weights header is damaged or not ours"
            )


def check_network_size(ctor, cfg, network: str) -> None:
    """Build the network on the meta device (no memory) and refuse more than
    :data:`MAX_PARAMETERS` parameters, or a config the network cannot be built from."""
    try:
        with torch.device("meta"):
            net = ctor(cfg)
    except (TypeError, ValueError, RuntimeError, AttributeError, KeyError, IndexError, AssertionError) as exc:
        raise TrainConfigError(f"cannot build network {network} from its stored config: {exc}") from None
    except NotImplementedError:  # an operation without a meta kernel: the number check stands
        return
    count = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    if count > MAX_PARAMETERS:
        raise TrainConfigError(
            f"the stored {network} config asks for {count / 1e6:.0f} M parameters "
            f"(limit {MAX_PARAMETERS / 1e6:.0f} M); the weights header is damaged or not ours"
        )


