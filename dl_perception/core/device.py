"""Compute device selection shared by nodes, training and the benchmark."""
from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
# the reduced precision each device computes fast: bf16 on a CPU (AVX-512 BF16 / AMX), fp16 on CUDA
REDUCED_PRECISION = {"cpu": torch.bfloat16, "cuda": torch.float16}


def select_device(requested: str) -> torch.device:
    """'auto' takes the GPU when there is one; asking for 'cuda' without one is an error, not a
    silent fall-back, so a deployment never runs on the CPU unnoticed."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{requested}' requested but no CUDA GPU is available")
        device = torch.device(requested)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device '{requested}' requested but only "
                             f"{torch.cuda.device_count()} GPU(s) exist")
        return device
    raise ValueError(f"device must be one of auto, cpu, cuda or cuda:N, got '{requested}'")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
