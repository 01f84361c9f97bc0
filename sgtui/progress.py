"""Headless progress (`--no-ui`, `attach --no-ui`, a detached orchestrator's log): what each run is doing now.

Two parts, kept apart so the numbers can be tested without a terminal or a clock:

- `progress_rows(state, now)`: pure. The folded session state (`sgtui.state`) -> one `ProgressRow` per run:
  its current phase, step N/M, requests done/expected in the step's rollout, output tok/s, seconds in the phase.
  `event_lines(e, state)` is the text the progress prints for one event (pure too).
- Two printers that show them: `LinePrinter` for a log file or a pipe (every line starts with an ISO 8601 UTC
  timestamp; phase starts and ends, errors, and a heartbeat per running run at least every `heartbeat_s` of
  silence about it, so a 200 s engine start shows up in the log as it goes) and `LivePrinter` for a terminal
  (a rich Live table refreshed a few times a second, the same event lines printed above it).
  Both take their clock as an argument (Unix seconds, `time.time` by default): tests move it by hand.

No IO happens here beyond printing to the console given, and nothing imports torch, vllm or sglang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sgtui.events import Error, Event, Phase, RunEnd, RunStart, SessionHeader
from sgtui.state import RunState, SessionState, step_summary

#: A running rollout's tok/s is shown once it has run this long (a first request 10 ms in is no rate).
MIN_RATE_S = 0.5
#: Default seconds of silence about a running run after which the line printer says where it is.
HEARTBEAT_S = 10.0
BAR_WIDTH = 24


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run was asked to do, where the run's own start event does not say (crafted or older sessions)."""

    steps: int = 0  # RL steps (0: unknown)
    requests: int = 0  # requests per rollout (0: unknown)


@dataclass(frozen=True, slots=True)
class ProgressRow:
    run: str
    status: str  # running | ok | failed | cancelled
    phase: str  # the phase open now ("" when none is)
    step: int  # the open phase's step (0: setup, shutdown, --interleave turns), else the latest RL step seen
    steps: int  # RL steps planned (0: unknown)
    phase_s: float | None  # seconds in the open phase so far (None: no phase open)
    last_phase: str  # the phase that ended last ("" when none has)
    rollout_step: int  # the step whose rollout the request numbers are of (0: no rollout yet)
    requests_done: int  # finished requests of that rollout, errors included
    request_errors: int
    requests_expected: int  # 0: unknown
    tok_s: float | None  # output tokens / rollout wall time (so far, while it runs); None: no rate yet
    rollout_running: bool
    elapsed_s: float  # since the run's first event (to its end once it ended)

    @property
    def where(self) -> str:
        """`step 2/3`, `step 2` (plan unknown), `setup` (before step 1), `turn` (--interleave park/unpark)."""
        if self.phase in ("park", "unpark"):
            return "turn"
        if self.step <= 0:
            return "setup"
        return f"step {self.step}/{self.steps}" if self.steps else f"step {self.step}"

    @property
    def requests_text(self) -> str:
        """`37/64 requests`, `37 requests` (plan unknown), plus `, 2 errors` when any failed."""
        n = f"{self.requests_done}/{self.requests_expected}" if self.requests_expected else f"{self.requests_done}"
        err = f", {self.request_errors} errors" if self.request_errors else ""
        return f"{n} requests{err}"


def _plan(run: RunState, plans: Mapping[str, Plan] | None) -> Plan:
    given = (plans or {}).get(run.label)
    if given is not None and (given.steps or given.requests):
        return given
    cfg = run.info.config if run.info is not None else {}
    steps, requests = cfg.get("num_steps", 0), cfg.get("num_rollouts", 0)
    return Plan(steps if isinstance(steps, int) else 0, requests if isinstance(requests, int) else 0)


