"""The hub: one thread that owns the session states, folds events and hands the UI snapshots.

Why a thread of its own (Toolong's reader split): the Textual event loop must
stay free for key presses whatever the event rate, so it never folds, never
reads a file and never computes a percentile. The hub

- takes events from one source: a live inbox (the orchestrator's subscriber
  calls `push` from its threads: a deque append, never blocking the runner
  pipes), session files played back on a clock (replay: play/pause, 1x, 10x,
  max, seek by step), or `SessionTail`s of files still being written (follow);
- folds them into `TrackedSession`s;
- builds a `Snapshot` (`sgtui.tui.views`) at most `refresh_hz` times a second,
  and only after the UI acknowledged the previous one (`ack`, sent once the
  snapshot is painted), so a slow terminal gets fewer, never stale-queued,
  snapshots; with no new event, only a running phase's growing bar asks for
  more (IDLE_HZ), and an idle dashboard costs nothing.

Rates (`LIVE_HZ`, `REPLAY_HZ`; the app picks by mode): an event waits for the
next snapshot (up to one period; none after a calm moment), then the build,
the widgets and the paint: at 10 Hz the 99th percentile from arrival to
screen under a steady stream is ~120 ms by construction, at 30 Hz ~60-80 ms
(benchmarks/ui_rate.py). Live and follow run at 10 Hz: there the UI shares
the machine with the engine it measures, and each paint costs the event loop
a few ms whatever changed, so 30 Hz took ~2x the UI's CPU for a latency
nobody reads off a counter (benchmarks/ui_cpu.py). Replay (nothing is being
measured) keeps 30 Hz.

No Textual import: `post` is any callable (the app wraps `post_message`).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from sgtui.events import Event, Phase
from sgtui.options import ReportOptions
from sgtui.session import SessionReadError, SessionTail, read_session
from sgtui.tui.views import ReplayStatus, Snapshot, SnapshotBuilder, TrackedSession

SPEEDS = ("1x", "10x", "max")
_SPEED_FACTOR = {"1x": 1.0, "10x": 10.0}
#: Events applied per loop turn before the hub looks at its clock again (keeps snapshots flowing at any rate).
CHUNK = 20000
FOLLOW_POLL_S = 0.2
#: Follow mode: how often the hub asks /proc whether each session's sgtui is still alive. A session whose
#: sgtui died (kill -9, OOM killer) never gets its run_end: without this it would look running forever.
OWNER_CHECK_S = 1.0
#: Snapshot rate caps: live and follow (an engine is being measured on this machine), replay.
LIVE_HZ = 10.0
REPLAY_HZ = 30.0
#: Snapshots while nothing changes but a phase is running (its bar grows): a calmer rate.
IDLE_HZ = 4.0
ACK_TIMEOUT_S = 2.0
#: Events folded between two `gc.freeze()` calls. Folded events live as long as the session is shown
#: and hold no cycles, yet every full collection walked all of them: at 10k events/s that was 15% of
#: the process's CPU and 100 ms stalls. Frozen objects are skipped by the collector.
FREEZE_EVERY = 5000
#: The stream is "quiet" (bring the throttled numbers up to date) when at most QUIET_EVENTS events came
#: in the last QUIET_S seconds: GPU samples (5/s), engine gauges and a few log lines never stop during a
#: live run, so quiet means "calm" (offload, train, reload phases), not "silent".
QUIET_S = 0.5
QUIET_EVENTS = 30


class Hub:
    """Owns sessions; see the module docstring. Start with `start()`, stop with `stop()`."""

    def __init__(self, post: Callable[[Snapshot], None], *, mode: str = "live", paths: list[str] | None = None,
                 expected: list[str] | None = None, expected_steps: dict[str, int] | None = None,
                 refresh_hz: float = 30.0, speed: str = "max", playing: bool = True,
                 clock: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic,
                 on_error: Callable[[str], None] | None = None, source_label: str = "live",
                 options: ReportOptions = ReportOptions()) -> None:
        if mode not in ("live", "replay", "follow"):
            raise ValueError(f"hub mode {mode!r}")
        if speed not in SPEEDS:
            raise ValueError(f"replay speed {speed!r}: expected one of {', '.join(SPEEDS)}")
        self.post = post
        self.mode = mode
        self.paths = [str(p) for p in (paths or [])]
        self.clock = clock
        self.mono = mono
        self.on_error = on_error
        self.period = 1.0 / max(0.5, refresh_hz)
        if mode == "live":
            self.sessions = [TrackedSession(source_label, 0)]
        else:
            self.sessions = [TrackedSession(p, i) for i, p in enumerate(self.paths)]
        self.builder = SnapshotBuilder(self.sessions, "replay" if mode == "replay" else mode, expected=expected,
                                       expected_steps=expected_steps, mono=mono, on_done=self._heavy_done,
                                       options=options)
        self.spark_width = 60
        self.applied = 0
        # live inbox
        self._inbox: deque[Event] = deque()
        # replay
        self._events: list[list[Event]] = []
        self._cursor: list[int] = []
        self._t0: list[float] = []
        self._t_end: list[float] = []  # each session's latest event time (its file order may step back)
        self._shift: list[float] = []
        self._step_t: list[dict[int, float]] = []  # session -> step -> its first phase start (any run)
        #: session -> [(time, run label, step)]: where each run's steps start, what seek can reach
        self._points: list[list[tuple[float, str, int]]] = []
        self._keys: list[dict[str, str]] = []  # session -> run label -> column key
        self._focus = ""  # the run key last sought: wins ties under the playhead
        self._epoch = 0
        self._elapsed = 0.0
        self._duration = 0.0
        self.speed = speed
        self.playing = playing
        self._loading = mode == "replay"
        self._last_mono = 0.0
        # follow
        self._tails: list[SessionTail] = [SessionTail(p) for p in self.paths] if mode == "follow" else []
        self._next_poll = 0.0
        self._next_owner_check = 0.0
        # thread plumbing
        self._commands: deque[tuple] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ui_ready = threading.Event()
        self._ui_ready.set()
        self._posted_at = 0.0
        self._dirty = True
        self._needs_quiet = False
        self._silent = True
        self._heavy_ready = False
        self._frozen_at = 0
        self._last_change = 0.0
        self._recent: deque[tuple[float, int]] = deque()  # (when, events applied so far)
        self._quiet_base = 0  # events applied before the quiet window
        self._next_snap = 0.0
        self._sleeping = False
        self._thread: threading.Thread | None = None
        self.snapshots = 0

    def _heavy_done(self) -> None:
        """The summaries worker has results (its thread): take them in the next snapshot."""
        self._heavy_ready = True
        self._wake.set()

    # -- API for other threads ------------------------------------------------------------
    def push(self, event: Event) -> None:
        """Subscriber for the orchestrator: thread-safe, O(1), never blocks."""
        self._inbox.append(event)
        if self._sleeping:
            self._wake.set()

    def ack(self) -> None:
        """The UI has shown the last snapshot; the next one may come."""
        self._ui_ready.set()
        self._wake.set()

    def command(self, *cmd: object) -> None:
        """('toggle',) ('play',) ('pause',) ('speed', '10x') ('cycle_speed',) ('seek_step', n[, run key])
        ('seek_rel', +1/-1) ('seek_start',) ('seek_end',) ('refresh',)

        seek_step: step n of that run (default: the run under the playhead); a step the run does not
        have is refused (nothing moves; the UI says so, from `ReplayStatus.run_steps`). seek_rel: the
        previous/next step start of any run, all runs' steps in time order."""
        self._commands.append(cmd)
        self._wake.set()

    def set_spark_width(self, width: int) -> None:
        if width != self.spark_width:
            self.spark_width = max(8, width)
            self.command("refresh")

    def start(self) -> "Hub":
        self._thread = threading.Thread(target=self._main, name="sgtui-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread -----------------------------------------------------------------------
    def _main(self) -> None:
        try:
            if self.mode == "replay":
                self._load()
            while not self._stop.is_set():
                self._handle_commands()
                changed = self._ingest()
                now = self.mono()
                if self._heavy_ready:
                    self._heavy_ready = False
                    self._dirty = True
                if changed:
                    self._dirty = True
                    self._last_change = now
                    self._recent.append((now, self.applied))
                    if self.applied - self._frozen_at >= FREEZE_EVERY:
                        self._frozen_at = self.applied
                        gc.freeze()
                quiet = self._quiet(now)
                if self._should_snapshot(now, quiet):
                    self._snapshot(quiet)
                    now = self.mono()
                if changed and (self._inbox or self._replay_behind()):
                    continue  # more to fold right away
                self._sleep(now)
        except Exception as e:  # noqa: BLE001 - shown to the user, never a silent dead thread
            import traceback

            msg = f"hub: {type(e).__name__}: {e}"
            if self.on_error is not None:
                self.on_error(msg + "\n" + traceback.format_exc(limit=6))

    def _quiet(self, now: float) -> bool:
        recent = self._recent
        while recent and recent[0][0] < now - QUIET_S:
            base = recent.popleft()
            self._quiet_base = base[1]
        self._silent = not recent
        if not recent:
            return True
        return self.applied - self._quiet_base <= QUIET_EVENTS

    def _quiet_round_due(self, now: float) -> bool:
        """A quiet stream waits for its summaries round (`SnapshotBuilder.quiet_due_at`); a silent one
        does not. Snapshots with nothing new are not built before then."""
        return self._silent or now >= self.builder.quiet_due_at

    def _sleep(self, now: float) -> None:
        waits = [0.5]
        if self._dirty or self._running_phase():
            waits.append(max(0.0, self._next_snap - now))
        if self._needs_quiet and not self.builder.busy:
            # the next summaries round of a quiet stream, or the stream falling silent
            due = self.builder.quiet_due_at
            if not self._silent:
                due = min(due, self._last_change + QUIET_S + 0.01)
            waits.append(max(0.05, self._next_snap - now, due - now))
        if self.mode == "follow":
            waits.append(max(0.0, self._next_poll - now))
        if self.mode == "replay" and self.playing and not self._at_end():
            waits.append(0.02)
        timeout = max(0.001, min(waits))
        self._sleeping = True
        if not self._inbox and not self._commands:
            self._wake.wait(timeout)
        self._sleeping = False
        self._wake.clear()

    def _should_snapshot(self, now: float, quiet: bool) -> bool:
        if now < self._next_snap:
            return False
        if not self._ui_ready.is_set() and now - self._posted_at < ACK_TIMEOUT_S:
            return False
        if self._dirty or (quiet and self._needs_quiet and not self.builder.busy and self._quiet_round_due(now)):
            return True
        # nothing new, but a running phase grows on screen: a calmer rate
        return self._running_phase() and now - self._posted_at >= 1.0 / IDLE_HZ

    def _running_phase(self) -> bool:
        if self.mode == "replay" and not self.playing:
            return False
        for ts in self.sessions:
            for r in ts.state.runs.values():
                if r.open_phases and r.end is None:
                    return True
        return False

    def _snapshot(self, quiet: bool) -> None:
        snap = self.builder.build(self._nows(), spark_width=self.spark_width, quiet=quiet, silent=self._silent,
                                  replay=self._replay_status(), applied=self.applied)
        self._dirty = False
        # after a burst, snapshots go on until one is settled (percentiles and verdict up to date)
        self._needs_quiet = not snap.settled
        now = self.mono()
        self._posted_at = now
        self._next_snap = now + self.period
        self._ui_ready.clear()
        self.snapshots += 1
        self.post(snap)

    def _nows(self) -> list[float]:
        if self.mode != "replay":
            t = self.clock()
            return [t] * len(self.sessions)
        return [self._t0[i] + self._shift[i] + self._elapsed for i in range(len(self.sessions))]

    # -- sources ------------------------------------------------------------------------------
    def _ingest(self) -> bool:
        if self.mode == "live":
            return self._drain_inbox()
        if self.mode == "follow":
            return self._poll_tails()
        return self._advance_replay()

    def _drain_inbox(self) -> bool:
        inbox = self._inbox
        if not inbox:
            return False
        ts = self.sessions[0]
        n = 0
        pop = inbox.popleft
        apply = ts.apply
        while inbox and n < CHUNK:
            apply(pop())
            n += 1
        self.applied += n
        return True

    def _poll_tails(self) -> bool:
        now = self.mono()
        if now < self._next_poll:
            return False
        self._next_poll = now + FOLLOW_POLL_S
        changed = False
        for ts, tail in zip(self.sessions, self._tails):
            events = tail.poll()
            if tail.problems:
                ts.state.problems.extend(tail.problems)
                tail.problems.clear()
            for e in events:
                ts.apply(e)
            self.applied += len(events)
            changed = changed or bool(events)
        if changed:
            self._next_poll = now  # a backlog: read on at once
        elif now >= self._next_owner_check:  # only once caught up: a backlog is not a death
            self._next_owner_check = now + OWNER_CHECK_S
            changed = self._check_owners()
        return changed

    def _check_owners(self) -> bool:
        """Mark followed sessions whose sgtui is gone with runs unfinished (one /proc look each)."""
        from sgtui.sessions_index import owner_state, session_runs

        dead: dict[int, str] = {}
        for ts in self.sessions:
            st = ts.state
            runs = session_runs(st)
            if runs and all(r.end is not None for r in runs):
                continue
            try:
                state = owner_state(Path(st.source), st)
            except OSError:
                continue
            if state == "gone":
                pid = st.header.pid if st.header else 0
                dead[ts.index] = f"sgtui pid {pid} is gone; runs without run_end will never finish"
        if dead != self.builder.dead:
            self.builder.dead = dead
            return True
        return False

    # -- replay ---------------------------------------------------------------------------------
    def _load(self) -> None:
        for i, p in enumerate(self.paths):
            try:
                res = read_session(p)
            except SessionReadError as e:
                if self.on_error is not None:
                    self.on_error(str(e))
                res = None
            events = res.events if res is not None else []
            if res is not None:
                self.sessions[i].state.problems.extend(res.problems)
            self._events.append(events)
            t0 = events[0].t if events else 0.0
            self._t0.append(t0)
            self._t_end.append(max((e.t for e in events), default=t0))
            self._shift.append(0.0)
            self._cursor.append(0)
            steps: dict[int, float] = {}
            per_run: dict[tuple[str, int], float] = {}
            for e in events:
                if e.kind == "phase" and e.edge == "start":  # type: ignore[attr-defined]
                    s = e.step  # type: ignore[attr-defined]
                    if s not in steps or e.t < steps[s]:
                        steps[s] = e.t
                    k = (e.run, s)  # type: ignore[attr-defined]
                    if s >= 1 and (k not in per_run or e.t < per_run[k]):
                        per_run[k] = e.t
            self._step_t.append(steps)
            self._points.append(sorted((t, lbl, s) for (lbl, s), t in per_run.items()))
            self._apply_until(i, t0)  # open at the first event, not on a blank screen
        self._keys = self._run_keys()
        self._duration = max((self._t_end[i] - self._t0[i] for i, ev in enumerate(self._events) if ev), default=0.0)
        self._loading = False
        self._last_mono = self.mono()
        self._dirty = True

    def _at_end(self) -> bool:
        return all(c >= len(ev) for c, ev in zip(self._cursor, self._events))

    def _replay_behind(self) -> bool:
        return self.mode == "replay" and self.playing and self.speed == "max" and not self._at_end()

    def _apply_until(self, i: int, t_abs: float) -> int:
        events, c, ts = self._events[i], self._cursor[i], self.sessions[i]
        n = len(events)
        start = c
        apply = ts.apply
        while c < n and events[c].t <= t_abs:
            apply(events[c])
            c += 1
        self._cursor[i] = c
        self.applied += c - start
        return c - start

    def _advance_replay(self) -> bool:
        now = self.mono()
        dt = now - self._last_mono
        self._last_mono = now
        if not self.playing or self._loading:
            return False
        if self._at_end():
            self.playing = False
            self._dirty = True
            return False
        if self.speed == "max":
            # the elapsed time that applies about CHUNK more events, spread over the sessions
            per = max(1, CHUNK // max(1, len(self._events)))
            targets = []
            for i, ev in enumerate(self._events):
                c = self._cursor[i]
                j = c + per - 1
                if j < len(ev):  # never below the next event's time: a file whose clock steps back must not stall
                    targets.append(max(ev[c].t, ev[j].t) - self._t0[i] - self._shift[i])
            self._elapsed = min(targets) if targets else self._end_elapsed()
        else:
            self._elapsed += dt * _SPEED_FACTOR[self.speed]
        applied = 0
        for i in range(len(self._events)):
            applied += self._apply_until(i, self._t0[i] + self._shift[i] + self._elapsed)
        if self._at_end():
            self.playing = False
            self._elapsed = max(self._elapsed, self._end_elapsed())
            return True
        return applied > 0 or self.speed != "max"

    def _end_elapsed(self) -> float:
        return max((self._t_end[i] - self._t0[i] - self._shift[i] for i, ev in enumerate(self._events) if ev),
                   default=0.0)

    def _run_keys(self) -> list[dict[str, str]]:
        """Column keys of the runs with steps, named as `views.column_keys` names columns."""
        labels = [list(dict.fromkeys(lbl for _, lbl, _ in pts)) for pts in self._points]
        seen: dict[str, int] = {}
        for ls in labels:
            for lbl in ls:
                seen[lbl] = seen.get(lbl, 0) + 1
        return [{lbl: lbl if seen[lbl] == 1 or len(self.sessions) == 1 else f"{ts.stem}:{lbl}" for lbl in ls}
                for ts, ls in zip(self.sessions, labels)]

    def _aligned(self) -> list[tuple[float, str, int, int, str]]:
        """Every run's step starts on the replay clock: (position, key, step, session, label), in time order."""
        out = []
        for i, pts in enumerate(self._points):
            base = self._t0[i] + self._shift[i]
            out.extend((t - base, self._keys[i][lbl], s, i, lbl) for t, lbl, s in pts)
        out.sort(key=lambda p: (p[0], p[1] != self._focus))
        return out

    def _run_steps(self) -> list[tuple[str, tuple[int, ...]]]:
        out = []
        for i, pts in enumerate(self._points):
            per: dict[str, list[int]] = {}
            for _, lbl, s in pts:
                per.setdefault(lbl, []).append(s)
            out.extend((self._keys[i][lbl], tuple(sorted(set(v)))) for lbl, v in per.items())
        return out

    def _current(self) -> tuple[str, int]:
        """(run key, step) under the playhead: the latest step start at or before it (ties: the run last
        sought); before any, the first run with steps at step 0."""
        pts = self._aligned()
        if not pts:
            return "", 0
        cur: tuple[float, str, int, int, str] | None = None
        for p in pts:
            if p[0] <= self._elapsed + 1e-6:
                if cur is None or p[0] > cur[0] + 1e-6 or p[1] == self._focus:
                    cur = p
            else:
                break
        if cur is None:
            return pts[0][1], 0
        return cur[1], cur[2]

    def _replay_status(self) -> ReplayStatus | None:
        if self.mode != "replay":
            return None
        run, step = self._current() if not self._loading else ("", 0)
        run_steps = tuple(self._run_steps()) if not self._loading else ()
        keys = [k for k, _ in run_steps]
        return ReplayStatus(self.playing, self.speed, self._elapsed, self._duration, step, self._at_end(),
                            self._loading, run=run, steps=dict(run_steps).get(run, ()), run_steps=run_steps,
                            epoch=self._epoch, run_index=keys.index(run) + 1 if run in keys else 0)

    def _rebuild(self, i: int, t_abs: float) -> None:
        """Seek backwards: the fold only goes forward, so refold session i from its start."""
        old = self.sessions[i]
        ts = TrackedSession(old.state.source, i)
        ts.state.problems = old.state.problems
        self.sessions[i] = ts
        self._cursor[i] = 0
        self._epoch += 1
        self._apply_until(i, t_abs)

    def _seek_to(self, targets: list[float]) -> None:
        """targets[i]: absolute session time session i should show up to; sessions are aligned there."""
        base = min((targets[i] - self._t0[i] for i in range(len(targets))), default=0.0)
        rebuilt = False
        for i, t_abs in enumerate(targets):
            applied_t = self._events[i][self._cursor[i] - 1].t if self._cursor[i] else float("-inf")
            if t_abs < applied_t:
                self._rebuild(i, t_abs)
                rebuilt = True
            else:
                self._apply_until(i, t_abs)
            self._shift[i] = (t_abs - self._t0[i]) - base
        self._elapsed = base
        if rebuilt:
            self.builder.sessions = self.sessions
            self.builder.reset()
        self._dirty = True

    def _seek_start(self) -> None:
        self._focus = ""
        self._seek_to([self._t0[i] if ev else 0.0 for i, ev in enumerate(self._events)])

    def _seek_step(self, n: int, key: str | None = None) -> bool:
        """Step n of run `key` (default: the run under the playhead); n <= 0: the start. Sessions that
        have a run of the same name with that step are aligned on it, others on their own step n
        (its first start, any run), others keep their place. False (nothing moved): no such step."""
        if n <= 0:
            self._seek_start()
            return True
        if not key:
            key = self._current()[0]
        where = next(((i, lbl) for i, keys in enumerate(self._keys) for lbl, k in keys.items() if k == key), None)
        if where is None:
            return False
        i, label = where
        t = next((t for t, lbl, s in self._points[i] if lbl == label and s == n), None)
        if t is None:
            return False
        pos = t - self._t0[i] - self._shift[i]
        targets = []
        for j, ev in enumerate(self._events):
            if j == i:
                targets.append(t)
            elif not ev:
                targets.append(0.0)
            else:
                same = next((tj for tj, lbl, s in self._points[j] if lbl == label and s == n), None)
                if same is None:
                    same = self._step_t[j].get(n)
                if same is None:
                    same = min(self._t0[j] + self._shift[j] + pos, self._t_end[j])
                targets.append(same)
        self._focus = key
        self._seek_to(targets)
        return True

    def _seek_rel(self, delta: int) -> None:
        """The next (+1) or previous (-1) step start of any run."""
        pts = self._aligned()
        if delta > 0:
            nxt = next((p for p in pts if p[0] > self._elapsed + 1e-6), None)
            if nxt is not None:
                self._seek_step(nxt[2], nxt[1])
            return
        key, step = self._current()
        here = next((p[0] for p in pts if p[1] == key and p[2] == step), None)
        if here is None:
            return
        prev = [p for p in pts if p[0] < here - 1e-6]
        if prev:
            # the latest earlier start; among equal times, the run last sought
            last = max(p[0] for p in prev)
            p = next((q for q in prev if q[0] >= last - 1e-6 and q[1] == self._focus),
                     next(q for q in prev if q[0] >= last - 1e-6))
            self._seek_step(p[2], p[1])
        else:
            self._seek_start()

    def _handle_commands(self) -> None:
        while self._commands:
            cmd = self._commands.popleft()
            name = cmd[0]
            if name == "refresh":
                self.builder.reset()
                self._dirty = True
                continue
            if name == "finished":
                self.builder.finished = True
                self._dirty = True
                continue
            if self.mode != "replay" or self._loading:
                continue
            if name == "toggle":
                self._set_playing(not self.playing)
            elif name == "play":
                self._set_playing(True)
            elif name == "pause":
                self._set_playing(False)
            elif name == "speed":
                self.speed = str(cmd[1])
            elif name == "cycle_speed":
                self.speed = SPEEDS[(SPEEDS.index(self.speed) + 1) % len(SPEEDS)]
            elif name == "seek_step":
                self._seek_step(int(cmd[1]), str(cmd[2]) if len(cmd) > 2 and cmd[2] else None)  # type: ignore[call-overload]
            elif name == "seek_rel":
                self._seek_rel(int(cmd[1]))  # type: ignore[call-overload]
            elif name == "seek_start":
                self._seek_start()
            elif name == "seek_end":
                self._seek_to([self._t_end[i] if ev else 0.0 for i, ev in enumerate(self._events)])
            self._dirty = True

    def _set_playing(self, playing: bool) -> None:
        if playing and self._at_end():
            self._seek_start()  # play again from the start
        self.playing = playing
        self._last_mono = self.mono()


def first_phase_start(events: list[Event], step: int) -> float | None:
    """Time of the first phase start of an RL step (tests and seek share this definition)."""
    ts = [e.t for e in events if isinstance(e, Phase) and e.edge == "start" and e.step == step]
    return min(ts) if ts else None


def session_paths(paths: list[str | Path]) -> list[str]:
    return [str(p) for p in paths]
