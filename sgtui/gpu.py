"""NVML sampling of the whole host, apart from any UI (nvitop's `api` split).

NVML is initialised once, lazily. No driver is a normal situation (laptops,
CI, CPU boxes): it becomes one `gpu` event with `error` set and the sampler
stops; everything else keeps working. A query a device does not support
becomes None, never an exception.

The sampler runs in its own thread on a schedule that does not drift
(next += interval): per device used/total MiB and utilization, and per
process memory mapped to the run that owns the process (through its
process group: the runner's, or one the runner announced with a `proc` event).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from sgtui.events import GpuSample

_MIB = 1024 * 1024
_NVML_NA = (1 << 64) - 1 - 1024  # NVML_VALUE_NOT_AVAILABLE is 2**64-1; anything that large is not real memory
_lock = threading.Lock()
_state: dict[str, Any] = {"init": None, "error": ""}


def _nvml():
    """The pynvml module, initialised once; None (and the reason in _state) without a driver."""
    with _lock:
        if _state["init"] is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                _state["init"] = pynvml
            except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ImportError
                name = type(e).__name__
                _state["init"] = False
                _state["error"] = "no NVIDIA driver" if "LibraryNotFound" in name or "Driver" in name or isinstance(
                    e, ImportError) else f"NVML unavailable: {e}"
        return _state["init"] or None


def nvml_error() -> str:
    _nvml()
    return _state["error"]


#: NVML's per-process queries, newest first. nvidia-ml-py's unsuffixed name is the _v3 call, which older
#: drivers lack (NVML_ERROR_FUNCTION_NOT_FOUND): without the fallback such a host showed no processes at
#: all, so every run's memory read as nobody's.
PROCESS_QUERIES = ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
                   "nvmlDeviceGetComputeRunningProcesses")


def running_processes(nv: Any, handle: Any) -> tuple[list, str]:
    """(processes, how): the first per-process query the driver answers, and its name ("v3", "v2", or
    "default": the binding's unsuffixed call, v3 in today's nvidia-ml-py, older in older ones), or
    ([], "unsupported: <last error>") when none does; the name travels in the sample so a session says why
    it has no per-process memory instead of showing none."""
    last = "no query in this pynvml"
    for name in PROCESS_QUERIES:
        fn = getattr(nv, name, None)
        if fn is None:
            continue
        try:
            return list(fn(handle) or []), name.rsplit("_", 1)[1] if name[-3:-1] == "_v" else "default"
        except Exception as e:  # noqa: BLE001 - NVMLError_FunctionNotFound / NotSupported: try the older call
            last = f"{type(e).__name__}: {e}"
    return [], f"unsupported: {last}"


def _safe(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - unsupported query -> N/A
        return None


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    total_mib: float
    free_mib: float


def list_devices() -> list[DeviceInfo]:
    nv = _nvml()
    if nv is None:
        return []
    out = []
    for i in range(_safe(nv.nvmlDeviceGetCount) or 0):
        h = _safe(nv.nvmlDeviceGetHandleByIndex, i)
        if h is None:
            continue
        mem = _safe(nv.nvmlDeviceGetMemoryInfo, h)
        name = _safe(nv.nvmlDeviceGetName, h) or ""
        out.append(DeviceInfo(i, name.decode() if isinstance(name, bytes) else name,
                              mem.total / _MIB if mem else 0.0, mem.free / _MIB if mem else 0.0))
    return out


def sample(owner_of: Callable[[int], str] = lambda pid: "", role_of: Callable[[int], str] = lambda pid: "") -> GpuSample:
    """One sample of every device and its compute processes (each with the run that owns it and, where known,
    its role in that run: engine or trainer)."""
    t = time.time()
    nv = _nvml()
    if nv is None:
        return GpuSample(t=t, error=_state["error"])
    devices, processes = [], []
    count = _safe(nv.nvmlDeviceGetCount)
    if count is None:
        return GpuSample(t=t, error="NVML: cannot count devices (driver gone?)")
    for i in range(count):
        h = _safe(nv.nvmlDeviceGetHandleByIndex, i)
        if h is None:  # GPU fell off the bus, or not accessible: show it as unknown
            devices.append({"index": i, "name": "", "used_mib": None, "total_mib": None, "util": None})
            continue
        mem = _safe(nv.nvmlDeviceGetMemoryInfo, h)
        util = _safe(nv.nvmlDeviceGetUtilizationRates, h)
        name = _safe(nv.nvmlDeviceGetName, h) or ""
        procs, how = running_processes(nv, h)
        devices.append({
            "index": i,
            "name": name.decode() if isinstance(name, bytes) else name,
            "used_mib": round(mem.used / _MIB, 1) if mem else None,
            "total_mib": round(mem.total / _MIB, 1) if mem else None,
            "util": util.gpu if util else None,
            "proc_query": how,
        })
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)  # None (or NVML's N/A value) when not reported
            known = isinstance(used, int) and 0 <= used < _NVML_NA
            proc = {"pid": p.pid, "device": i, "used_mib": round(used / _MIB, 1) if known else None,
                    "run": owner_of(p.pid) or "other"}
            role = role_of(p.pid)
            if role:
                proc["role"] = role
            processes.append(proc)
    return GpuSample(t=t, devices=devices, processes=processes)


class GpuSampler(threading.Thread):
    """Samples every `interval` seconds until stopped; hands each sample to `sink` (thread-safe sink)."""

    def __init__(self, sink: Callable[[GpuSample], None], interval: float = 0.2,
                 owner_of: Callable[[int], str] = lambda pid: "",
                 sampler: Callable[[Callable[[int], str]], GpuSample] = sample,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] | None = None) -> None:
        super().__init__(name="sgtui-gpu-sampler", daemon=True)
        self.sink, self.interval, self.owner_of = sink, interval, owner_of
        self._sample, self._clock = sampler, clock
        self._stop_event = threading.Event()
        self._sleep = sleep or (lambda s: self._stop_event.wait(s))
        self.samples = 0

    def run(self) -> None:
        next_t = self._clock()
        while not self._stop_event.is_set():
            try:
                s = self._sample(self.owner_of)
            except Exception as e:  # noqa: BLE001 - the sampler must say why it stopped, never die silently
                s = GpuSample(t=time.time(), error=f"GPU sampling failed: {type(e).__name__}: {e}")
            self.sink(s)
            self.samples += 1
            if s.error:
                return  # no driver: said once, nothing more to sample
            next_t += self.interval
            delay = next_t - self._clock()
            if delay < 0:  # fell behind (suspended?): skip missed ticks, keep the phase of the schedule
                next_t += (-delay // self.interval + 1) * self.interval
                delay = next_t - self._clock()
            self._sleep(delay)

    def stop(self) -> None:
        self._stop_event.set()


def pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
