"""Ingest speed: read + fold a 1M-event session vs a bare `orjson.loads` loop over the same lines.

Prints events/s of both, their ratio (target: at least 0.5) and the wall time of `sgtui report` on the file.
Usage: python benchmarks/ingest.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sgtui.events import encode  # noqa: E402
from sgtui.session import read_session  # noqa: E402
from sgtui.state import SessionState  # noqa: E402
from tests.gen import big_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    evs = big_session(args.events)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.jsonl"
        path.write_bytes(b"".join(encode(e) for e in evs))
        data = path.read_bytes()
        lines = data.split(b"\n")
        n = len(evs)
        print(f"session: {n:,} events, {len(data) / 2**20:.0f} MiB")
        best_bare = best_fold = float("inf")
        for _ in range(3):  # alternate, keep the best of each: the machine is shared and noisy
            t0 = time.perf_counter()
            loads = orjson.loads
            for line in lines:
                if line:
                    loads(line)
            best_bare = min(best_bare, time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = read_session(path)
            SessionState(str(path)).apply_all(res.events)
            best_fold = min(best_fold, time.perf_counter() - t0)
        print(f"bare orjson.loads : {n / best_bare:12,.0f} events/s ({best_bare:.2f} s)")
        print(f"read + fold       : {n / best_fold:12,.0f} events/s ({best_fold:.2f} s)")
        print(f"ratio             : {best_bare / best_fold:.2f} (target >= 0.5)")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sgtui.cli", "report", str(path)], check=True,
                       stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
        print(f"sgtui report      : {time.perf_counter() - t0:.2f} s wall")


if __name__ == "__main__":
    main()
