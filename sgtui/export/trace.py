"""Chrome/Perfetto trace (Trace Event Format JSON): open in ui.perfetto.dev or chrome://tracing.

Each run is a process; thread 1 holds its phases as slices, threads 100+slot
hold its requests (one track per concurrency slot), a counter track per GPU
shows used memory, and errors are instant events.
"""

from __future__ import annotations

import orjson

from sgtui.export import Combined

PHASE_TID = 1
SLOT_TID0 = 100


def _us(t: float, t0: float) -> float:
    return round((t - t0) * 1e6, 1)


def render_trace(c: Combined) -> str:
    starts = [run.first_t for _l, run, _g, _s in c.runs if run.first_t is not None]
    t0 = min(starts) if starts else 0.0
    ev: list[dict] = []
    gpus_done: set[int] = set()
    for pid, (label, run, gpu, st) in enumerate(c.runs, start=1):
        ev.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": label}})
        ev.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": PHASE_TID, "args": {"name": "phases"}})
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
        if id(gpu) not in gpus_done:
            gpus_done.add(id(gpu))
            for dev in gpu.devices.values():
                for t, v in zip(dev.used.t, dev.used.v):
                    ev.append({"ph": "C", "name": f"GPU {dev.index} used MiB", "pid": 0, "ts": _us(t, t0),
                               "args": {"used_mib": v}})
    ev.append({"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPUs"}})
    return orjson.dumps({"traceEvents": ev, "displayTimeUnit": "ms"}).decode() + "\n"
