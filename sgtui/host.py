"""The host-CPU witness of foreign load, sampled in the orchestrator beside (never inside) the NVML sampler.

A step is only comparable with another step if nothing else competed for the
machine meanwhile: on the 2-core CI box a background CPU job turned SGLang's
937 tok/s into 67 tok/s (issue 13). Every `interval` seconds `HostSampler`
emits one `HostSample`: the busy CPUs of the host (from /proc/stat, only the
CPUs this process may run on: a cpuset container's other CPUs do not compete)
and the CPU used by the session's own processes (this orchestrator and every
process group a run owns: runners, engines, trainers, through `sgtui.procinfo`).
The state fold derives foreign load = busy - own; the session keeps the
observations only. Foreign GPU processes need no sampler of their own: the
NVML sample already marks every process no run owns as run "other".

Why 1 s: /proc counts CPU time in 10 ms ticks, so a 1 s window resolves
0.01 cores per process (a 0.2 s window, the GPU sampler's, reads a process
that used one tick as 0.05 cores, and the error adds up over the ~20 processes
of two engines); one sample asks every process for its group (one system
call each) and reads only the session's processes: 0.1 ms for 84 processes on
the CI box when none is the session's, 1.0 ms when all are (a scan of every
/proc/PID/stat took 1.0-1.4 ms there at the same time, 0.4 ms for 71 idle), so
under 0.5 % of a core even on a host with 2,000 processes. Steps take >= 3 s on CPU
and 30-40 s on an H200, so every step overlaps at least two samples.

Limits, said where they matter: a process of the session that exits within a
window loses its CPU of that window (its time is not added to anything we
read without double counting), so short-lived children of a run read as
foreign for that one window; /proc/stat in a container with a CPU quota but no
cpuset shows the whole host's CPUs.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sgtui import procinfo
from sgtui.events import HostSample

PROC = Path("/proc")
#: The label of the orchestrator's own process (the UI, the samplers, the session writer) in `HostSample.own`.
SELF_LABEL = "sgtui"


def allowed_cpus() -> frozenset[int]:
    """CPUs this process (and the runs it starts, which inherit it) may run on."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return frozenset(range(os.cpu_count() or 1))


def cpu_ticks(text: str, cpus: frozenset[int]) -> tuple[int, int]:
    """(busy, total) ticks of the given CPUs, summed over their `cpuN` lines of /proc/stat's text.

    Busy is everything but idle and iowait (user, nice, system, irq, softirq, steal; guest time is already
    inside user)."""
    busy = total = 0
    for line in text.splitlines():
        if not line.startswith("cpu") or line[3:4] == " ":
            continue
        name, *vals = line.split()
        if int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in vals[:8]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        busy += sum(ticks) - idle
        total += sum(ticks)
    return busy, total


@dataclass
class ProcTicks:
    """CPU ticks (utime + stime) of the live processes of some process groups, and when each started."""

    ticks: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (start tick since boot, cpu ticks)
    pgid_of: dict[int, int] = field(default_factory=dict)  # pid -> its process group


def scan_groups(pgids: set[int], extra_pids: set[int]) -> ProcTicks:
    """One pass over the host's processes: every live process whose group is in `pgids`, plus `extra_pids`."""
    out = ProcTicks()
    tick = os.sysconf("SC_CLK_TCK")
    for pid, p in procinfo.group_cpu(pgids, extra_pids).items():
        out.ticks[pid] = (round(p.started * tick), round(p.cpu * tick))  # start tick since boot; utime + stime
        out.pgid_of[pid] = p.pgid
    return out


def own_ticks_delta(prev: ProcTicks, cur: ProcTicks, since_tick: float) -> dict[int, int]:
    """CPU ticks each live process used since the previous scan, by pid.

    A process seen for the first time counts in full only if it started after the previous scan (`since_tick`,
    ticks since boot); one that existed then but was not ours yet (its group was announced late) only sets its
    baseline. A pid reused by a new process (other start time) counts from zero."""
    out = {}
    for pid, (start, ticks) in cur.ticks.items():
        before = prev.ticks.get(pid)
        if before is not None and before[0] == start:
            out[pid] = max(0, ticks - before[1])
        elif start >= since_tick:
            out[pid] = ticks
    return out


def uptime_ticks(tick: int) -> float:
    try:
        return float((PROC / "uptime").read_text().split()[0]) * tick
    except (OSError, ValueError, IndexError):
        return 0.0


class HostSampler(threading.Thread):
    """Every `interval` seconds one `HostSample` to `sink` (thread-safe); the first after one interval (a
    sample is a difference of two readings). `groups()` returns the session's process groups and their run
    labels at that moment (the orchestrator's map, copied)."""

    def __init__(self, sink: Callable[[HostSample], None], groups: Callable[[], dict[int, str]],
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="sgtui-host-sampler", daemon=True)
        self.sink, self.groups, self.interval, self._clock = sink, groups, interval, clock
        self._stop_event = threading.Event()
        self.cpus = allowed_cpus()
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.samples = 0

    def _read(self) -> tuple[float, tuple[int, int], ProcTicks, float, dict[int, str]]:
        groups = dict(self.groups())
        now_tick = uptime_ticks(self.tick)
        stat = (PROC / "stat").read_text()
        procs = scan_groups(set(groups), {os.getpid()})
        return self._clock(), cpu_ticks(stat, self.cpus), procs, now_tick, groups

    def run(self) -> None:
        if not (PROC / "stat").exists():
            self.sink(HostSample(t=time.time(), error="no /proc/stat (not Linux): host load not sampled"))
            return
        try:
            prev = self._read()
        except Exception as e:  # noqa: BLE001 - say why, never die silently
            self.sink(HostSample(t=time.time(), error=f"host sampling failed: {type(e).__name__}: {e}"))
            return
        next_t = prev[0] + self.interval
        while not self._stop_event.wait(max(0.0, next_t - self._clock())):
            try:
                cur = self._read()
                sample = host_sample(prev, cur, self.tick, len(self.cpus))
            except Exception as e:  # noqa: BLE001
                self.sink(HostSample(t=time.time(), error=f"host sampling failed: {type(e).__name__}: {e}"))
                return
            self.sink(sample)
            self.samples += 1
            prev = cur
            next_t += self.interval
            if next_t < self._clock():  # fell behind (suspended?): skip missed ticks
                next_t = self._clock() + self.interval

    def stop(self) -> None:
        self._stop_event.set()


def host_sample(prev: tuple, cur: tuple, tick: int, ncpus: int) -> HostSample:
    """The sample between two readings (clock, (busy, total) ticks, ProcTicks, uptime ticks, groups)."""
    t0, (b0, tot0), p0, up0, _ = prev
    t1, (b1, tot1), p1, _up1, groups = cur
    window = max(t1 - t0, 1e-6)
    d_total = tot1 - tot0
    busy = ncpus * (b1 - b0) / d_total if d_total > 0 else 0.0
    own: dict[str, float] = {}
    me = os.getpid()
    for pid, ticks in own_ticks_delta(p0, p1, up0).items():
        label = SELF_LABEL if pid == me else groups.get(p1.pgid_of.get(pid, -1), "")
        if label:
            own[label] = own.get(label, 0.0) + ticks / tick / window
    return HostSample(t=time.time(), window=round(window, 4), cores=ncpus, busy_cores=round(busy, 3),
                      own={k: round(v, 3) for k, v in sorted(own.items())})
