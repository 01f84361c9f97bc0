"""Stand-in for the CUDA-only `sgl_kernel` package so that SGLang's CPU path can import (see ../README.md).

Why: with the device cpu, SGLang imports `*_cpu` functions from `sgl_kernel` at module level, and the
PyPI builds (`sgl-kernel`, `sglang-kernel`) are CUDA-only. Only `assign_req_to_token_pool_cpu` runs on
the plain serving path (every prefill, from `mem_cache/allocation.py`), so it is implemented, mirroring
SGLang 0.5.23's own triton kernel `assign_req_to_token_pool` in that file. Any other name imports fine
and raises NotImplementedError if called (speculative decoding, KV copy: an unexpected use fails loudly).
No `torch.ops.sgl_kernel` op is registered: that keeps SGLang's AMX path off (its `intel_amx` attention
gave wrong decode tokens on an AVX-512 CPU), so it uses its native torch ops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the body needs only tensor methods; SGLang has imported torch long before calling it
    import torch

__version__ = "0.0.0+sgtui-cpu-compat"


def assign_req_to_token_pool_cpu(req_pool_indices: torch.Tensor, req_to_token: torch.Tensor,
                                 start_offset: torch.Tensor, end_offset: torch.Tensor,
                                 out_cache_loc: torch.Tensor, pool_len: int) -> None:
    """For each request i, write its new cache slots into req_to_token[req_pool_indices[i], start:end].

    Mirrors the triton kernel: out_cache_loc holds the slots of all requests back to back, request i's
    slice starting at the sum of the lengths (end - start) of the requests before it.
    """
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    rows = req_pool_indices.tolist()
    offset = 0
    for row, s, e in zip(rows, starts, ends):
        n = e - s
        if n > 0:
            req_to_token[row, s:e] = out_cache_loc[offset: offset + n].to(req_to_token.dtype)
        offset += n


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(f"sgl_kernel.{name} is CUDA-only; sgtui's CPU compat layer does not provide it")

    missing.__name__ = name
    return missing
