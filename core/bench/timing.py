"""Timing helpers of the bench: synchronised wall-clock timing, peak memory and a
calibration workload that tells how loaded the machine was."""

from __future__ import annotations

import resource
import time

import torch


def peak_memory_mb(device: torch.device) -> dict:
    out = {"process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.type == "cuda":
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


RESNET50_UNLOADED_S = 0.077  # environment.md: 73-81 ms for 1x3x256x256 on this machine kind, idle


def machine_calibration(device: torch.device, repeats: int = 3) -> dict:
    """Time a fixed workload (a ResNet-50 forward at 256 px) now. On the shared development
    machine other jobs can slow everything many times over; ``load_factor`` (measured /
    idle time of that workload, CPU only) lets a reader scale the timings of this report."""
    import torchvision

    net = torchvision.models.resnet50().eval().to(device)
    x = torch.randn(1, 3, 256, 256, device=device)
    times = []
    with torch.inference_mode():
        net(x)
        for _ in range(repeats):
            _, dt = timed(lambda: net(x), device)
            times.append(dt)
    best = min(times)
    out = {"resnet50_forward_s": best}
    if device.type == "cpu":
        out["resnet50_idle_reference_s"] = RESNET50_UNLOADED_S
        out["load_factor"] = best / RESNET50_UNLOADED_S
    return out
