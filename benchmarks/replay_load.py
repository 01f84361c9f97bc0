"""Replay load: how long from `sgtui replay big.jsonl` to a dashboard that shows the whole session?

Builds a session of about `--events` events (two runs, 64 requests a step with 64 ITL values each, the
shape of a long real session), then, alternating `--rounds` times (3) and keeping the best of each (the machine
is shared and noisy):
  bare:   a plain `orjson.loads` loop over the file's lines (the floor for any JSONL reader);
  replay: what `sgtui replay` runs (its check of the file, then `make_app("replay", ...)`: headless driver,
          200x50, speed max) from start until the first painted frame that holds every event with settled
          numbers (percentiles and verdict computed, nothing lagging); also when every event was first on
          screen, so the fold's share and the summary round's share of the time read apart.
Each round's line prints that round's own times, the replay's CPU (its process and the helper that
decodes the file's tail) and the memory it holds once settled; the summary lines print the best of each
over the rounds, and the ratio bare / replay (1.0 would be "as fast as parsing alone"; the target is
>= 0.25, i.e. settled within 4x of the bare parse).

Memory held costs time too: the bare parse holds nothing, while the replay holds every event (~0.7 GiB),
and a VM that backs its memory on first touch charges each fresh page (the 2-core CI VM, 2026-12-06:
3.5-4.4 s a GiB never touched, ~0.5 for pages the guest had just freed; which ones a replay gets varies
from run to run). The first line says what this machine charged for untouched memory as the run began
(`fresh_memory_cost`).

Each replay runs in a process of its own (`--child`), from this tree or, with `--baseline REV`, from
REV's sgtui/ (`trees.export_tree`), the two in turns, alternating which goes first: the last lines then
give this tree's settled time over REV's, median and best of the rounds.

    .venv/bin/python benchmarks/replay_load.py [--events 1000000] [--baseline 2d70fdc]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from statistics import median
from pathlib import Path
from typing import Callable, TextIO

import orjson

from trees import ROOT, export_tree, run_child

THIS = "this tree"


def bare(path: Path) -> float:
    t0 = time.perf_counter()
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                loads(line)
    return time.perf_counter() - t0


def fresh_memory_cost(mib: int = 256) -> float:
    """Seconds a GiB of memory never touched before costs this machine (one write a page)."""
    size = mib << 20
    t0 = time.perf_counter()
    with mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as m:
        for i in range(0, size, mmap.PAGESIZE):
            m[i] = 1
    return (time.perf_counter() - t0) * 1024 / mib


def rss_mib() -> float:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * mmap.PAGESIZE / 2**20
    except OSError:
        return 0.0


def cpu_seconds() -> float:
    """CPU of this process (all threads) and of its children waited for (the split read's helper)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def replay(path: Path, n: int, timeout: float = 600.0) -> tuple[float, float, float]:
    """Seconds from start to the first frame with all n events, and to the first such frame settled; MiB
    the process holds more than before at that frame."""
    from sgtui.tui.app import make_app

    rss0 = rss_mib()
    t0 = time.perf_counter()
    cli_check(path)
    app = make_app("replay", paths=[path], speed="max", playing=True)
    shown = None
    async with app.run_test(size=(200, 50)) as pilot:
        while time.perf_counter() - t0 < timeout:
            snap = app.snapshot
            if snap is not None and snap.events >= n:
                if shown is None:
                    shown = time.perf_counter() - t0
                if snap.settled and not snap.heavy_behind:
                    await pilot.pause()  # let the compositor paint that snapshot
                    return shown, time.perf_counter() - t0, rss_mib() - rss0
            await asyncio.sleep(0.01)
    raise SystemExit(f"no settled frame with all {n} events within {timeout:.0f} s")


def cli_check(path: Path) -> None:
    """What `sgtui replay` does with a file before its UI opens: reads the first lines (`check_session`); trees
    before 2026-12-06 read and folded the whole session there (`load_sessions`), then the UI read it again."""
    try:
        from sgtui.session import check_session
    except ImportError:
        from sgtui.export import load_sessions

        load_sessions([path])
    else:
        check_session(path)


@dataclass(frozen=True)
class Round:
    """One alternation's own times (seconds): bare parse, replay to all events shown, to settled."""

    bare: float
    shown: float
    settled: float
    cpu: float = 0.0  # CPU seconds the replay took (all threads, and its helper): on a shared machine, wall time lies
    held: float = 0.0  # MiB the replay held at its settled frame
    tree: str = THIS  # whose code replayed

    @property
    def ratio(self) -> float:
        return self.bare / self.settled

    def line(self, i: int) -> str:
        return (f"round {i}{'' if self.tree == THIS else f' ({self.tree})'}: bare {self.bare:.2f} s, replay: "
                f"all events shown {self.shown:.2f} s, settled {self.settled:.2f} s (cpu {self.cpu:.2f} s, "
                f"{self.held:.0f} MiB held), ratio bare / settled {self.ratio:.3f}")


def run_rounds(rounds: int, one_round: Callable[[str], Round], trees: tuple[str, ...] = (THIS,),
               out: TextIO = sys.stderr) -> dict[str, list[Round]]:
    """Alternate `rounds` times, each tree once a round (which goes first alternates too), printing each
    round's own times as it ends; every tree's rounds."""
    done: dict[str, list[Round]] = {t: [] for t in trees}
    for i in range(rounds):
        for tree in trees if i % 2 == 0 else trees[::-1]:
            r = one_round(tree)
            done[tree].append(r)
            print(r.line(i + 1), file=out, flush=True)
    return done


def best(rounds: list[Round]) -> Round:
    """The best of each kind over the rounds (each may come from another round)."""
    return Round(min(r.bare for r in rounds), min(r.shown for r in rounds), min(r.settled for r in rounds),
                 min(r.cpu for r in rounds), min(r.held for r in rounds), rounds[0].tree)


def measure(path: Path, n: int, tree: str, where: Path) -> Round:
    """A bare parse here, then a replay in a process of its own on the code under `where`."""
    b = bare(path)
    got = run_child([__file__, "--child", str(where), str(path), str(n)], where, f"the replay of {tree}", "sgtui")
    return Round(b, got["shown"], got["settled"], got["cpu"], got["held"], tree)


def child(where: str, path: str, n: int) -> None:
    """One replay on the code under `where`; its numbers as a JSON line."""
    sys.path.insert(0, where)
    import sgtui

    c0 = cpu_seconds()
    shown, settled, held = asyncio.run(replay(Path(path), n))
    print(json.dumps({"shown": shown, "settled": settled, "held": held, "cpu": cpu_seconds() - c0,
                      "sgtui": sgtui.__file__}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of bare and replay; best of each kept")
    ap.add_argument("--baseline", default="", help="a git revision whose sgtui/ replays alongside, in turns")
    ap.add_argument("--child", nargs=3, metavar=("TREE", "SESSION", "EVENTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    sys.path.insert(0, str(ROOT))
    from sgtui.events import encode
    from tests.gen import big_session

    trees = {THIS: ROOT}
    if args.baseline:
        trees = {args.baseline: export_tree(args.baseline), THIS: ROOT}
    fresh = fresh_memory_cost()  # before the session is built: its freed pages would be cheap again
    evs = big_session(args.events)
    n = len(evs)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.jsonl"
        with open(path, "wb") as f:
            f.writelines(encode(e) for e in evs)
        del evs
        print(f"session: {n:,} events, {path.stat().st_size / 2**20:.0f} MiB; this machine's fresh memory: "
              f"{fresh:.2f} s a GiB", file=sys.stderr)
        done = run_rounds(args.rounds, lambda t: measure(path, n, t, trees[t]), tuple(trees))
    for tree, rounds in done.items():
        b = best(rounds)
        if len(done) > 1:
            print(f"{tree}:")
        print(f"bare orjson.loads      : {b.bare:8.2f} s ({n / b.bare:,.0f} events/s)")
        print(f"replay, all shown      : {b.shown:8.2f} s (numbers may still be computing)")
        print(f"replay, settled frame  : {b.settled:8.2f} s ({n / b.settled:,.0f} events/s)")
        # three decimals: 0.245 is not the target, and two would print it as 0.25
        print(f"ratio bare / replay    : {b.ratio:8.3f} (target >= 0.25: settled within 4x of the bare parse)")
    if args.baseline:
        mine, base = done[THIS], done[args.baseline]
        by_median = median([r.settled for r in mine]) / median([r.settled for r in base])
        print(f"settled, {THIS} / {args.baseline}: median {by_median:.2f}, best "
              f"{best(mine).settled / best(base).settled:.2f} (below 1: {THIS} is faster)")

if __name__ == "__main__":
    main()