def run_row(run: RunState, now: float, plan: Plan = Plan()) -> ProgressRow:
    """One run's progress at `now` (Unix seconds). Pure: reads the run state only."""
    open_spans = list(run.open_phases.values())
    current = max(open_spans, key=lambda s: s.start) if open_spans and run.status == "running" else None
    ended = [s for s in run.timeline if s.end is not None]
    last = max(ended, key=lambda s: s.end).name if ended else ""  # type: ignore[arg-type, return-value]
    rl = run.rl_steps
    step = current.step if current is not None else (rl[-1] if rl else 0)  # open step-0 phase: setup/turn
    # The request numbers are those of the latest rollout: live while it runs, final after.
    rollout_step = 0
    for n in reversed(rl):
        if "rollout" in run.steps[n].phases or run.steps[n].requests:
            rollout_step = n
            break
    done = errors = tokens = 0
    tok_s: float | None = None
    running = False
    if rollout_step:
        st = run.steps[rollout_step]
        done = len(st.requests)
        for r in st.requests:
            if r.error:
                errors += 1
            else:
                tokens += r.output_tokens
        span = st.phases.get("rollout")
        if span is not None:
            running = span.end is None and run.status == "running"
            wall = span.duration_at(now) if running else (span.duration or 0.0)
            if wall >= (MIN_RATE_S if running else 1e-9):
                tok_s = tokens / wall
    first = run.first_t if run.first_t is not None else now
    end = run.end.t if run.end is not None else now
    return ProgressRow(
        run=run.label, status=run.status, phase=current.name if current is not None else "", step=step,
        steps=plan.steps, phase_s=max(0.0, current.duration_at(now)) if current is not None else None,
        last_phase=last, rollout_step=rollout_step, requests_done=done, request_errors=errors,
        requests_expected=plan.requests, tok_s=tok_s, rollout_running=running, elapsed_s=max(0.0, end - first))


def progress_rows(state: SessionState, now: float, plans: Mapping[str, Plan] | None = None) -> list[ProgressRow]:
    """Every run of the session, in the order they appeared, as progress rows at `now`. Pure."""
    return [run_row(r, now, _plan(r, plans)) for r in state.runs.values()]


# ---- text ----------------------------------------------------------------------------------------------------

