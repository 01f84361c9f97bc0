"""benchmarks/replay_load.py: each round's line gives that round's own times; the summary the best of each."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import replay_load  # noqa: E402


def test_each_round_prints_its_own_times_and_the_summary_the_best():
    rounds = iter([replay_load.Round(2.0, 10.0, 20.0, 25.0, 700.0), replay_load.Round(3.0, 12.0, 30.0, 35.0, 650.0),
                   replay_load.Round(1.5, 11.0, 19.0, 24.0, 690.0)])
    out = io.StringIO()
    done = replay_load.run_rounds(3, lambda tree: next(rounds), out=out)
    lines = out.getvalue().splitlines()
    # round 2 was slower than round 1: its line says so (it used to repeat round 1's best)
    assert lines[1] == ("round 2: bare 3.00 s, replay: all events shown 12.00 s, settled 30.00 s (cpu 35.00 s, "
                        "650 MiB held), ratio bare / settled 0.100")
    assert lines[0].startswith("round 1: bare 2.00 s") and lines[2].startswith("round 3: bare 1.50 s")
    best = replay_load.best(done[replay_load.THIS])
    assert (best.bare, best.shown, best.settled, best.cpu, best.held) == (1.5, 10.0, 19.0, 24.0, 650.0)


def test_two_trees_take_turns_and_each_round_names_its_tree():
    order = []

    def one(tree):
        order.append(tree)
        return replay_load.Round(2.0, 5.0, 10.0 if tree == "abc123" else 8.0, tree=tree)

    out = io.StringIO()
    done = replay_load.run_rounds(3, one, ("abc123", replay_load.THIS), out)
    assert order == ["abc123", "this tree", "this tree", "abc123", "abc123", "this tree"]  # who goes first alternates
    assert [len(rs) for rs in done.values()] == [3, 3]
    assert out.getvalue().splitlines()[0].startswith("round 1 (abc123): bare 2.00 s")
    assert out.getvalue().splitlines()[1].startswith("round 1: bare 2.00 s")


def test_a_replay_runs_on_the_tree_it_names(tmp_path):
    """The child replays a small session on the code under the path it is given, and says whose code ran."""
    from sgtui.events import encode
    from tests.gen import generate

    evs = generate(steps=2, requests=4, itl_len=4)
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"".join(encode(e) for e in evs))
    r = replay_load.measure(path, len(evs), "this tree", replay_load.ROOT)
    assert r.tree == "this tree" and 0 < r.shown <= r.settled and r.cpu > 0
    with pytest.raises(SystemExit, match="imported"):
        replay_load.measure(path, len(evs), "elsewhere", tmp_path)  # no sgtui there: this tree's would run


def test_the_machine_s_fresh_memory_and_the_process_s_are_measured():
    assert replay_load.fresh_memory_cost(8) > 0.0
    before = replay_load.rss_mib()
    held = bytearray(64 << 20)
    held[::4096] = b"\1" * len(held[::4096])
    assert replay_load.rss_mib() - before >= 60  # the 64 MiB just touched
    assert replay_load.cpu_seconds() > 0.0


def test_a_baseline_that_is_no_revision_is_one_line():
    import trees

    with pytest.raises(SystemExit) as e:
        trees.export_tree("no-such-revision-here")
    assert str(e.value).startswith("--baseline no-such-revision-here: not a revision") and "\n" not in str(e.value)
