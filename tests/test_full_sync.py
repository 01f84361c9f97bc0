"""Full-weight sync (`+disk`, `+ipc`) outside the engines: run specs and config, preflight's one-line refusals,
the runner's sync numbers and probe decision, the event field they travel in, the state fold and the text
report's transition rows. The real engines and trainer: tests/runner/test_full_sync_{vllm,sglang}.py,
tests/trainer/test_full_export.py; one GPU: tests/runner/test_full_sync_gpu.py."""

from __future__ import annotations

import asyncio

import pytest

from sgtui import events as E
from sgtui import preflight
from sgtui.config import ConfigError, RunConfig, parse_run_spec
from sgtui.export import render
from sgtui.runner import weights
from sgtui.state import load_state, run_summary
from tests.engines import SGLANG_PY, VLLM_PY
from tests.gen import generate


def cfg(backend="vllm", sync="disk", **kw) -> RunConfig:
    base = dict(label=f"{backend}-x", backend=backend, strategy="sleep1" if backend == "vllm" else "release",
                sync=sync, mode="training", trainer="megatron", device="cuda", python="/nonexistent/python")
    return RunConfig(**{**base, **kw})


# -- specs and config --------------------------------------------------------------------------------------
def test_run_specs_name_full_syncs_on_both_engines():
    assert parse_run_spec("vllm:sleep1+disk").label == "vllm-sleep1-disk"
    assert parse_run_spec("sglang:release+ipc").label == "sglang-release-ipc"
    assert parse_run_spec("vllm:sleep2+ipc").sync == "ipc"
    with pytest.raises(ConfigError, match="nccl"):
        parse_run_spec("vllm:sleep1+nccl")  # split placement, two GPUs: not here yet


def test_full_sync_needs_the_persistent_megatron_trainer():
    cfg().validate()
    with pytest.raises(ConfigError, match=r"\+disk syncs the full weights"):
        cfg(mode="inference", trainer="simulated").validate()
    with pytest.raises(ConfigError, match="persistent"):
        cfg(sync="ipc", trainer_launch="per-step").validate()
    with pytest.raises(ConfigError, match="sync-bucket-mb"):
        cfg(sync_bucket_mb=0).validate()


# -- preflight --------------------------------------------------------------------------------------------
OK_VLLM = {"disk": True, "ipc": True, "ipc_needs_ray": False}


@pytest.mark.parametrize("run, facts, why", [
    (cfg(sync="ipc", device="cpu"), None, "rebuilds CUDA tensors only; on CPU use +disk"),
    (cfg(sync="ipc", placement="split"), None, "--placement shared only"),
    (cfg(sync="ipc", tp=2, train_tp=1), None, "--train-tp 2"),
    (cfg(sync="ipc"), {"disk": True, "ipc": True, "ipc_needs_ray": True}, "imports ray at module level"),
    (cfg(sync="ipc"), {"disk": True, "ipc": False}, "has no the IPC weight-transfer API over HTTP"),
    (cfg(sync="disk"), {"disk": False, "ipc": True}, "has no reload_weights with a weights_path"),
    (cfg("sglang", sync="ipc"), {"disk": True, "ipc": False}, "has no /update_weights_from_tensor"),
    (cfg(sync="disk"), {}, "could not read what the installed vllm offers"),
])
def test_preflight_refuses_in_one_line(run, facts, why):
    got = preflight.sync_refusal(run, facts)
    assert why in got and "\n" not in got


def test_preflight_passes_what_the_engines_offer():
    assert preflight.sync_refusal(cfg(sync="ipc"), OK_VLLM) == ""
    assert preflight.sync_refusal(cfg("sglang", sync="ipc", device="cpu"), {"disk": True, "ipc": True}) == ""
    assert preflight.sync_refusal(cfg(sync="lora"), {}) == ""  # not a full sync: nothing to say
    checks = preflight.check_syncs([cfg(sync="ipc", device="cpu"), cfg(sync="lora"), cfg("sglang", sync="disk")],
                                   probe=False)
    assert [(c.name, c.ok) for c in checks] == [("vllm-x sync", False), ("sglang-x sync", True)]
    assert checks[0].fix


@pytest.mark.skipif(not (VLLM_PY.exists() and SGLANG_PY.exists()), reason="CPU engine venvs missing")
def test_the_installed_cpu_engines_offer_both_syncs_read_without_importing_them():
    assert preflight.sync_facts(str(VLLM_PY), "vllm") == OK_VLLM  # vLLM 0.32: ray not needed by its IPC engine
    assert preflight.sync_facts(str(SGLANG_PY), "sglang") == {"disk": True, "ipc": True}


# -- the runner's numbers and proof -------------------------------------------------------------------------
def test_sync_numbers_and_detail():
    pushed = {"bytes": 2_000_000_000, "buckets": 4, "produce": 1.25, "changed": True, "update_rel": 0.01}
    d = weights.sync_data("ipc", pushed, transfer_s=2.0, load_s=0.5, paused_s=1.9, setup_s=0.3)
    assert d == {"method": "ipc", "bytes": 2_000_000_000, "buckets": 4, "transfer_s": 2.0, "gbps": 1.0,
                 "produce_s": 1.25, "load_s": 0.5, "paused_s": 1.9, "changed": True, "update_rel": 0.01,
                 "setup_s": 0.3}
    assert "setup_s" not in weights.sync_data("disk", pushed, 2.0, 0.5, 0.5, None)
    text = weights.detail_text(d, "engine says")
    assert text.startswith("ipc: 2000.0 MB in 4 bucket(s), 1.00 GB/s") and "set-up 0.300 s apart" in text


