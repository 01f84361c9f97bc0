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
