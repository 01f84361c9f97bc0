"""`--goodput` as vLLM's: parsing, the count on a crafted session against a hand count, and the same count in
every report format (txt, md, json, csv, vllm-json) and through the CLI (report, headless run, detached run)."""

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from sgtui import events as E
from sgtui.export import render
from sgtui.goodput import GoodputError, is_good, join_goodput_argv, parse_goodput, run_goodput, step_goodput
from sgtui.options import ReportOptions
from sgtui.session import SessionWriter, make_header
from sgtui.state import load_state

REPO = Path(__file__).resolve().parent.parent
SLOS = (("ttft", 250.0), ("tpot", 125.0), ("e2el", 1500.0))  # 0.25 s, 0.125 s, 1.5 s: exact in binary


def req(step, start, ttft, latency, out, error="", slot=0):
    return E.Request(t=start + latency, run="vllm-keep", step=step, start=start, ttft=ttft, latency=latency,
                     itl=[(latency - ttft) / (out - 1)] * (out - 1) if out > 1 and not error else [],
                     prompt_tokens=10, output_tokens=0 if error else out, error=error, slot=slot)


def crafted_events():
    """Two steps of 2.0 s rollout each. Hand count against SLOS (ttft<=0.25, tpot<=0.125, e2el<=1.5 s):
    step 1  A ttft 0.25 (= SLO), tpot 1.0/8 = 0.125 (= SLO), e2el 1.25      good (vLLM compares with >=)
            B ttft 0.5                                                       bad (ttft)
            C one output token: tpot counts as 0 for goodput                 good
            D failed                                                         neither good nor completed
    step 2  E ttft 0.125, e2el 1.75                                          bad (e2el)
            F tpot 0.5 / 2 = 0.25                                            bad (tpot)
            G ttft 0.125, tpot 0.5 / 4 = 0.125, e2el 0.625                   good
    -> 3 good of 6 completed over 4.0 s: 0.75 req/s; step 1 2 good / 2.0 s, step 2 1 good / 2.0 s."""
    t = 1000.0
    ev = [E.SessionHeader(t=t, id="goodput"),
          E.RunStart(t=t, run="vllm-keep", backend="vllm", strategy="keep", device="cpu", engine_version="0.0",
                     config={"concurrency": 4, "served_model_name": "policy"})]
    for step, rollout_start, reqs in (
        (1, 1001.0, [req(1, 1001.0, 0.25, 1.25, 9), req(1, 1001.0, 0.5, 1.5, 9, slot=1),
                     req(1, 1001.0, 0.125, 0.125, 1, slot=2), req(1, 1001.125, 0.0, 0.1, 0, "HTTP 500: boom", 3)]),
        (2, 1010.0, [req(2, 1010.0, 0.125, 1.75, 17), req(2, 1010.0, 0.0625, 0.5625, 3, slot=1),
                     req(2, 1010.0, 0.125, 0.625, 5, slot=2)]),
    ):
        ev.append(E.Phase(t=rollout_start, run="vllm-keep", step=step, name="rollout", edge="start"))
        ev += sorted(reqs, key=lambda r: r.t)
        ev.append(E.Phase(t=rollout_start + 2.0, run="vllm-keep", step=step, name="rollout", edge="end"))
        ev.append(E.Phase(t=rollout_start + 2.0, run="vllm-keep", step=step, name="train", edge="start"))
        ev.append(E.Phase(t=rollout_start + 5.0, run="vllm-keep", step=step, name="train", edge="end"))
    ev.append(E.RunEnd(t=1020.0, run="vllm-keep", status="ok"))
    return ev


def crafted_state():
    st = load_state(crafted_events())
    st.source = "sessions/crafted.jsonl"
    return st


def write_session(path: Path) -> Path:
    with SessionWriter(path) as w:
        w.write(make_header(["test"], {}))
        for e in crafted_events()[1:]:
            w.write(e)
    return path


# ---- parsing ------------------------------------------------------------------------------------------------


def test_parse_goodput_accepts_vllm_pairs_in_any_grouping():
    assert parse_goodput(["ttft:500", "tpot:50"]) == (("ttft", 500.0), ("tpot", 50.0))
    assert parse_goodput(["ttft:500 tpot:50,e2el:2e4"]) == (("ttft", 500.0), ("tpot", 50.0), ("e2el", 20000.0))
    assert parse_goodput(["E2EL:1.5"]) == (("e2el", 1.5),)
    assert parse_goodput([]) == () and parse_goodput([" "]) == ()


