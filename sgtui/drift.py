"""Drift: which steps ran beside foreign load, and which design a session used against slow drift.

Pure functions over `RunSummary` / `SessionState` (no IO): the reports and the
verdict (`drift_caveats`, called by `sgtui.verdict`) say the same thing.

A step is flagged when, during it, foreign processes took CPU or sat on the
run's GPUs (the witness: `sgtui.host`, and NVML processes no run owns):
- CPU: the step's mean foreign load reached `cpu_threshold(cores)`: half a
  core, or a tenth of the CPUs the session may use on a larger machine. Half a
  core is far above what the witness reads on a quiet machine (its 10 ms tick
  resolution, and our own processes that exit within a window: 0.00-0.02
  cores a second on the idle 2-core CI box, 1.0-2.0 while other test suites
  ran there) and is what one background thread busy half the time takes; on
  that box a background job of about a core cut SGLang from 937 to 67 tok/s
  (issue 13). The tenth of the cores is a judgment, not yet measured: a
  16-core GPU host's daemons should not flag every step, a job taking a core
  per GPU still does.
- GPU: any process no run owns on the run's devices: it holds memory the
  engine may have wanted and shares the SMs. Only in sessions with the host
  witness: before it, a trainer's ranks were not attributed and read as
  "other"; a process a run owned in any sample is never foreign.

The session's other runs are not foreign, but they compete too: in a
concurrent session, and in an interleaved one on CPU, where a parked SGLang
scheduler keeps polling about a core through the vLLM run's steps (measured
0.7-1.0 cores in the committed interleaved CPU session). Steps where they used
`cpu_threshold` get a caveat line of their own.

Sessions recorded before the witness existed have none: their steps are not
flagged (and not called clean either: `StepSummary.drift` is None).

Designs: "sequential" runs one after another (a machine that slowly gets busier
favours the first run), "concurrent" runs at once (they share the machine),
"interleaved" alternates the runs step by step (`--interleave`), so slow drift
hits every run alike.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from sgtui.state import RunSummary, SessionState, StepDrift

#: Foreign CPU load (cores, mean over a step) from which a step is flagged, at least.
FOREIGN_CPU_CORES = 0.5
#: ... or this share of the CPUs the session may use, whichever is more.
FOREIGN_CPU_SHARE = 0.1
DESIGNS = ("sequential", "concurrent", "interleaved")
DESIGN_NOTES = {
    "sequential": "runs one after another; drift can favour one",
    "concurrent": "runs at once, sharing the machine",
    "interleaved": "runs alternate step by step; drift hits all alike",
    "single run": "one run",
}


def cpu_threshold(cores: int) -> float:
    return max(FOREIGN_CPU_CORES, FOREIGN_CPU_SHARE * cores)


def step_flag(d: StepDrift | None) -> str:
    """Why a step counts as touched by foreign load ("" if it does not, or nothing is known)."""
    if d is None:
        return ""
    why = []
    if d.foreign_cpu_mean is not None and d.foreign_cpu_mean >= cpu_threshold(d.cores):
        why.append(f"{d.foreign_cpu_mean:.1f} foreign CPU cores of {d.cores}")
    if d.gpu_foreign_procs:
        n = d.gpu_foreign_procs
        why.append(f"{n} foreign GPU process{'es' if n > 1 else ''} ({d.gpu_foreign_mib or 0:,.0f} MiB)")
    return ", ".join(why)


def flagged_steps(s: RunSummary) -> tuple[tuple[int, str], ...]:
    """(step, why) of every step of the run that ran beside foreign load."""
    return tuple((st.step, why) for st in s.steps if (why := step_flag(st.drift)))


def _steps(ns: Sequence[int]) -> str:
    return ("step " if len(ns) == 1 else "steps ") + ", ".join(str(n) for n in ns)


def drift_caveats(summaries: Iterable[RunSummary]) -> tuple[str, ...]:
    """One caveat per run with flagged steps, e.g. "vllm-sleep1: steps 2, 3 ran beside foreign load (up to
    1.3 foreign CPU cores of 2): their numbers may be slower than the engine is"; then one per run whose steps
    ran while the session's other runs used as much CPU."""
    summaries = list(summaries)
    out = []
    for s in summaries:
        flags = flagged_steps(s)
        if not flags:
            continue
        drifts = [st.drift for st in s.steps if st.drift is not None and step_flag(st.drift)]
        worst = []
        cpu = [d.foreign_cpu_mean for d in drifts if d.foreign_cpu_mean is not None
               and d.foreign_cpu_mean >= cpu_threshold(d.cores)]
        if cpu:
            worst.append(f"up to {max(cpu):.1f} foreign CPU cores of {drifts[0].cores}")
        gpu = [d for d in drifts if d.gpu_foreign_procs]
        if gpu:
            n = max(d.gpu_foreign_procs or 0 for d in gpu)
            worst.append(f"up to {n} foreign GPU process{'es' if n > 1 else ''}, "
                         f"{max(d.gpu_foreign_mib or 0.0 for d in gpu):,.0f} MiB")
        out.append(f"{s.label}: {_steps([n for n, _ in flags])} ran beside foreign load ({'; '.join(worst)}): "
                   "their numbers may be slower than the engine is")
    for s in summaries:
        peers = [(st.step, st.drift) for st in s.steps if st.drift is not None and st.drift.peer_cpu_mean is not None
                 and st.drift.peer_cpu_mean >= cpu_threshold(st.drift.cores)]
        if peers:
            most = max(d.peer_cpu_mean or 0.0 for _, d in peers)
            out.append(f"{s.label}: {_steps([n for n, _ in peers])} ran while the session's other runs used up to "
                       f"{most:.1f} CPU cores of {peers[0][1].cores} (e.g. a parked engine that keeps polling)")
    return tuple(out)


def session_design(state: SessionState) -> tuple[str, bool]:
    """(design, inferred): what the session header says, or for sessions before it said so, what the runs'
    times show (runs that overlap ran concurrently)."""
    runs = [r for r in state.runs.values() if r.info is not None]
    cfg = state.header.config if state.header is not None and isinstance(state.header.config, dict) else {}
    design = cfg.get("design")
    if design in DESIGNS:  # one run configured: nothing ran beside or between it (a cut session: as configured)
        configured = len(cfg["runs"]) if isinstance(cfg.get("runs"), list) else len(runs)
        return (design if configured != 1 else "single run"), False
    if len(runs) == 1:
        return "single run", False
    spans = sorted((r.first_t or 0.0, r.end.t if r.end is not None else r.last_t) for r in runs)
    overlap = any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    return ("concurrent" if overlap else "sequential"), True


def design_line(state: SessionState) -> str:
    """e.g. "design: interleaved (runs alternate step by step; drift hits all alike)"."""
    design, inferred = session_design(state)
    return f"design: {design} ({DESIGN_NOTES[design]})" + (", inferred from the run times" if inferred else "")


def design_lines(sources: Sequence[str], states: Iterable[SessionState]) -> list[str]:
    """The design line of each session of a report (numbered as the report numbers its sessions)."""
    seen: dict[int, SessionState] = {}
    for st in states:
        seen.setdefault(id(st), st)
    out = []
    for st in seen.values():
        line = design_line(st)
        if len(sources) > 1 and st.source in sources:
            line = f"session #{sources.index(st.source) + 1} {line}"
        out.append(line)
    return out
