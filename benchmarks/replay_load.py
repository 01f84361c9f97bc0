"""Replay load: how long from `sgtui replay big.jsonl` to a dashboard that shows the whole session?

Builds a session of about `--events` events (two runs, 64 requests a step with 64 ITL values each, the
shape of a long real session), then, alternating `--rounds` times (3) and keeping the best of each (the machine
is shared and noisy):
  bare:   a plain `orjson.loads` loop over the file's lines (the floor for any JSONL reader);
  replay: the app the CLI runs (`make_app("replay", ...)`, headless driver, 200x50, speed max) from
          start until the first painted frame that holds every event with settled numbers
          (percentiles and verdict computed, nothing lagging); also when every event was first on
          screen, so the fold's share and the summary round's share of the time read apart.
Prints both times and the ratio bare / replay (1.0 would be "as fast as parsing alone").

    .venv/bin/python benchmarks/replay_load.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sgtui.events import encode  # noqa: E402
from sgtui.tui.app import make_app  # noqa: E402
from tests.gen import big_session  # noqa: E402


def bare(path: Path) -> float:
    t0 = time.perf_counter()
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                loads(line)
    return time.perf_counter() - t0


async def replay(path: Path, n: int, timeout: float = 600.0) -> tuple[float, float]:
    """Seconds from start to the first frame with all n events, and to the first such frame settled."""
    app = make_app("replay", paths=[path], speed="max", playing=True)
    t0 = time.perf_counter()
    shown = None
    async with app.run_test(size=(200, 50)) as pilot:
        while time.perf_counter() - t0 < timeout:
            snap = app.snapshot
            if snap is not None and snap.events >= n:
                if shown is None:
                    shown = time.perf_counter() - t0
                if snap.settled and not snap.heavy_behind:
                    await pilot.pause()  # let the compositor paint that snapshot
                    return shown, time.perf_counter() - t0
            await asyncio.sleep(0.01)
    raise SystemExit(f"no settled frame with all {n} events within {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of bare and replay; best of each kept")
    args = ap.parse_args()
    evs = big_session(args.events)
    n = len(evs)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.jsonl"
        with open(path, "wb") as f:
            f.writelines(encode(e) for e in evs)
        del evs
        print(f"session: {n:,} events, {path.stat().st_size / 2**20:.0f} MiB", file=sys.stderr)
        best_bare = best_shown = best_replay = float("inf")
        for i in range(args.rounds):
            best_bare = min(best_bare, bare(path))
            shown, settled = asyncio.run(replay(path, n))
            best_shown, best_replay = min(best_shown, shown), min(best_replay, settled)
            print(f"round {i + 1}: bare {best_bare:.2f} s, replay: all events shown {best_shown:.2f} s, "
                  f"settled {best_replay:.2f} s", file=sys.stderr)
    print(f"bare orjson.loads      : {best_bare:8.2f} s ({n / best_bare:,.0f} events/s)")
    print(f"replay, all shown      : {best_shown:8.2f} s (numbers may still be computing)")
    print(f"replay, settled frame  : {best_replay:8.2f} s ({n / best_replay:,.0f} events/s)")
    print(f"ratio bare / replay    : {best_bare / best_replay:8.2f}")


if __name__ == "__main__":
    main()
