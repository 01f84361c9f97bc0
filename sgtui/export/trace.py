"""Chrome/Perfetto trace (Trace Event Format JSON): open in ui.perfetto.dev or chrome://tracing.

Contract: `render_trace(c) -> str`, one JSON document, pure (no IO).

Each session is its own group of processes and its own clock:
- time 0 is the session's first observation (its earliest run event or GPU sample), so two sessions recorded
  days apart lie on top of each other, ready to compare, instead of 131 hours apart;
- session n (1-based, command-line order) owns pids n*1000 (its GPUs: one counter track per device, used
  memory) and n*1000+i (its i-th run: thread 1 holds its phases as slices, threads 100+slot its requests, one
  track per concurrency slot; errors are instant events). GPU counters of two sessions never share a track:
  the same device index on two different days is two different measurements.
Processes are sorted session by session (process_sort_index), GPUs first within each session.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from sgtui.export import Combined
from sgtui.state import GpuState, RunState, SessionState

PHASE_TID = 1
SLOT_TID0 = 100
#: pids per session: room for 999 runs, far more than any session holds
SESSION_PID_STRIDE = 1000


def _us(t: float, t0: float) -> float:
    return round((t - t0) * 1e6, 1)


def _sessions(c: Combined) -> list[tuple[SessionState, list[tuple[str, RunState]]]]:
    """The sessions of `c` in command-line order, each with its runs (by shown label). Sessions are told apart
    by identity: two loads of the same file are two sessions, as the labels (`#1`, `#2`) already say."""
    out: list[tuple[SessionState, list[tuple[str, RunState]]]] = []
    index: dict[int, int] = {}
    for label, run, _gpu, st in c.runs:
        if id(st) not in index:
            index[id(st)] = len(out)
            out.append((st, []))
        out[index[id(st)]][1].append((label, run))
    return out


def session_t0(runs: list[RunState], gpu: GpuState) -> float:
    """The session's time 0: the earliest thing the trace draws for it (a GPU sample may precede the first
    run event), so no event of the session lands before 0."""
    starts = [run.first_t for run in runs if run.first_t is not None]
    starts += [span.start for run in runs for span in run.timeline[:1]]
    starts += [dev.used.t[0] for dev in gpu.devices.values() if dev.used.t]
    return min(starts) if starts else 0.0


def _run_events(pid: int, label: str, run: RunState, t0: float) -> list[dict]:
    ev: list[dict] = [{"ph": "M", "name": "process_name", "pid": pid, "args": {"name": label}},
                      {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}},
                      {"ph": "M", "name": "thread_name", "pid": pid, "tid": PHASE_TID, "args": {"name": "phases"}}]
    if run.info is not None:
        info = run.info
        ev.append({"ph": "M", "name": "process_labels", "pid": pid,
                   "args": {"labels": f"{info.backend} {info.engine_version} {info.strategy}".strip()}})
    for span in run.timeline:
        end = span.end if span.end is not None else run.last_t
        ev.append({"ph": "X", "name": span.name, "cat": "phase", "pid": pid, "tid": PHASE_TID,
                   "ts": _us(span.start, t0), "dur": _us(end, span.start),
                   "args": {"step": span.step, "ok": span.ok, "detail": span.detail}})
    slots: set[int] = set()
    for n in sorted(run.steps):
        for r in run.steps[n].requests:
            slots.add(r.slot)
            ev.append({"ph": "X", "name": "request" if not r.error else "request (error)", "cat": "request",
                       "pid": pid, "tid": SLOT_TID0 + r.slot, "ts": _us(r.start, t0), "dur": round(r.latency * 1e6, 1),
                       "args": {"step": n, "ttft_ms": r.ttft * 1e3, "output_tokens": r.output_tokens,
                                "error": r.error}})
    for slot in sorted(slots):
        ev.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": SLOT_TID0 + slot,
                   "args": {"name": f"slot {slot}"}})
    for e in run.errors:
        ev.append({"ph": "i", "s": "p", "name": f"error {e.category}", "pid": pid, "tid": PHASE_TID,
                   "ts": _us(e.t, t0), "args": {"message": e.message}})
    return ev


def _gpu_events(pid: int, name: str, gpu: GpuState, t0: float) -> list[dict]:
    ev: list[dict] = [{"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}},
                      {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}}]
    for dev in gpu.devices.values():
        for t, v in zip(dev.used.t, dev.used.v):
            ev.append({"ph": "C", "name": f"GPU {dev.index} used MiB", "pid": pid, "ts": _us(t, t0),
                       "args": {"used_mib": v}})
    return ev


def render_trace(c: Combined) -> str:
    sessions = _sessions(c)
    ev: list[dict] = []
    meta: list[dict] = []
    for n, (st, runs) in enumerate(sessions, start=1):
        base = n * SESSION_PID_STRIDE
        t0 = session_t0([run for _l, run in runs], st.gpu)
        name = "GPUs" if len(sessions) == 1 else f"GPUs (session #{n}: {Path(st.source).stem})"
        ev += _gpu_events(base, name, st.gpu, t0)
        for i, (label, run) in enumerate(runs, start=1):
            ev += _run_events(base + i, label, run, t0)
        meta.append({"session": n, "source": st.source, "t0_unix": t0, "gpu_pid": base,
                     "run_pids": {label: base + i for i, (label, _r) in enumerate(runs, start=1)}})
    # Extra top-level keys are allowed by the format (viewers ignore them): where each session's 0 lies.
    return orjson.dumps({"traceEvents": ev, "displayTimeUnit": "ms", "sgtui": {"sessions": meta}}).decode() + "\n"
