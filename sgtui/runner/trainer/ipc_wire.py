"""The trainer's side of the engines' in-place weight APIs (`+ipc`): one packed bucket (`hf_export.Packed`)
turned into what each engine's HTTP route takes. Handles, not bytes, cross the process boundary: the
engine maps the trainer's buffer and copies from it, so the buffer must stay alive and unchanged until
the engine's call has returned (the runner acks each bucket; the worker keeps the last two buffers).

- SGLang `/update_weights_from_tensor`, `load_format: "flattened_bucket"`: per engine TP rank, the
  base64 of a `ForkingPickler` dump of `{"flattened_tensor": <uint8 tensor>, "metadata": [...]}`
  (sglang.srt.utils.MultiprocessingSerializer's wire format; the field names of
  sglang.srt.weight_sync.tensor_bucket.FlattenedTensorMetadata). Where sglang is importable in the
  trainer (GPU: the trainer runs on the engine venv's interpreter) its own metadata class is used;
  elsewhere a `types.SimpleNamespace` with the same fields, which SGLang's SafeUnpickler admits (the
  `types.` prefix, 0.5.17 and 0.5.23) and its loader reads by attribute. CUDA handles carry the
  device's UUID where the device index would be, as SGLang's own producer patches them
  (`monkey_patch_torch_reductions`), so differing CUDA_VISIBLE_DEVICES cannot map them to another GPU.
  On CPU the same dump carries a shared-memory file name (torch's `file_system` sharing strategy):
  measured on the CPU SGLang 0.5.23 server, the route loads it like a CUDA handle (15 ms, greedy output
  then equal to the merged checkpoint served fresh). That is the CPU test of this path; vLLM's IPC
  receiver rebuilds CUDA tensors only.
- vLLM's weight-transfer API, IPC backend, packed (`--weight-transfer-config '{"backend": "ipc"}'`,
  dev mode, `VLLM_ALLOW_INSECURE_SERIALIZATION=1` for pickled handles over HTTP): names, dtype names,
  shapes, byte sizes, and `{GPU UUID: reduce_tensor args}` pickled and base64-encoded
  (vllm/distributed/weight_transfer/ipc_engine.py and packed_tensor.py, 0.26: the consumer looks its own
  GPU's UUID up in that dict and splits the buffer by the byte sizes). The runner's engine adds the
  version's remaining fields (0.26 wants `packed: true` per update; 0.32 takes it at init).

torch only (no engine import needed): the worker imports this lazily, on the ranks.
"""

from __future__ import annotations

import base64
import io
import pickle
from types import SimpleNamespace

import torch
import torch.multiprocessing  # noqa: F401 - registers torch's reducers with ForkingPickler
from multiprocessing.reduction import ForkingPickler
from torch.multiprocessing.reductions import reduce_tensor

from sgtui.runner.trainer.hf_export import Packed

#: reduce_tensor's args: index of the CUDA device (SGLang's patch and vLLM's consumer both rewrite it).
DEVICE_ARG = 6


def use_shared_memory_files() -> None:
    """CPU tensors pickle as shared-memory file names (not file descriptors that only a child process
    of the sender can receive): needed for the engine, an unrelated process, to map them."""
    torch.multiprocessing.set_sharing_strategy("file_system")


def gpu_uuid(t: torch.Tensor) -> str:
    return str(torch.cuda.get_device_properties(t.device).uuid)


def _reduce_with_uuid(t: torch.Tensor):
    fn, args = reduce_tensor(t)
    if t.is_cuda:
        args = tuple(gpu_uuid(t) if i == DEVICE_ARG else a for i, a in enumerate(args))
    return fn, args


def _metadata_class():
    try:
        from sglang.srt.weight_sync.tensor_bucket import FlattenedTensorMetadata

        return FlattenedTensorMetadata
    except Exception:  # noqa: BLE001 - any import failure: the field-compatible stand-in
        return SimpleNamespace


def sglang_payload(p: Packed) -> str:
    """One engine rank's `serialized_named_tensors` entry for this bucket."""
    meta_cls = _metadata_class()
    metadata = [meta_cls(name=name, shape=torch.Size(shape), dtype=dt, start_idx=a, end_idx=b, numel=b - a)
                for name, shape, dt, (a, b) in zip(p.names, p.shapes, p.dtypes, p.offsets())]
    buf = io.BytesIO()
    pickler = ForkingPickler(buf)
    pickler.dispatch_table[torch.Tensor] = _reduce_with_uuid
    pickler.dump({"flattened_tensor": p.buffer[: p.nbytes], "metadata": metadata})
    return base64.b64encode(buf.getvalue()).decode()


def vllm_handle(p: Packed) -> dict[str, tuple]:
    """This rank's {GPU UUID: reduce_tensor args} of the bucket's buffer (merged over ranks by rank 0)."""
    if not p.buffer.is_cuda:
        raise ValueError("vLLM's IPC weight transfer maps CUDA memory only")
    _, args = reduce_tensor(p.buffer)
    return {gpu_uuid(p.buffer): args}


def vllm_update(p: Packed, handles: dict[str, tuple]) -> dict:
    """The version-independent part of vLLM's packed IPC `update_info` for this bucket."""
    return {"names": list(p.names), "dtype_names": [str(d).split(".")[-1] for d in p.dtypes],
            "shapes": [list(s) for s in p.shapes], "tensor_sizes": list(p.sizes),
            "ipc_handles_pickled": base64.b64encode(pickle.dumps(handles)).decode()}
