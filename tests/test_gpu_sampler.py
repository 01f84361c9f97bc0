import pytest

from sgtui import gpu
from sgtui.events import GpuSample


def test_sampler_schedule_does_not_drift():
    """next += interval: a slow sample shortens the following sleep instead of shifting every later tick."""
    clock = {"t": 0.0}
    sleeps = []
    samples = []

    def fake_sample(owner_of):
        clock["t"] += 0.05 if len(samples) != 2 else 0.15  # the third sample is slow
        samples.append(clock["t"])
        return GpuSample(t=clock["t"], devices=[{"index": 0, "used_mib": 1.0}])

    def fake_sleep(s):
        sleeps.append(round(s, 6))
        clock["t"] += s
        if len(sleeps) == 5:
            sampler.stop()

    sampler = gpu.GpuSampler(lambda s: None, interval=0.2, sampler=fake_sample, clock=lambda: clock["t"],
                             sleep=fake_sleep)
    sampler.run()
    assert sleeps == [0.15, 0.15, 0.05, 0.15, 0.15]
    starts = [round(t - d, 6) for t, d in zip(samples, [0.05, 0.05, 0.15, 0.05, 0.05])]
    assert starts == [0.0, 0.2, 0.4, 0.6, 0.8]


def test_no_driver_is_one_event_and_stops():
    if gpu.list_devices():
        pytest.skip("this machine has an NVIDIA driver")
    got = []
    s = gpu.GpuSampler(got.append, interval=0.01)
    s.start()
    s.join(timeout=5)
    assert not s.is_alive() and len(got) == 1 and got[0].error and got[0].devices == []


@pytest.mark.gpu
def test_real_nvml_sample():
    if not gpu.list_devices():
        pytest.skip("no NVIDIA GPU/driver on this machine")
    s = gpu.sample()
    assert s.devices and s.devices[0]["total_mib"] > 0 and not s.error


class FakeNvml:
    """Stand-in for pynvml with one device whose utilization query is unsupported (as on some vGPUs and
    MIG slices) and two compute processes: a real one of ours and one NVML reports without memory.
    Only for the N/A paths, which the real NVML can't be made to produce on demand."""

    class NVMLError(Exception):
        pass

    def __init__(self, own_pid):
        self.own_pid = own_pid

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("dev", i)

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("Mem", (), {"used": 1024 * 1024 * 1024, "total": 80 * 1024 * 1024 * 1024, "free": 79 << 30})()

    def nvmlDeviceGetUtilizationRates(self, h):
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetName(self, h):
        return b"Fake H100"

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        P = type("P", (), {})
        a, b = P(), P()
        a.pid, a.usedGpuMemory = self.own_pid, 512 * 1024 * 1024
        b.pid, b.usedGpuMemory = 999999999, None
        return [a, b]


def test_unsupported_queries_are_none_and_processes_map_to_runs(monkeypatch):
    import os

    monkeypatch.setitem(gpu._state, "init", FakeNvml(os.getpid()))
    mine = os.getpgrp()
    s = gpu.sample(owner_of=lambda pid: "run-a" if gpu.pgid_of(pid) == mine else "")
    assert s.error == "" and s.devices == [{"index": 0, "name": "Fake H100", "used_mib": 1024.0,
                                            "total_mib": 81920.0, "util": None, "proc_query": "default"}]
    assert s.processes == [{"pid": os.getpid(), "device": 0, "used_mib": 512.0, "run": "run-a"},
                           {"pid": 999999999, "device": 0, "used_mib": None, "run": "other"}]
    assert [d.name for d in gpu.list_devices()] == ["Fake H100"]


class OldDriverNvml(FakeNvml):
    """pynvml's _v3 call on a driver that predates it (NVML_ERROR_FUNCTION_NOT_FOUND), _v2 answering."""

    def nvmlDeviceGetComputeRunningProcesses_v3(self, h):
        raise self.NVMLError("Function Not Found")

    def nvmlDeviceGetComputeRunningProcesses_v2(self, h):
        return FakeNvml.nvmlDeviceGetComputeRunningProcesses(self, h)[:1]

    def nvmlDeviceGetComputeRunningProcesses(self, h):  # the binding's unsuffixed name is v3 as well
        raise self.NVMLError("Function Not Found")


class NoProcessQueryNvml(OldDriverNvml):
    def nvmlDeviceGetComputeRunningProcesses_v2(self, h):
        raise self.NVMLError("Not Supported")


def test_process_query_falls_back_to_older_calls_and_says_which(monkeypatch):
    import os

    monkeypatch.setitem(gpu._state, "init", OldDriverNvml(os.getpid()))
    s = gpu.sample(owner_of=lambda pid: "run-a")
    assert s.devices[0]["proc_query"] == "v2"
    assert s.processes == [{"pid": os.getpid(), "device": 0, "used_mib": 512.0, "run": "run-a"}]
    # no call answers: no processes, and the sample says why instead of looking like an idle GPU
    monkeypatch.setitem(gpu._state, "init", NoProcessQueryNvml(os.getpid()))
    s = gpu.sample(owner_of=lambda pid: "run-a")
    assert s.processes == [] and s.devices[0]["proc_query"] == "unsupported: NVMLError: Function Not Found"
    assert s.devices[0]["used_mib"] == 1024.0  # the device itself is still sampled


def test_sampler_reports_an_exception_instead_of_dying():
    got = []

    def exploding(owner_of):
        raise RuntimeError("GPU fell off the bus")

    s = gpu.GpuSampler(got.append, interval=0.01, sampler=exploding)
    s.start()
    s.join(timeout=5)
    assert not s.is_alive() and len(got) == 1 and "GPU fell off the bus" in got[0].error


def test_orchestrator_maps_gpu_processes_by_process_group(tmp_path):
    """owner_of: a pid maps to the run whose runner group (or announced group) it lives in."""
    import subprocess
    import sys

    from sgtui.config import RunConfig
    from sgtui.orchestrator import Orchestrator

    orch = Orchestrator([RunConfig(label="r", backend="vllm", strategy="sleep1")], tmp_path / "s.jsonl",
                        sample_gpus=False)
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        assert orch.owner_of(p.pid) == ""
        orch._pgid_owner[p.pid] = "r"
        assert orch.owner_of(p.pid) == "r"
        assert orch.owner_of(999999999) == ""
    finally:
        p.kill()
        p.wait()
