"""CPU-only shims for the real SGLang server, loaded by Python at start-up because this folder is on PYTHONPATH.

sgtui.runner.engines.sglang puts the folder there only when the run's device is cpu; GPU runs never load it.
Why each piece exists (details in README.md):
- torchvision op schemas: SGLang imports torchvision at module level, and PyPI's torchvision is a CUDA build
  that fails beside torch+cpu with `operator torchvision::nms does not exist`; text models never call it.
- pin_memory no-op: SGLang's LoRA code pins host memory, which needs an accelerator; on CPU pinning means
  nothing, so `--enable-lora` would fail without it.
"""

from __future__ import annotations


def _torchvision_op_schemas() -> None:
    """Define torchvision's nms/qnms op schemas so a CUDA torchvision wheel imports beside torch+cpu."""
    try:
        import torch
    except ImportError:
        return
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        globals()["_TORCHVISION_LIB"] = lib  # keep the registration alive
    except Exception:  # noqa: BLE001 - already defined (a working torchvision): nothing to do
        pass


def _pin_memory_noop() -> None:
    """pin_memory needs an accelerator; on CPU it has no meaning, so make it return the tensor as is."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        return
    torch.Tensor.pin_memory = lambda self, *a, **k: self  # type: ignore[method-assign]

    def _strip(fn):
        def wrapper(*args, **kwargs):
            kwargs.pop("pin_memory", None)
            return fn(*args, **kwargs)

        wrapper.__name__ = fn.__name__
        return wrapper

    for name in ("tensor", "empty", "zeros", "ones", "full", "arange", "empty_like", "zeros_like", "ones_like",
                 "full_like", "empty_strided"):
        setattr(torch, name, _strip(getattr(torch, name)))


_torchvision_op_schemas()
_pin_memory_noop()