@pytest.mark.parametrize("bad", ["ttft", "ttft:", "ttft:abc", "itl:5", "ttft:0", "tpot:-1", "e2el:nan",
                                 "ttft:inf", "ttft:5 ttft:6", ":5"])
def test_parse_goodput_rejects_in_one_line_naming_the_flag(bad):
    with pytest.raises(GoodputError) as e:
        parse_goodput([bad])
    msg = str(e.value)
    assert msg.startswith("--goodput ") and "ttft, tpot, e2el" in msg and "> 0" in msg and "\n" not in msg


def test_join_goodput_argv_takes_vllm_spelling_but_not_paths():
    argv = ["report", "a.jsonl", "--goodput", "ttft:500", "tpot:50", "b.jsonl", "-f", "md"]
    assert join_goodput_argv(argv) == ["report", "a.jsonl", "--goodput", "ttft:500 tpot:50", "b.jsonl", "-f", "md"]
    assert join_goodput_argv(["--goodput=ttft:1", "e2el:2", "--no-ui"]) == ["--goodput", "ttft:1 e2el:2", "--no-ui"]
    assert join_goodput_argv(["--goodput", "ttft:1", "--", "tpot:2"]) == ["--goodput", "ttft:1", "--", "tpot:2"]
    assert join_goodput_argv(["report", "x:/a.jsonl"]) == ["report", "x:/a.jsonl"]


# ---- the count --------------------------------------------------------------------------------------------


def test_goodput_of_crafted_session_equals_hand_count():
    st = crafted_state()
    run = st.runs["vllm-keep"]
    g = run_goodput(run, SLOS)
    assert (g.good, g.completed, g.duration_s) == (3, 6, 4.0)
    assert g.request_goodput == 0.75
    s1, s2 = step_goodput(run.steps[1], SLOS), step_goodput(run.steps[2], SLOS)
    assert (s1.good, s1.completed, s1.request_goodput) == (2, 3, 1.0)
    assert (s2.good, s2.completed, s2.request_goodput) == (1, 3, 0.5)
    # one SLO at a time: ttft fails B only; tpot fails F only; e2el fails E only (D failed: never good)
    for slo, good in ((("ttft", 250.0),), 5), ((("tpot", 125.0),), 5), ((("e2el", 1500.0),), 5):
        assert run_goodput(run, slo).good == good
    # just under the boundary A sits on, A turns bad
    assert run_goodput(run, (("ttft", 249.999),)).good == 4
    failed = next(r for r in run.steps[1].requests if r.error)
    assert not is_good(failed, ())  # a failed request is never good, even without SLOs


# ---- every format -----------------------------------------------------------------------------------------


def test_goodput_shows_in_every_format_with_the_same_count():
    st = crafted_state()
    opts = ReportOptions(goodput=SLOS)
    txt = render("txt", [st], opts)
    row = next(line for line in txt.splitlines() if line.startswith("Goodput req/s"))
    assert row.split()[-1] == "0.75"
    assert next(line for line in txt.splitlines() if "good / ok requests" in line).split()[-1] == "3/6"
    assert "ttft<=250ms, tpot<=125ms, e2el<=1500ms" in txt
    assert max(len(line) for line in txt.splitlines()) <= 80

    md = render("md", [st], opts)
    assert "| goodput req/s, all steps (ttft<=250ms, tpot<=125ms, e2el<=1500ms) | 0.75 (3/6 ok) |" in md

    doc = orjson.loads(render("json", [st], opts))
    run = doc["runs"][0]
    assert run["request_goodput"] == 0.75 and run["goodput"]["good"] == 3 and run["goodput"]["completed"] == 6
    assert doc["goodput_slo_ms"] == {"ttft": 250.0, "tpot": 125.0, "e2el": 1500.0}

    requests = list(csv.DictReader(io.StringIO(render("csv-requests", [st], opts))))
    assert sum(int(r["good"]) for r in requests) == 3
    steps = {r["step"]: r for r in csv.DictReader(io.StringIO(render("csv", [st], opts)))}
    assert (steps["1"]["good"], float(steps["1"]["request_goodput"])) == ("2", 1.0)
    assert (steps["2"]["good"], float(steps["2"]["request_goodput"])) == ("1", 0.5)

    vj = orjson.loads(render("vllm-json", [st], opts))
    assert vj["request_goodput"] == 0.75 and vj["sgtui_goodput_slo_ms"]["tpot"] == 125.0


