"""Exports of one or more sessions: txt (80-column report), md, json, csv (steps table), csv-requests
(requests table), trace, vllm-json, html (one self-contained page with charts).

API:
    load_sessions(paths) -> list[SessionState]          tolerant read of each file (problems kept)
    combined(states) -> Combined                        runs of every session side by side, unique labels
    render(fmt, states) -> str                          fmt in FORMATS
    write_exports(states, base, formats, opts) -> list[Path]  base.txt, base.json, ... next to the session,
                                                        then opts.log_to's tracker runs

Every number comes from `sgtui.state` and `sgtui.verdict`, so a report of a
replayed session equals what the live run showed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sgtui.labels import run_labels
from sgtui.options import ReportOptions
from sgtui.session import read_session
from sgtui.state import GpuState, RunState, RunSummary, SessionState, run_summary
from sgtui.verdict import Verdict, verdict

FORMATS = ("txt", "md", "json", "csv", "csv-requests", "trace", "vllm-json", "html")
EXTENSIONS = {"txt": ".txt", "md": ".md", "json": ".json", "csv": ".csv", "csv-requests": ".requests.csv",
              "trace": ".trace.json", "vllm-json": ".vllm.json", "html": ".html"}


@dataclass
class Combined:
    """Runs of one or several sessions, labelled uniquely (session stem prefixed on collisions)."""

    runs: list[tuple[str, RunState, GpuState, SessionState]]  # (label, run, its session's GPU state, session)
    summaries: list[RunSummary]
    verdict: Verdict
    sources: list[str]
    problems: list[str]
    options: ReportOptions = ReportOptions()


def load_sessions(paths: list[str | Path]) -> list[SessionState]:
    states = []
    for p in paths:
        res = read_session(p)
        st = SessionState(str(p)).apply_all(res.events)
        st.problems = res.problems
        states.append(st)
    return states


def combined(states: list[SessionState], opts: ReportOptions = ReportOptions()) -> Combined:
    # Short and unambiguous, as the dashboard's columns: `sgtui.labels` tags a colliding label with its
    # session's position on the command line (the sources list them).
    own = [[label for label, run in st.runs.items() if not (label == "session" and run.info is None)] for st in states]
    runs = []
    summaries = []
    for st, labels, shown_labels in zip(states, own, run_labels(own)):
        for label, shown in zip(labels, shown_labels):
            run = st.runs[label]
            runs.append((shown, run, st.gpu, st))
            s = run_summary(run, st.gpu, opts.include_first_step)
            if shown != label:
                s = dataclasses.replace(s, label=shown, profile=s.profile and dataclasses.replace(s.profile, label=shown))
            summaries.append(s)
    problems = [p for st in states for p in st.problems]
    return Combined(runs, summaries, verdict(summaries, opts), [st.source for st in states], problems, opts)


def render(fmt: str, states: list[SessionState], opts: ReportOptions = ReportOptions()) -> str:
    comb = combined(states, opts)
    if fmt == "txt":
        from sgtui.export.text import render_text

        return render_text(comb)
    if fmt == "md":
        from sgtui.export.markdown import render_markdown

        return render_markdown(comb)
    if fmt == "json":
        from sgtui.export.jsonout import render_json

        return render_json(comb)
    if fmt == "csv":
        from sgtui.export.csvout import render_csv

        return render_csv(comb)
    if fmt == "csv-requests":
        from sgtui.export.csvout import render_requests_csv

        return render_requests_csv(comb)
    if fmt == "trace":
        from sgtui.export.trace import render_trace

        return render_trace(comb)
    if fmt == "vllm-json":
        from sgtui.export.vllm_json import render_vllm_json

        return render_vllm_json(comb)
    if fmt == "html":
        from sgtui.export.html import render_html  # imports matplotlib: only when a page is asked for

        return render_html(comb)
    raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


class ExportError(Exception):
    """One line for the user: a report that could not be written or logged (the session itself is safe)."""


def write_exports(states: list[SessionState], base: Path, formats: list[str],
                  opts: ReportOptions = ReportOptions()) -> list[Path]:
    """Every format next to the session, then the tracker runs of `opts.log_to` (their directories are
    returned too). The one place the end of a run writes its reports: headless, detached and the UI."""
    out = []
    for fmt in formats:
        path = base.with_name(base.name + EXTENSIONS[fmt])
        path.write_text(render(fmt, states, opts))
        out.append(path)
    if opts.log_to:
        from sgtui import trackers

        try:
            lines = trackers.log_session(states, opts.log_to, Path(opts.log_dir))
        except trackers.TrackerError as e:
            raise ExportError(str(e)) from None
        out += [Path(line.split(" -> ", 1)[1]) for line in lines]
    return out