def stamp(t: float) -> str:
    """ISO 8601 UTC to the second: `2026-01-31T12:03:04Z`."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _secs(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def heartbeat_text(row: ProgressRow) -> str:
    """`vllm-sleep1 step 2/3 rollout 37/64 requests, 812 tok/s, 41 s`; `... setup startup, 41 s`."""
    if row.status != "running":
        return f"{row.run} {row.status}, {_secs(row.elapsed_s)}"
    if row.phase:
        parts = []
        if row.phase == "rollout" and row.rollout_step == row.step:
            parts.append(row.requests_text)
            if row.tok_s is not None:
                parts.append(f"{row.tok_s:.0f} tok/s")
        parts.append(_secs(row.phase_s or 0.0))
        sep = " " if row.phase == "rollout" and row.rollout_step == row.step else ", "
        return f"{row.run} {row.where} {row.phase}{sep}{', '.join(parts)}"
    after = f" after {row.last_phase}" if row.last_phase else ""
    return f"{row.run} {row.where} between phases{after}, run {_secs(row.elapsed_s)}"


def _where(e: Phase) -> str:
    return f"step {e.step}" if e.step else "turn" if e.name in ("park", "unpark") else "setup"


def event_lines(e: Event, state: SessionState, *, starts: bool = True, session_path: str | None = None) -> list[str]:
    """The progress lines (rich markup, dynamic text escaped) for one event, after it was folded into `state`.
    starts=False leaves phase starts out (the live display shows them)."""
    out: list[str] = []
    if isinstance(e, SessionHeader) and session_path is not None:
        out.append(f"session: {escape(session_path)}")
    elif isinstance(e, RunStart):
        out.append(f"[bold]{escape(e.run)}[/]: {escape(f'{e.backend} {e.engine_version} strategy={e.strategy}')} "
                   f"on {escape(e.device)}")
    elif isinstance(e, Phase) and e.edge == "start":
        if starts:
            detail = f" [dim]{escape(e.detail)}[/]" if e.detail else ""
            out.append(f"  {escape(e.run)} {_where(e)} {escape(e.name)} started{detail}")
    elif isinstance(e, Phase):
        run = state.runs.get(e.run)
        span = run.steps[e.step].phases.get(e.name) if run is not None and e.step in run.steps else None
        dur = f"{span.duration:.2f}s" if span and span.duration is not None else "?"
        mark = "" if e.ok else " [red]FAILED[/]"
        out.append(f"  {escape(e.run)} {_where(e)} {escape(e.name):<11} {dur:>9}{mark} [dim]{escape(e.detail)}[/]")
        if e.name == "weight_sync" and e.step and run is not None:
            s = step_summary(run.steps[e.step])
            m = s.metrics
            out.append(f"  {escape(e.run)} step {e.step} done: {m.output_throughput:.1f} tok/s, "
                       f"TTFT {m.mean_ttft_ms:.0f} ms, {m.completed} ok / {m.errors} errors, "
                       f"step {s.total_s or 0:.2f}s")
    elif isinstance(e, Error):
        out.append(f"  [red]{escape(e.run)} error \\[{escape(e.category)}][/] {escape(e.message)}")
        if e.advice:
            out.append(f"    -> {escape(e.advice)}")
    elif isinstance(e, RunEnd):
        style = {"ok": "green", "failed": "red"}.get(e.status, "yellow")
        out.append(f"[{style}]{escape(e.run)}: {escape(e.status)}[/] {escape(e.detail)}")
    return out


def _run_of(e: Event) -> str | None:
    return getattr(e, "run", None) or None


# ---- printers ------------------------------------------------------------------------------------------------

class LinePrinter:
    """Plain lines for a pipe or a log file: `<ISO UTC time> <text>`; a heartbeat per running run whenever no
    line about it was printed for `heartbeat_s` seconds of `clock`. Not thread-safe by itself: the caller
    (`sgtui.headless.Progress`) serialises calls."""

    live = False

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.time,
                 heartbeat_s: float = HEARTBEAT_S, session_path: str | None = None) -> None:
        self.console = console
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.session_path = session_path
        self.last_said: dict[str, float] = {}  # run -> clock time of the last line about it

    def on_event(self, e: Event, state: SessionState) -> list[str]:
        lines = event_lines(e, state, starts=True, session_path=self.session_path)
        if not lines:
            return []
        run = _run_of(e)
        if run is not None:
            self.last_said[run] = self.clock()
        ts = stamp(e.t if e.t > 0 else self.clock())
        return [f"{ts} {line}" for line in lines]

    def on_tick(self, state: SessionState, plans: Mapping[str, Plan] | None = None) -> list[str]:
        """Heartbeat lines due at clock() (cheap when none is: called on every event)."""
        now = self.clock()
        out = []
        for run in state.runs.values():
            if run.status != "running":
                continue
            last = self.last_said.setdefault(run.label, now)
            if now - last >= self.heartbeat_s:
                self.last_said[run.label] = now
                out.append(f"{stamp(now)} {escape(heartbeat_text(run_row(run, now, _plan(run, plans))))}")
        return out

    def write(self, lines: list[str]) -> None:
        for line in lines:
            self.console.print(line)

    def start(self, rows: Callable[[], list[ProgressRow]]) -> None:
        pass

    def stop(self) -> None:
        pass


def progress_table(rows: list[ProgressRow]) -> Table:
    """The live display: one line per run."""
    t = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=False)
    # fixed minimum widths: the table does not jitter as phases and numbers change
    for name, justify, width in (("run", "left", 0), ("where", "left", 9), ("phase", "left", 14),
                                 ("", "left", BAR_WIDTH), ("requests", "right", 14), ("tok/s", "right", 6),
                                 ("time", "right", 7)):
        t.add_column(name, justify=justify, no_wrap=True, min_width=width or None)  # type: ignore[arg-type]
    for r in rows:
        if r.status != "running":
            style = {"ok": "green", "failed": "red"}.get(r.status, "yellow")
            t.add_row(r.run, r.where, Text(r.status, style=style), "", r.requests_text if r.rollout_step else "",
                      f"{r.tok_s:.0f}" if r.tok_s is not None else "", _secs(r.elapsed_s))
            continue
        phase = r.phase or (f"after {r.last_phase}" if r.last_phase else "starting")
        if r.rollout_step and r.requests_expected:
            bar: RenderableType = ProgressBar(total=r.requests_expected, completed=min(r.requests_done,
                                                                                       r.requests_expected),
                                              width=BAR_WIDTH)
        elif r.rollout_running:
            bar = ProgressBar(total=None, width=BAR_WIDTH)  # pulses: rollout size unknown
        else:
            bar = ""
        t.add_row(Text(r.run, style="bold"), r.where, Text(phase, style="cyan"), bar,
                  r.requests_text if r.rollout_step else "", f"{r.tok_s:.0f}" if r.tok_s is not None else "",
                  _secs(r.phase_s if r.phase_s is not None else r.elapsed_s))
    return t


class LivePrinter:
    """A terminal: a rich Live table (refreshed `refresh_per_second`) under the event lines, which print above it
    (phase ends, step summaries, errors, run ends; phase starts are the table's). Lock order: the Live's refresh
    thread takes the state lock inside `rows()`; callers must print with the state lock released."""

    live = True

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.time, refresh_per_second: float = 4.0,
                 session_path: str | None = None) -> None:
        self.console = console
        self.clock = clock
        self.refresh_per_second = refresh_per_second
        self.session_path = session_path
        self._live = None
        self._rows: Callable[[], list[ProgressRow]] = list

    def on_event(self, e: Event, state: SessionState) -> list[str]:
        lines = event_lines(e, state, starts=False, session_path=self.session_path)
        if not lines:
            return []
        hms = datetime.fromtimestamp(e.t if e.t > 0 else self.clock(), timezone.utc).strftime("%H:%M:%S")
        return [f"[dim]{hms}[/] {line}" for line in lines]

    def on_tick(self, state: SessionState, plans: Mapping[str, Plan] | None = None) -> list[str]:
        return []  # the table is the heartbeat

    def write(self, lines: list[str]) -> None:
        for line in lines:
            self.console.print(line)

    def render(self) -> RenderableType:
        rows = self._rows()
        return progress_table(rows) if rows else Text("waiting for the first run to start ...", style="dim")

    def start(self, rows: Callable[[], list[ProgressRow]]) -> None:
        from rich.live import Live

        self._rows = rows
        if self._live is None:
            # stdout stays alone (the report goes there); stray stderr writes print above the table
            self._live = Live(console=self.console, get_renderable=self.render, transient=True,
                              refresh_per_second=self.refresh_per_second, redirect_stdout=False,
                              redirect_stderr=True)
            self._live.start()

    def stop(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()


def use_live(console: Console) -> bool:
    """A live display only where it can redraw: a real terminal, not a file, a pipe or TERM=dumb. The stream
    itself is asked too: FORCE_COLOR (set by many CI systems) makes rich call a pipe a terminal, and cursor
    movements in a log file are noise."""
    if not console.is_terminal or console.is_dumb_terminal:
        return False
    isatty = getattr(console.file, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # closed
        return False


def make_printer(console: Console, *, live: bool | None = None, clock: Callable[[], float] = time.time,
                 heartbeat_s: float = HEARTBEAT_S, session_path: str | None = None) -> LinePrinter | LivePrinter:
    if live is None:
        live = use_live(console)
    if live:
        return LivePrinter(console, clock=clock, session_path=session_path)
    return LinePrinter(console, clock=clock, heartbeat_s=heartbeat_s, session_path=session_path)


class Ticker:
    """Calls `tick` every `every` seconds on a daemon thread until stopped (the line printer's heartbeats)."""

    def __init__(self, tick: Callable[[], None], every: float) -> None:
        self.tick, self.every = tick, every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sgtui-progress-ticker", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.tick()
            except Exception:  # noqa: BLE001, S110 - a heartbeat must never take the run down
                pass

    def stop(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2.0)
