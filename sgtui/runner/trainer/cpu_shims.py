"""The three shims that let megatron-core's GPTModel train on CPU with gloo (FACTS.md, "megatron-core").

Used only when the trainer runs on CPU (tests and the CPU training mode); on
a GPU nothing here is applied. Each one replaces a CUDA assumption megatron-core
makes in code paths that are otherwise device-agnostic:

1. `torch.cuda.current_device()` is called to place freshly created tensors
   (parameters, rotary frequencies, attention masks, RNG seeds). Without a
   GPU it raises; returning the string "cpu" makes `device=` arguments
   valid and puts those tensors on the CPU.
2. The model-parallel RNG tracker forks the *CUDA* generator state around
   parameter init and dropout. A tracker whose `fork()` does nothing (CPU
   randomness then comes from the global generator, which is all a CPU run
   needs) and which already holds the "model-parallel-rng" name replaces it.
3. Megatron's own attention builds its causal mask on the CUDA device when
   none is given; callers must always pass an explicit causal mask on CPU.
   That shim is `causal_mask()` below, used by the model code on every device
   so both paths run the same attention arithmetic.

Megatron's optimizer, grad clipping and DDP also hard-code CUDA; the trainer
does not use them (see `worker.py`: torch AdamW plus an explicit all-reduce).
"""

from __future__ import annotations

import contextlib

import torch

_APPLIED = False


class _CpuRngTracker:
    """Stand-in for megatron's CudaRNGStatesTracker: the same interface, no CUDA generator."""

    def __init__(self) -> None:
        self.states_: dict[str, int] = {"model-parallel-rng": 0}
        self._is_initialized = True

    def is_initialized(self) -> bool:
        return True

    def reset(self) -> None:
        self.states_ = {"model-parallel-rng": 0}

    def get_states(self) -> dict[str, int]:
        return dict(self.states_)

    def set_states(self, states: dict[str, int]) -> None:
        self.states_ = dict(states)

    def add(self, name: str, seed: int) -> None:
        self.states_[name] = seed

    def fork(self, name: str = "model-parallel-rng"):
        return contextlib.nullcontext()


def apply() -> None:
    """Install shims 1 and 2 (idempotent). Call before building the model, only on CPU."""
    global _APPLIED
    if _APPLIED:
        return
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    from megatron.core.tensor_parallel import random as mrandom

    mrandom._CUDA_RNG_STATE_TRACKER = _CpuRngTracker()
    mrandom._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
    _APPLIED = True


def causal_mask(seq_len: int, device: torch.device | str) -> torch.Tensor:
    """Shim 3: megatron's boolean attention mask, True where attention is *not* allowed, [1, 1, s, s]."""
    return torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool, device=device), diagonal=1)[None, None]
