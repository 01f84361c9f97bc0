"""The hub: one thread that owns the session states, folds events and hands the UI snapshots.

Why a thread of its own (Toolong's reader split): the Textual event loop must
stay free for key presses whatever the event rate, so it never folds, never
reads a file and never computes a percentile. The hub

- takes events from one source: a live inbox (the orchestrator's subscriber
  calls `push` from its threads: a deque append, never blocking the runner
  pipes), session files played back on a clock (replay: play/pause, 1x, 10x,
  max, seek by step: `sgtui.viewmodel.replay`), or files still being written
  (follow: `sgtui.follow`, which also tells when their sgtui is gone);
- folds them into `TrackedSession`s;
- builds a `Snapshot` (`sgtui.viewmodel.views`) at most `refresh_hz` times a second,
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

The UI steers it with typed commands (`sgtui.viewmodel.commands`). No Textual
import: `post` is any callable (the app wraps `post_message`).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from typing import Callable

from sgtui.events import Event
from sgtui.follow import FOLLOW_POLL_S, OWNER_CHECK_S, SessionFollower
from sgtui.gcpause import gc_paused
from sgtui.options import ReportOptions
from sgtui.session import SessionReadError, read_session
from sgtui.viewmodel import commands as C
from sgtui.viewmodel.commands import check_speed
from sgtui.viewmodel.replay import CHUNK, ReplayClock
from sgtui.viewmodel.snapshot import SnapshotBuilder
from sgtui.viewmodel.views import ReplayStatus, Snapshot, TrackedSession

#: Snapshot rate caps: live and follow (an engine is being measured on this machine), replay.
LIVE_HZ = 10.0
REPLAY_HZ = 30.0
#: Snapshots while nothing changes but a phase is running (its bar grows): a calmer rate.
IDLE_HZ = 4.0
#: Snapshots while a replay rushes through its file at speed max: each build and paint takes the fold's CPU
#: (the GIL), and no one reads numbers moving that fast: a 1M-event replay settled 1.11x sooner at 2 Hz than
#: at 4, and 1.12x sooner again at 1 Hz (medians of 4 alternated rounds, benchmarks/replay_load.py
#: --baseline).
RUSH_HZ = 1.0
#: ... and at most one paint per this many times the last paint took: a paint of a huge session (thousands
#: of timeline lanes) takes the UI thread for a second, during which the fold gets little of the GIL.
RUSH_PAINT_SHARE = 4.0
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
        self._applied = 0  # events folded from the inbox or the tails (replay: the clock counts its own)
        self._inbox: deque[Event] = deque()  # live
        # replay: the clock exists once the files are read (in the hub thread); until then, "loading"
        self.replay: ReplayClock | None = None
        self._speed, self._playing = check_speed(speed), playing  # what the clock starts with
        self._refolded = False  # a backward seek replaced sessions: the builder's caches are stale
        self._last_mono = 0.0
        # follow
        self.follower = SessionFollower(self.paths, poll_s=FOLLOW_POLL_S, owner_every=OWNER_CHECK_S,
                                        check_done=False, mono=mono) if mode == "follow" else None
        # thread plumbing
        self._commands: deque[C.Command] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ui_ready = threading.Event()
        self._ui_ready.set()
        self._posted_at = 0.0
        self._acked_at = 0.0  # when the UI last said it had painted (`ack`)
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

    @property
    def applied(self) -> int:
        """Events folded so far (a replay's refolds after backward seeks included)."""
        return self._applied + (self.replay.applied if self.replay is not None else 0)

    @property
    def speed(self) -> str:
        return self.replay.speed if self.replay is not None else self._speed

    @property
    def playing(self) -> bool:
        return self.replay.playing if self.replay is not None else self._playing

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
        self._acked_at = self.mono()
        self._ui_ready.set()
        self._wake.set()

    def command(self, cmd: C.Command) -> None:
        """One of `sgtui.viewmodel.commands` (thread-safe; carried out in the hub thread). Replay commands do
        nothing in the other modes or while the files are read; a refused seek moves nothing."""
        if not isinstance(cmd, C.COMMANDS):
            raise TypeError(f"hub command: expected one of sgtui.viewmodel.commands, got {cmd!r}")
        self._commands.append(cmd)
        self._wake.set()

    def set_spark_width(self, width: int) -> None:
        if width != self.spark_width:
            self.spark_width = max(8, width)
            self.command(C.Refresh())

    def start(self) -> Hub:
        self._thread = threading.Thread(target=self._main, name="sgtui-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for ts in self.sessions:
            ts.close()

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
                if changed and (self._inbox or (self.replay is not None and self.replay.behind())):
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
        if self.follower is not None:
            waits.append(max(0.0, self.follower.next_poll - now))
        if self.replay is not None and self.replay.playing and not self.replay.at_end():
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
        gap = self.period
        if self.replay is not None and self.replay.behind():  # speed max: the fold needs the CPU (the GIL)
            painted = self._acked_at - self._posted_at  # how long the UI took to paint the last one
            gap = max(1.0 / RUSH_HZ, RUSH_PAINT_SHARE * painted)
        self._posted_at = now
        self._next_snap = now + gap
        self._ui_ready.clear()
        self.snapshots += 1
        self.post(snap)

    def _nows(self) -> list[float]:
        if self.replay is None:
            t = self.clock()
            return [t] * len(self.sessions)
        return self.replay.nows()

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
        self._applied += n
        return True

    def _poll_tails(self) -> bool:
        """Follow: the tails' new events (every FOLLOW_POLL_S, at once while behind); once caught up (a
        backlog is not a death), the sessions whose sgtui is gone with runs unfinished are marked dead."""
        f = self.follower
        assert f is not None
        if not f.due():
            return False
        changed = False
        for ts, batch in zip(self.sessions, f.read()):
            ts.state.problems.extend(batch.problems)
            for e in batch.events:
                ts.apply(e)
            self._applied += len(batch.events)
            changed = changed or bool(batch.events)
        if changed or not f.check_owners([ts.state for ts in self.sessions]):
            return changed
        dead = {ts.index: o.why_dead for ts, o in zip(self.sessions, f.owners) if o.dead}
        if dead != self.builder.dead:
            self.builder.dead = dead
            return True
        return False

    # -- replay ---------------------------------------------------------------------------------
    def _load(self) -> None:
        timelines = []
        # The collector stays off until the files' events are frozen: re-enabled between (as `read_session`
        # does on its own), its first young-generation pass would walk every event just read, only to have
        # them frozen right after (a quarter of the read's time on a large session).
        with gc_paused():
            for i, p in enumerate(self.paths):
                try:
                    res = read_session(p, reduce_tail=True)
                except SessionReadError as e:
                    if self.on_error is not None:
                        self.on_error(str(e))
                    res = None
                if res is not None:
                    self.sessions[i].state.problems.extend(res.problems)
                # the tail's steps, reduced by the read's helper meanwhile, are adopted once folded
                self.sessions[i].keep_tail(res)
                timelines.append(res.events if res is not None else [])
            gc.freeze()  # the files' events live as long as the replay (FREEZE_EVERY): no collection walks them
        self.replay = ReplayClock(timelines, [ts.apply for ts in self.sessions], self._refold,
                                  speed=self._speed, playing=self._playing)
        self._last_mono = self.mono()
        self._dirty = True

    def _refold(self, i: int) -> Callable[[Event], None]:
        """A backward seek: session i starts over in a fresh fold (the clock replays it); its sink."""
        old = self.sessions[i]
        ts = TrackedSession(old.state.source, i)
        ts.state.problems = old.state.problems
        old.close()  # the fresh fold's steps are reduced anew (a backward seek, long after the load)
        self.sessions[i] = ts
        self._refolded = True
        return ts.apply

    def _advance_replay(self) -> bool:
        now = self.mono()
        dt = now - self._last_mono
        self._last_mono = now
        r = self.replay
        if r is None:
            return False
        was_playing = r.playing
        changed = r.advance(dt)
        if was_playing and not r.playing:
            self._dirty = True  # the end reached: the bar says so
        return changed

    def _replay_status(self) -> ReplayStatus | None:
        if self.mode != "replay":
            return None
        if self.replay is None:
            return ReplayStatus(self._playing, self._speed, 0.0, 0.0, 0, True, loading=True)
        return self.replay.status()

    def _handle_commands(self) -> None:
        while self._commands:
            cmd = self._commands.popleft()
            if isinstance(cmd, C.Refresh):
                self.builder.reset()
            elif isinstance(cmd, C.Finished):
                self.builder.finished = True
            elif self.replay is None:
                continue  # a replay command outside replay, or before the files are read
            else:
                self.replay.do(cmd)
                if isinstance(cmd, (C.TogglePlay, C.Play, C.Pause)):
                    self._last_mono = self.mono()
                if self._refolded:
                    self._refolded = False
                    self.builder.sessions = self.sessions
                    self.builder.reset()
            self._dirty = True