def test_without_slos_reports_say_nothing_of_goodput():
    st = crafted_state()
    assert "goodput" not in render("txt", [st]).lower() and "goodput" not in render("md", [st]).lower()
    assert orjson.loads(render("json", [st]))["runs"][0]["request_goodput"] is None
    assert orjson.loads(render("vllm-json", [st]))["request_goodput"] is None  # vLLM writes null too
    rows = list(csv.DictReader(io.StringIO(render("csv", [st]))))
    assert all(r["good"] == "" and r["request_goodput"] == "" for r in rows)


# ---- the CLI ----------------------------------------------------------------------------------------------


def sgtui(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sgtui.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env={**os.environ, **(env or {})})


def test_report_takes_goodput_spelled_as_vllm(tmp_path):
    session = write_session(tmp_path / "crafted.jsonl")
    r = sgtui("report", str(session), "--goodput", "ttft:250", "tpot:125", "e2el:1500", "-f", "vllm-json")
    assert r.returncode == 0, r.stderr
    assert orjson.loads(r.stdout)["request_goodput"] == 0.75
    r = sgtui("report", str(session), "--goodput", "ttft:250", "--goodput", "tpot:125 e2el:1500")
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("Goodput req/s") and line.endswith("0.75") for line in r.stdout.splitlines())
    for bad in (["--goodput", "ttft:fast"], ["--goodput", "itl:5"]):
        r = sgtui("report", str(session), *bad)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"sgtui: error: --goodput '{bad[1]}'")


def test_bad_goodput_stops_a_run_before_it_starts(tmp_path):
    r = sgtui("--no-ui", "--goodput", "ttft:0", "-o", str(tmp_path / "s"))
    assert r.returncode == 2 and "--goodput 'ttft:0'" in r.stderr and not (tmp_path / "s").exists()


def test_headless_run_exports_goodput(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    out = tmp_path / "sessions"
    standin = REPO / "tests" / "fixtures" / "standin_python.sh"
    r = sgtui("--no-ui", "--run", f"vllm@{standin}", "--model", str(model), "--skip-preflight", "-o", str(out),
              "--export", "vllm-json,json", "--goodput", "e2el:60000", "ttft:60000",
              env={"SGTUI_TEST_PYTHON": sys.executable, "SGTUI_FAKE_MODE": "ok"})
    assert r.returncode == 0, r.stderr
    assert "Goodput req/s" in r.stdout  # the report printed at the end
    (vj,) = out.glob("*.vllm.json")
    doc = orjson.loads(vj.read_bytes())
    assert doc["sgtui_goodput_slo_ms"] == {"e2el": 60000.0, "ttft": 60000.0}
    # the stand-in runner sends no requests: goodput is a number (vLLM's null means "no --goodput")
    assert doc["request_goodput"] == 0.0
    (js,) = [p for p in out.glob("*.json") if not p.name.endswith(".vllm.json")]
    assert orjson.loads(js.read_bytes())["runs"][0]["goodput"]["slo_ms"] == {"e2el": 60000.0, "ttft": 60000.0}


def test_detached_orchestrator_gets_the_slos(tmp_path):
    """The detached orchestrator writes the reports at the end: it must be told the SLOs and every other report
    option (argv: the whole ReportOptions as one JSON argument)."""
    from sgtui.config import RunConfig
    from sgtui.tui import detach

    opts = ReportOptions(goodput=(("ttft", 18.2), ("e2el", 1e3)), include_first_step=True, log_to="tensorboard",
                         log_dir="tb")
    proc = detach.spawn([RunConfig(label="vllm-keep", backend="vllm", strategy="keep")], tmp_path / "s.jsonl", ["txt"],
                        python="/bin/echo", opts=opts)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while not detach.log_path(tmp_path / "s.jsonl").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = detach.log_path(tmp_path / "s.jsonl").read_text()
    assert ReportOptions.from_json(line.split("--report-options ", 1)[1].strip()) == opts
