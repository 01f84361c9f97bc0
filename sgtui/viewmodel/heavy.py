"""The O(all requests) half of a snapshot: run summaries and the verdict, computed in one background thread
(`HeavyWorker`) on frozen copies of the runs, spread over two threads where numpy lets them run side by side,
and paced by their own cost so that a huge session slows the percentiles' refresh, never the UI
(`sgtui.viewmodel.snapshot` decides when to ask). Nothing in this module imports Textual.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Callable

from sgtui.state import GpuState, RunState, RunSummary, StepState, reduce_steps, run_summary

#: Seconds between two summaries rounds while the runs change, however cheap a round is. Each round
#: recomputes every percentile of the run (O(all requests), in `sgtui.state`); at the old 0.1 s a
#: slow stream that counts as quiet (the CPU box: ~25 requests/s) had one round right after another,
#: about a third of a core (benchmarks/ui_cpu.py), taken from the engine being measured. The live
#: values (this step's tok/s, requests, phase) do not wait for it; only means and percentiles do.
HEAVY_MIN_INTERVAL = 1.0
#: A summary round slower than this holds the GIL in long stretches (pure-Python sorts of every ITL
#: value of a run): during a stream such rounds are spaced much further apart, so the UI stays
#: responsive and the percentiles say how old they are; a quiet stream brings them up to date.
HEAVY_SLOW_S = 0.2
#: Rounds slower than this (millions of ITL values) run only when the stream is quiet.
HEAVY_QUIET_ONLY_S = 0.3


def heavy_interval(cost: float, factor: float) -> float:
    """Seconds until the next summaries round while events stream, from the last round's cost: cheap
    rounds keep the percentiles live; costly ones (which hold the GIL in long sorts) come rarely."""
    if cost > HEAVY_SLOW_S:
        return max(10.0, 20.0 * cost)
    if cost > 0.05:
        return max(HEAVY_MIN_INTERVAL, 10.0 * cost)
    return quiet_interval(cost, factor)


def quiet_interval(cost: float, factor: float) -> float:
    """Seconds until the next round while the stream is quiet but not silent (a few events a second:
    a slow rollout, GPU samples during train): any round may run, spaced by its cost."""
    return max(HEAVY_MIN_INTERVAL, factor * cost)


#: Threads a summaries round spreads its runs over: numpy's passes (the pooled percentiles' selection and
#: squares, a step's sort and exact sums) release the GIL, so two runs' numbers are computed side by side on
#: two cores (benchmarks/replay_load.py: the round after a replay at speed max). Warm batches (`warm`) run
#: in this thread alone: they run beside the fold, which needs the GIL too, and split over two threads they
#: made a 1M-event replay settle 1.10x later (median of 4 alternated rounds, `--baseline`).
PARALLEL = max(1, min(2, os.cpu_count() or 1))


def in_parallel(fn: Callable, items: list, threads: int = PARALLEL) -> list:
    """[fn(x) for x in items], spread over `threads` threads (the caller's among them), in order; the first
    exception is raised once all are done. Each item's work is independent (its own run, its own step)."""
    if threads < 2 or len(items) < 2:
        return [fn(x) for x in items]
    out: list = [None] * len(items)
    errors: list[BaseException] = []

    def part(k: int) -> None:
        try:
            for i in range(k, len(items), threads):
                out[i] = fn(items[i])
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
            errors.append(e)

    helpers = [threading.Thread(target=part, args=(k,), name="sgtui-summaries-part", daemon=True)
               for k in range(1, min(threads, len(items)))]
    for h in helpers:
        h.start()
    part(0)
    for h in helpers:
        h.join()
    if errors:
        raise errors[0]
    return out


def _summary(key: str, run: RunState, gpu: GpuState, include_first_step: bool = False) -> RunSummary:
    s = run_summary(run, gpu, include_first_step)
    return dataclasses.replace(s, label=key) if s.label != key else s


class HeavyWorker:
    """One background thread that computes run summaries from frozen copies, one job at a time."""

    def __init__(self, on_done: Callable[[], None] = lambda: None, include_first_step: bool = False) -> None:
        self.on_done = on_done  # called from the worker thread when a result is ready
        self.include_first_step = include_first_step
        self._lock = threading.Lock()
        self._job: list | None = None
        self._warm: Callable[[], list[StepState]] | None = None
        self._result: tuple[list, float, int] | None = None
        self._gen = 0
        self._idle = threading.Event()
        self._idle.set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def submit(self, jobs: list, generation: int = 0) -> None:
        with self._lock:
            self._job = jobs
            self._gen = generation
            self._idle.clear()
        self._start()
        self._wake.set()

    def warm(self, find: Callable[[], list[StepState]]) -> None:
        """Reduce finished steps' requests now (their cache, shared with every frozen copy), batch after
        batch of `find()` until it gives none, so the summaries round after a replay at speed max only
        pools them. numpy's passes release the GIL, so this runs beside the fold rather than after it.
        No result; on_done is called when idle again. `find` runs in the worker thread."""
        with self._lock:
            self._warm = find
            self._idle.clear()
        self._start()
        self._wake.set()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="sgtui-summaries", daemon=True)
            self._thread.start()

    def take(self) -> tuple[list, float, int] | None:
        with self._lock:
            out, self._result = self._result, None
        return out

    def wait(self, timeout: float = 60.0) -> None:
        self._idle.wait(timeout)

    def _main(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                jobs, self._job = self._job, None
                warm, self._warm = self._warm, None
                gen = self._gen
            if warm is not None:
                try:
                    while self._job is None and (steps := warm()):
                        reduce_steps(steps)
                except Exception:  # noqa: BLE001 - a step torn meanwhile: the summaries round redoes it
                    pass
            if jobs is None:
                with self._lock:
                    idle = self._job is None
                    if idle:
                        self._idle.set()
                if warm and idle:
                    self.on_done()  # the hub may start its round now
                continue
            t0 = time.perf_counter()
            results = []
            try:
                results = in_parallel(lambda j: (j[0], j[1], _summary(j[0], j[2], j[3], self.include_first_step)),
                                      jobs)
            except Exception:  # noqa: BLE001 - a torn copy: the next round (or the quiet one) redoes it
                results = []
            with self._lock:
                self._result = (results, time.perf_counter() - t0, gen)
                self._idle.set()
            self.on_done()
