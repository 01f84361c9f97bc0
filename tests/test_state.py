"""Every derived number against an independent computation (numpy, written from vLLM's definitions)."""

import dataclasses
import math

import numpy as np
import pytest

from sgtui import events as E
from sgtui import stats
from sgtui.state import SessionState, calculate_metrics, load_state, rollout_duration, run_summary, step_summary
from tests.gen import generate


def independent_metrics(reqs, duration):
    ok = [r for r in reqs if not r.error]
    ttft = np.array([r.ttft for r in ok]) * 1000
    e2el = np.array([r.latency for r in ok]) * 1000
    itl = np.array([g for r in ok for g in r.itl]) * 1000
    tpot = np.array([(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]) * 1000
    out = sum(r.output_tokens for r in ok)
    d = {"completed": len(ok), "errors": len(reqs) - len(ok), "output_throughput": out / duration,
         "request_throughput": len(ok) / duration}
    for name, arr in (("ttft", ttft), ("e2el", e2el), ("itl", itl), ("tpot", tpot)):
        d[f"mean_{name}_ms"] = arr.mean()
        d[f"std_{name}_ms"] = arr.std()
        for q in (50, 90, 99):
            d[f"p{q}_{name}_ms"] = np.percentile(arr, q)
    return d


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_and_run_metrics_match_numpy(seed):
    evs = generate(steps=3, requests=20, seed=seed)
    st = load_state(evs)
    for label, run in st.runs.items():
        s = run_summary(run, st.gpu)
        all_reqs, total_dur = [], 0.0
        for step_sum in s.steps:
            step = run.steps[step_sum.step]
            span = step.phases["rollout"]
            dur = span.end - span.start
            total_dur += dur
            all_reqs += step.requests
            want = independent_metrics(step.requests, dur)
            for k, v in want.items():
                assert getattr(step_sum.metrics, k) == pytest.approx(v, rel=1e-9, abs=1e-9), (label, k)
            # phases and step total from the raw edges
            edges = [e for e in evs if isinstance(e, E.Phase) and e.run == label and e.step == step_sum.step]
            assert step_sum.total_s == pytest.approx(max(e.t for e in edges) - min(e.t for e in edges))
            for name in ("offload", "train", "reload", "weight_sync"):
                ts = [e.t for e in edges if e.name == name]
                assert step_sum.phases[name] == pytest.approx(ts[1] - ts[0])
            assert step_sum.transition_s == pytest.approx(sum(step_sum.phases[p] for p in ("offload", "reload", "weight_sync")))
        want = independent_metrics(all_reqs, total_dur)
        for k, v in want.items():
            assert getattr(s.metrics, k) == pytest.approx(v, rel=1e-9, abs=1e-9), (label, k)
        # the means are the steady state's: step 1 apart
        assert s.steady_steps == (2, 3)
        assert s.phase_means["step_total"] == pytest.approx(np.mean([x.total_s for x in s.steps[1:]]))


def test_100k_event_stream_folds_exactly():
    evs = generate(labels=("vllm-sleep1", "vllm-restart"), steps=50, requests=600, seed=7, itl_len=4)
    assert len(evs) > 100_000
    st = load_state(evs)
    assert st.events == len(evs)
    for label, run in st.runs.items():
        reqs = [e for e in evs if isinstance(e, E.Request) and e.run == label]
        s = run_summary(run, st.gpu)
        assert s.metrics.completed + s.metrics.errors == len(reqs)
        assert s.metrics.total_output_tokens == sum(r.output_tokens for r in reqs if not r.error)
        assert s.metrics.p99_itl_ms == pytest.approx(
            np.percentile([g * 1000 for r in reqs if not r.error for g in r.itl], 99))
        assert len(s.steps) == 50 and all(x.complete for x in s.steps)


def test_metrics_of_nothing_are_zero_like_vllm():
    m = calculate_metrics([], 0.0)
    assert m.completed == 0 and m.output_throughput == 0 and m.p99_ttft_ms == 0


def test_memory_summary_from_samples():
    st = load_state(generate(labels=("vllm-sleep1",), steps=2))
    mem = run_summary(st.runs["vllm-sleep1"], st.gpu).memory
    assert mem.measured and mem.idle_floor_mib == 480.0 and mem.peak_mib == 40000.0
    # no per-process samples: only the device column is measured; held/freed (the engine's processes) are not
    assert mem.source == "device" and all(m.freed_mib is None and m.held_mib is None for m in mem.steps)
    assert [m.device_freed_mib for m in mem.steps] == [40000.0 - 1300.0] * 2
    assert [m.device_held_mib for m in mem.steps] == [1300.0 - 480.0] * 2
    assert [m.train_floor_mib for m in mem.steps] == [1300.0] * 2


def test_memory_on_cpu_says_not_measurable():
    st = load_state(generate(labels=("vllm-sleep1",), steps=1, gpu=False))
    mem = run_summary(st.runs["vllm-sleep1"], st.gpu).memory
    assert not mem.measured and mem.reason == "not measurable on CPU"
    st.apply(E.GpuSample(t=1, error="no NVIDIA driver"))
    assert st.gpu.error == "no NVIDIA driver"


def test_live_fold_open_phase_and_cancel_closes_it():
    st = SessionState()
    st.apply(E.RunStart(t=0, run="a", backend="vllm"))
    st.apply(E.Phase(t=1, run="a", step=1, name="rollout", edge="start"))
    run = st.runs["a"]
    assert run.current_phase.name == "rollout" and run.current_phase.duration_at(3.5) == 2.5
    assert run_summary(run, st.gpu).steps[0].complete is False
    st.apply(E.RunEnd(t=4, run="a", status="cancelled"))
    span = run.steps[1].phases["rollout"]
    assert span.end == 4 and span.ok is False and run.status == "cancelled"


def test_running_request_counters_agree_with_the_metrics_at_every_prefix():
    """The fold's own counters (what the dashboard reads every tick) count as `request_stats` does, after any
    prefix of the stream: errors only as errors, output tokens of successful requests, warm-up (step 0) apart."""
    evs = generate(labels=("vllm-sleep1", "vllm-restart"), steps=3, requests=12, seed=4)
    evs.insert(5, E.Request(t=evs[4].t, run="vllm-sleep1", step=0, output_tokens=9))  # a warm-up request
    assert any(isinstance(e, E.Request) and e.error for e in evs)
    st = SessionState()
    cuts = set(range(0, len(evs), max(1, len(evs) // 7))) | {len(evs) - 1}
    for i, e in enumerate(evs):
        st.apply(e)
        if i not in cuts:
            continue
        for run in st.runs.values():
            for step in run.steps.values():
                m = calculate_metrics(step.requests, 1.0)
                assert (step.requests_completed, step.requests_failed, step.output_tokens) == (
                    m.completed, m.errors, m.total_output_tokens)
            rl = calculate_metrics([r for n in run.rl_steps for r in run.steps[n].requests], 1.0)
            assert (run.requests_completed, run.requests_failed) == (rl.completed, rl.errors)
    warm = st.runs["vllm-sleep1"].steps[0]
    assert warm.requests_completed == 1 and warm.output_tokens == 9
    assert st.runs["vllm-sleep1"].requests_completed == run_summary(st.runs["vllm-sleep1"], st.gpu).metrics.completed


def test_summary_cache_invalidates_on_new_events():
    evs = generate(labels=("vllm-sleep1",), steps=2)
    st = load_state(evs[:-20])
    a = st.summary("vllm-sleep1")
    assert st.summary("vllm-sleep1") is a
    st.apply_all(evs[-20:])
    assert st.summary("vllm-sleep1") is not a


def test_held_memory_counts_engine_processes_not_the_trainer():
    """The trainer (in the runner process) allocating right after offload must not count as engine memory."""
    evs = [E.SessionHeader(t=0), E.RunStart(t=0, run="a", backend="vllm", gpus=[0], device="cuda", pid=100)]

    def sample(t, engine, trainer):
        procs = [{"pid": 200, "device": 0, "used_mib": engine, "run": "a"}]
        if trainer:
            procs.append({"pid": 100, "device": 0, "used_mib": trainer, "run": "a"})
        return E.GpuSample(t=t, devices=[{"index": 0, "used_mib": 480 + engine + trainer, "total_mib": 80000}],
                           processes=procs)

    evs += [sample(0.5, 40000, 0),
            E.Phase(t=1, run="a", step=1, name="offload", edge="start"),
            E.Phase(t=2, run="a", step=1, name="offload", edge="end"),
            E.Phase(t=2, run="a", step=1, name="train", edge="start"),
            sample(2.1, 800, 8192),
            E.Phase(t=5, run="a", step=1, name="train", edge="end")]
    mem = run_summary(load_state(evs).runs["a"], load_state(evs).gpu).memory
    assert mem.source == "engine processes"
    assert mem.steps[0].held_mib == 800 and mem.steps[0].freed_mib == 39200


def naive_metrics(reqs):
    """Every value pooled and sorted at once, as before steps were reduced and cached: pooled and cached
    numbers must equal these bit for bit (not approximately), whatever the order of summaries."""
    ok = [r for r in reqs if not r.error]

    def dist(name, xs):
        ms = sorted(x * 1000.0 for x in xs)
        n = len(ms)
        m = math.fsum(ms) / n if n else 0.0
        std = math.sqrt(math.fsum((x - m) ** 2 for x in ms) / n) if n > 1 else 0.0
        p50, p90, p99 = (stats.percentile(ms, q, presorted=True) for q in (50, 90, 99))
        return {f"mean_{name}_ms": m, f"std_{name}_ms": std, f"median_{name}_ms": p50,
                f"p50_{name}_ms": p50, f"p90_{name}_ms": p90, f"p99_{name}_ms": p99}

    out = {"completed": len(ok), "errors": len(reqs) - len(ok),
           "total_output_tokens": sum(r.output_tokens for r in ok)}
    out.update(dist("ttft", [r.ttft for r in ok]))
    out.update(dist("e2el", [r.latency for r in ok]))
    out.update(dist("itl", [g for r in ok for g in r.itl]))
    out.update(dist("tpot", [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]))
    return out


def assert_metrics_are(m, want):
    got = {k: getattr(m, k) for k in want}
    assert got == want


@pytest.mark.parametrize("itl_len,requests", [(64, 40), (3, 9)])  # ITL searched across steps / merged
def test_run_metrics_pooled_from_steps_equal_all_values_at_once(itl_len, requests):
    evs = generate(steps=6, requests=requests, itl_len=itl_len, seed=4)
    st = load_state(evs)
    for label, run in st.runs.items():
        s = run_summary(run, st.gpu)
        reqs = [r for n in run.rl_steps for r in run.steps[n].requests]
        assert_metrics_are(s.metrics, naive_metrics(reqs))
        for x in s.steps:
            assert_metrics_are(x.metrics, naive_metrics(run.steps[x.step].requests))
        assert s.metrics.duration_s == sum(rollout_duration(run.steps[n]) for n in run.rl_steps)


def summary_numbers(st):
    """Every number of every run summary, to compare two states exactly."""
    return {label: (dataclasses.asdict(s.metrics), [(dataclasses.asdict(x), dataclasses.asdict(x.metrics)) for x in s.steps],
                    s.phase_samples)
            for label in st.runs if label != "session" for s in [st.summary(label)]}


@pytest.mark.parametrize("pieces", [7, 61, 400])
def test_summaries_asked_between_pieces_equal_the_summary_of_the_whole(pieces):
    """The cached step reductions must follow the steps: pieces cut anywhere (mid-rollout, between a
    step's requests), a summary after each, and the last equals a fold of everything at once."""
    evs = generate(steps=4, requests=30, itl_len=40, seed=8)
    whole = load_state(evs)
    st = SessionState()
    cuts = sorted(set(np.linspace(0, len(evs), pieces + 1, dtype=int).tolist()))
    for a, b in zip(cuts, cuts[1:]):
        st.apply_all(evs[a:b])
        for label in st.runs:
            if label != "session":
                run_summary(st.runs[label], st.gpu)
    assert summary_numbers(st) == summary_numbers(whole)


def test_a_late_request_changes_its_finished_steps_numbers():
    evs = generate(labels=("vllm-sleep1",), steps=2, requests=10, seed=2)
    st = load_state(evs)
    run = st.runs["vllm-sleep1"]
    before = step_summary(run.steps[1]).metrics
    late = E.Request(t=evs[-1].t, run="vllm-sleep1", step=1, start=evs[-1].t - 1, ttft=0.9, latency=1.0,
                     itl=[0.5, 0.5], prompt_tokens=3, output_tokens=3)
    st.apply(late)
    after = step_summary(run.steps[1]).metrics
    assert after.completed == before.completed + 1 and after.p99_itl_ms != before.p99_itl_ms
    assert_metrics_are(after, naive_metrics(run.steps[1].requests))
    pooled = naive_metrics(run.steps[1].requests + run.steps[2].requests)
    assert_metrics_are(st.summary("vllm-sleep1").metrics, pooled)


def test_megatron_trainer_processes_are_their_own_share_by_role():
    """Sessions from 2026-12-03 tag each GPU process with its role: the persistent trainer's ranks (their own
    process groups, not the runner's pid) count neither as engine memory nor as "other"; what they hold while
    offloaded (the engine's rollout) and while training is reported per step."""
    evs = [E.SessionHeader(t=0), E.RunStart(t=0, run="a", backend="vllm", gpus=[0], device="cuda", pid=100)]

    def sample(t, engine, trainer):
        procs = [{"pid": 200, "device": 0, "used_mib": engine, "run": "a", "role": "engine"},
                 {"pid": 300, "device": 0, "used_mib": trainer, "run": "a", "role": "trainer"},
                 {"pid": 100, "device": 0, "used_mib": 500, "run": "a", "role": "runner"}]
        return E.GpuSample(t=t, devices=[{"index": 0, "used_mib": 980 + engine + trainer, "total_mib": 80000}],
                           processes=procs)

    def phase(t0, t1, name):
        return [E.Phase(t=t0, run="a", step=1, name=name, edge="start"),
                E.Phase(t=t1, run="a", step=1, name=name, edge="end")]

    evs += [*phase(0.1, 1, "rollout")[:1], sample(0.5, 40000, 900), *phase(0.1, 1, "rollout")[1:],
            *phase(1, 2, "offload"), E.Phase(t=2, run="a", step=1, name="train", edge="start"),
            sample(2.1, 800, 12000), E.Phase(t=5, run="a", step=1, name="train", edge="end")]
    st = load_state(evs)
    mem = run_summary(st.runs["a"], st.gpu).memory
    assert mem.steps[0].held_mib == 800 and mem.steps[0].freed_mib == 39200  # the runner's 500 MiB not counted
    assert mem.steps[0].trainer_rollout_mib == 900 and mem.steps[0].trainer_train_mib == 12000
