"""Devices for the command lines (``--device``) and the benchmarks' printouts: the instructor's
side of the kit. Students get ``resolve_device`` with ``training.py``; not this module."""
from __future__ import annotations

import argparse

import torch

from .training import bf16_native, cpu_has, resolve_device


def device_argument(text: str) -> str:
    """An argparse ``type`` for ``--device``: ``text`` if this machine has that device."""
    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX matrix tiles (recent Intel Xeons). On 2 cores of one the CPU recipe
    of CIFAR-10 trained in 0.72 times the time it took on 2 AMD EPYC cores with AVX512-BF16 alone
    (median of 10 seeds; reference/results/cifar10-cpu_search.md)."""
    return cpu_has("_is_amx_tile_supported")


def describe_device(device: str | torch.device | None = None) -> str:
    """A human-readable name for the device, e.g. "cuda (NVIDIA H100 80GB HBM3)" or
    "cpu (AMD EPYC, 2 threads, bf16)" (bf16: training autocasts to it there; "bf16 AMX": the CPU
    has AMX matrix tiles too, so its timings do not compare with those of AVX512-BF16 alone)."""
    device = resolve_device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    bf16 = (", bf16 AMX" if cpu_has_amx() else ", bf16") if bf16_native(device) else ""
    return f"cpu ({model or 'unknown model'}, {torch.get_num_threads()} threads{bf16})"
