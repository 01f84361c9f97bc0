"""The exports people take to other tools (issue 15): a trace of several sessions that Perfetto shows side by side
(each session from 0, its own tracks), CSV tables pandas reads as they are, a Mermaid gantt in the Markdown,
and one self-contained HTML page with charts, opened in a real headless browser where Debian's chromium is
installed (.ci/run installs it)."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from html import escape
from pathlib import Path

import orjson
import pytest

from sgtui.export import EXTENSIONS, FORMATS, combined, load_sessions, render, write_exports
from sgtui.export.trace import SESSION_PID_STRIDE
from sgtui.findings import finding_line

REPO = Path(__file__).resolve().parent.parent
SESSIONS = REPO / "sessions"
# Two GPU sessions recorded five days apart (2026-11-28 and 2026-12-03): both have GPU samples.
DAY1 = SESSIONS / "20261128T095500Z-vllm-sleep1-training-h200.jsonl"
DAY2 = SESSIONS / "20261203T221836Z-vllm-sleep1_vs_sglang-release-training-h200-1b.jsonl"
GPU_SESSION = DAY2


@pytest.fixture(scope="module")
def two_days():
    return load_sessions([DAY1, DAY2])


# -- trace ------------------------------------------------------------------------------------------------------


def test_trace_of_two_sessions_starts_each_at_zero_with_its_own_tracks(two_days):
    doc = orjson.loads(render("trace", two_days))
    ev = doc["traceEvents"]
    meta = doc["sgtui"]["sessions"]
    assert len(meta) == 2 and meta[1]["t0_unix"] - meta[0]["t0_unix"] > 24 * 3600  # recorded days apart
    by_session: dict[int, list[float]] = {}
    for e in ev:
        if "ts" in e:
            by_session.setdefault(e["pid"] // SESSION_PID_STRIDE, []).append(e["ts"])
    assert set(by_session) == {1, 2}
    for n, ts in by_session.items():
        assert min(ts) == 0, f"session #{n} starts at {min(ts)} us"
        assert max(ts) < 3600e6, f"session #{n}: relative times, not Unix times"
    # GPU counters: one process per session, never shared
    counter_pids = {e["pid"] for e in ev if e["ph"] == "C"}
    assert counter_pids == {m["gpu_pid"] for m in meta} and len(counter_pids) == 2
    assert {pid // SESSION_PID_STRIDE for pid in counter_pids} == {1, 2}
    # every run's phases live in a process of its own session, and no process holds two runs
    names = {e["pid"]: e["args"]["name"] for e in ev if e.get("name") == "process_name"}
    for m in meta:
        for label, pid in m["run_pids"].items():
            assert pid // SESSION_PID_STRIDE == m["session"] and names[pid] == label
            phases = [e for e in ev if e.get("cat") == "phase" and e["pid"] == pid]
            assert {"rollout", "train"} <= {e["name"] for e in phases}
    run_pids = [pid for m in meta for pid in m["run_pids"].values()]
    assert len(run_pids) == len(set(run_pids)) == 3  # vllm-sleep1#1; vllm-sleep1#2, sglang-release
    assert {"vllm-sleep1#1", "vllm-sleep1#2", "sglang-release"} <= set(names.values())
    gpu_names = [names[m["gpu_pid"]] for m in meta]
    assert gpu_names[0] != gpu_names[1] and all(n.startswith("GPUs") for n in gpu_names)


# -- CSV --------------------------------------------------------------------------------------------------------


KEYS = ["session", "session_id", "run", "engine", "engine_version", "strategy"]


def test_csv_is_two_tables_with_session_engine_and_version_columns(two_days, tmp_path):
    steps_text, requests_text = render("csv", two_days), render("csv-requests", two_days)
    steps = list(csv.DictReader(io.StringIO(steps_text)))
    requests = list(csv.DictReader(io.StringIO(requests_text)))
    # one table per file: the header is the first line, every row has every key filled
    for text, rows in ((steps_text, steps), (requests_text, requests)):
        header = text.splitlines()[0].split(",")
        assert header[:len(KEYS)] == KEYS and "row_type" not in header
        assert rows and all(r[k] for r in rows for k in KEYS)
    assert {r["session"] for r in steps} == {DAY1.stem, DAY2.stem}
    assert {r["session"] for r in requests} == {DAY1.stem, DAY2.stem}
    assert {(r["run"], r["engine"], r["strategy"]) for r in steps} == {
        ("vllm-sleep1#1", "vllm", "sleep1"), ("vllm-sleep1#2", "vllm", "sleep1"),
        ("sglang-release", "sglang", "release")}
    assert "rollout_s" in steps[0] and "ttft_s" not in steps[0]
    assert "ttft_s" in requests[0] and "rollout_s" not in requests[0]
    # the tables join on (session, run, step): every request's step has a step row
    step_keys = {(r["session"], r["run"], r["step"]) for r in steps}
    assert {(r["session"], r["run"], r["step"]) for r in requests} <= step_keys
    comb = combined(two_days)
    assert len(requests) == sum(len(run.steps[n].requests) for _l, run, _g, _s in comb.runs for n in run.rl_steps)
    assert len(steps) == sum(len(s.steps) for s in comb.summaries)
    # written next to the session as two files
    paths = write_exports(two_days, tmp_path / "s", ["csv", "csv-requests"])
    assert [p.name for p in paths] == ["s.csv", "s.requests.csv"]
    assert "csv-requests" in FORMATS and EXTENSIONS["csv-requests"] == ".requests.csv"


def test_csv_tables_read_with_pandas_as_they_are(two_days, tmp_path):
    import pandas as pd  # a dev dependency: this test runs wherever the suite does
    (steps_path, requests_path) = write_exports(two_days, tmp_path / "s", ["csv", "csv-requests"])
    steps, requests = pd.read_csv(steps_path), pd.read_csv(requests_path)
    assert steps["step_total_s"].dtype.kind == "f" and requests["ttft_s"].dtype.kind == "f"
    merged = requests.merge(steps, on=["session", "run", "step"], suffixes=("", "_step"))
    assert len(merged) == len(requests)


# -- Markdown gantt ---------------------------------------------------------------------------------------------


TASK = re.compile(r"^    (?P<name>[^:#;]+?) :(?P<id>\w+), (?P<start>\d+), (?P<end>\d+)$")


def test_markdown_has_a_mermaid_gantt_of_one_step_per_run():
    states = load_sessions([GPU_SESSION])
    md = render("md", states).splitlines()
    start = md.index("```mermaid")
    end = md.index("```", start + 1)
    block = md[start + 1:end]
    assert block[0] == "gantt"
    assert any(line.strip() == "dateFormat x" for line in block)
    assert any(re.fullmatch(r"tickInterval [1-9][0-9]*second", line.strip()) for line in block)
    assert all(line.startswith("    ") for line in block[1:]), "one statement per line, indented"
    sections: dict[str, list[re.Match]] = {}
    current = None
    for line in block[1:]:
        s = line.strip()
        if s.startswith(("title ", "dateFormat ", "axisFormat ", "tickInterval ")):
            assert current is None, "settings come before the first section"
        elif s.startswith("section "):
            current = s[len("section "):]
            sections[current] = []
        else:
            m = TASK.match(line)
            assert m and current is not None, line
            sections[current].append(m)
    comb = combined(states)
    assert list(sections) == [f"{label} (step 2)" for label, *_ in comb.runs]
    ids = [m["id"] for tasks in sections.values() for m in tasks]
    assert len(ids) == len(set(ids)), "task ids are unique"
    for (label, run, _g, _st), tasks in zip(comb.runs, sections.values()):
        finished = [n for n, sp in run.steps[2].phases.items() if sp.end is not None]
        assert [m["name"].split()[0] for m in tasks] == sorted(finished, key=lambda n: run.steps[2].phases[n].start)
        assert all(int(m["end"]) > int(m["start"]) for m in tasks)
        assert int(tasks[0]["start"]) == 0
        # the durations are the session's: the name carries it, the bar spans it (to the millisecond)
        for m in tasks:
            sp = run.steps[2].phases[m["name"].split()[0]]
            assert abs((int(m["end"]) - int(m["start"])) / 1e3 - (sp.end - sp.start)) <= 0.002
            assert m["name"].split()[1] == f"{sp.end - sp.start:.2f}s"


# -- HTML -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_page():
    states = load_sessions([GPU_SESSION])
    return render("html", states), combined(states)


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


def test_html_is_one_self_contained_page_with_the_verdict_and_drawn_charts(gpu_page):
    page, comb = gpu_page
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing to load: no remote src/href/url(), no external script or stylesheet, no script at all
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page, flags=re.I)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    v = comb.verdict
    assert escape(v.headline) in page and escape(v.confidence) in page and escape(v.basis) in page
    for caveat in v.caveats:
        assert escape(caveat) in page
    for f in v.findings:
        assert escape(finding_line(f)) in page
    phases, memory = _svgs(page)
    labels = [s.label for s in comb.summaries]
    # phase bars: a stacked bar (one <path> per rectangle) per phase and step, titles and a phase legend as text
    n_steps = sum(len(s.steps) for s in comb.summaries)
    assert phases.count("<path") >= 4 * n_steps
    for text in (*labels, "rollout", "train", "weight_sync"):
        assert re.search(rf"<text[^>]*>{re.escape(text)}</text>", phases), text
    # memory: one line per run with its samples drawn (long paths), the run labels in the legend
    long_paths = [d for d in re.findall(r'<path d="([^"]+)"', memory) if d.count("L") > 50]
    assert len(long_paths) >= len(labels)
    for label in labels:
        assert f"{label}: run's GPUs" in memory
    assert len(page) < 500_000  # tens of kB: fit for a PR attachment or a mail


def test_html_of_a_cpu_session_says_memory_was_not_measured():
    page = render("html", load_sessions([SESSIONS / "20261123T214724Z-vllm-restart_vs_vllm-sleep1-cpu.jsonl"]))
    assert "GPU memory not measured" in page and len(_svgs(page)) == 1


def test_reports_that_need_no_chart_do_not_import_matplotlib():
    code = ("import sys; from sgtui.export import load_sessions, render; import sgtui.cli; "
            f"render('md', load_sessions([{str(DAY1)!r}])); render('csv', load_sessions([{str(DAY1)!r}])); "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _chromium() -> str | None:
    return next((p for name in ("chromium", "chromium-browser") if (p := shutil.which(name))), None)


#: Run by the browser after the page's own content: what its layout engine drew, written into the DOM.
PROBE = """<pre id="sgtui-probe"></pre><script>
const svgs = [...document.querySelectorAll('.chart svg')];
const drawn = s => [...s.querySelectorAll('path')]
  .filter(p => {const b = p.getBBox(); return b.width > 1 || b.height > 1;}).length;