def test_clock_spans_the_weight_changing_calls_only():
    clock = weights.Clock()

    async def go():
        await clock.time(asyncio.sleep(0.02))
        await asyncio.sleep(0.05)  # the trainer packs the next bucket: the engine still cannot serve
        await clock.time(asyncio.sleep(0.02))
        await clock.time(asyncio.sleep(0.05), changes_weights=False)  # a cache reset after the update

    asyncio.run(go())
    assert 0.085 < clock.paused_s < 0.2 and clock.load_s > clock.paused_s - 0.05 + 0.04


P1 = weights.Probe((5, 6, 7), (-1.0, -2.0, -3.0))
P2 = weights.Probe((5, 6, 7), (-1.0, -2.0, -3.0000002))


def test_probe_decides_only_when_a_change_must_be_visible():
    big = {"changed": True, "update_rel": 0.05}
    assert "did not arrive" in weights.check_probe(P1, P1, big)
    assert weights.check_probe(P1, P2, big) == ""  # one logprob moved: the engine took new weights
    assert weights.check_probe(None, P1, big) == ""  # nothing to compare with yet
    assert weights.check_probe(P1, P1, {"changed": False, "update_rel": 0.05}) == ""  # the same bytes again
    assert weights.check_probe(P1, P1, {"changed": True, "update_rel": 1e-5}) == ""  # too small to see
    assert weights.probe_note(P1, P1, big) == "probe UNCHANGED"
    assert weights.probe_note(P1, P2, big) == "probe changed"


# -- events, state, report --------------------------------------------------------------------------------
def test_phase_data_round_trips_and_old_lines_have_none():
    e = E.Phase(t=1.0, run="r", step=1, name="weight_sync", edge="end", data={"bytes": 10, "gbps": 1.5})
    assert E.decode(E.encode(e)) == e
    old = E.decode(b'{"kind":"phase","t":1.0,"run":"r","step":1,"name":"weight_sync","edge":"end"}')
    assert old.data == {}
    with pytest.raises(E.EventError, match="plausible"):
        E.decode(E.encode(E.Phase(t=1.0, data={"bytes": 1e300})))


def synced(labels=("vllm-sleep1-disk", "sglang-release-ipc"), steps=3) -> list:
    """Generated runs whose weight_sync end edges carry a full sync's numbers (sglang's twice vLLM's speed)."""
    evs = generate(labels=labels, steps=steps)
    for e in evs:
        if isinstance(e, E.RunStart):
            e.strategy, sync = e.strategy.split("-")
            e.config = {"sync": sync}
        if isinstance(e, E.Phase) and e.name == "weight_sync" and e.edge == "end":
            fast = e.run.startswith("sglang")
            e.data = {"method": "ipc" if fast else "disk", "bytes": 2_200_000_000, "buckets": 5,
                      "transfer_s": 1.0 if fast else 2.0, "gbps": 2.2 if fast else 1.1, "produce_s": 0.5,
                      "load_s": 0.4, "paused_s": 0.9 if fast else 0.4, "changed": True, "update_rel": 0.01}
            if e.step == 1 and fast:
                e.data["setup_s"] = 0.25
    return evs


def test_state_means_the_steady_syncs_and_keeps_the_one_off_setup():
    st = load_state(synced())
    s = run_summary(st.runs["sglang-release-ipc"], st.gpu)
    assert s.steady_steps == (2, 3)
    assert s.sync["bytes"] == 2_200_000_000 and s.sync["gbps"] == pytest.approx(2.2)
    assert s.sync["setup_s"] == 0.25  # paid in step 1, which the steady state leaves out
    assert s.steps[0].sync["setup_s"] == 0.25
    plain = load_state(generate(steps=2))
    assert run_summary(plain.runs["vllm-sleep1"], plain.gpu).sync == {}


def test_text_report_shows_bytes_and_gbps_under_the_weight_sync_row():
    st = load_state(synced())
    st.source = "sessions/x.jsonl"
    lines = render("txt", [st]).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Weight sync"))
    rows = {line[:24].strip(): line[24:].split() for line in lines[at + 1: at + 5]}
    assert rows["bytes moved"] == ["2.20", "GB", "2.20", "GB"]
    assert rows["GB/s"] == ["1.10", "2.20"]
    assert rows["engine not serving"] == ["0.40s", "0.90s"]
    assert rows["set-up (once)"] == ["n/a", "0.25s"]
    # the column heads wrap at the dashes, so each keeps the sync's name: "vllm-" over "sleep1-disk"
    heads = [line.split() for line in lines[:at] if line.startswith(" " * 24) and line.strip()][-2:]
    assert [a + b for a, b in zip(*heads)] == ["vllm-sleep1-disk", "sglang-release-ipc"], heads
    assert "  sglang-release-ipc: sglang 0.0 release+ipc inference on cuda; ok" in lines
    assert all(len(line) <= 80 for line in lines)
    plain = load_state(generate(steps=2))
    plain.source = "sessions/y.jsonl"
    assert "bytes moved" not in render("txt", [plain])