document.getElementById('sgtui-probe').textContent = JSON.stringify(svgs.map(s => {
  const r = s.getBoundingClientRect();
  return {w: r.width, h: r.height, drawn: drawn(s), texts: [...s.querySelectorAll('text')].map(t => t.textContent)};
}));
</script>"""


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary on PATH (Debian: apt-get install chromium; "
                                                 ".ci/run installs it)")
def test_html_report_opens_in_headless_chromium_with_its_charts_drawn(gpu_page, tmp_path):
    page, comb = gpu_page
    path = tmp_path / "report.html"
    path.write_text(page.replace("</body>", PROBE + "</body>"))
    r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000", "--dump-dom",
                        path.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="sgtui-probe">(.*?)</pre>', r.stdout, flags=re.S)
    assert m and m.group(1), f"chromium rc {r.returncode}: {r.stderr[-2000:]}"
    import html

    charts = orjson.loads(html.unescape(m.group(1)))
    assert len(charts) == 2, charts
    for chart in charts:
        assert chart["w"] > 300 and chart["h"] > 150, chart
        assert chart["drawn"] >= 10, chart
    labels = [s.label for s in comb.summaries]
    assert set(labels) <= set(charts[0]["texts"])
    assert {f"{label}: run's GPUs" for label in labels} <= set(charts[1]["texts"])
    assert comb.verdict.headline.split(":")[0] in r.stdout
