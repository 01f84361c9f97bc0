"""Full-weight sync, runner side (`+disk`, `+ipc`): the trainer hands over its merged weights, the engine
loads them, and the weight_sync phase reports what moved and what it cost.

One sync (`full_sync`): the engine's one-off set-up the first time (vLLM's IPC backend:
/init_weight_transfer_engine), then its update session opens (SGLang 0.5.2x: /begin_weight_update; vLLM:
/start_weight_update), the trainer pushes (`MegatronTrainer.push`: `disk` writes safetensors shards that the
engine then reloads in one call; `ipc` sends one bucket of handles at a time, the engine loads it, the
runner acks, the trainer packs the next), the session closes, caches that hold old-weight KV are dropped.
Numbers (the phase's `data`, `sync_data`): bytes handed over, buckets, GB/s over the transfer (trainer
production and engine loads; the set-up is apart), produce_s (the trainer's gathering, merging and
writing), load_s (the engine's calls), paused_s (the engine cannot serve the policy: from its first
weight-changing call to its last; a disk write happens before it, while the old weights still serve),
setup_s (once per run, in the first sync).

Proof that weights arrived (`check_probe`): after every full sync a greedy probe (8 tokens with their
logprobs, outside the timed phase) is compared with the probe after the previous sync (or the start). An
engine that answers bit for bit as before although the trainer handed over different bytes, and a change
big enough to be seen (relative update >= PROBE_MIN_REL of the weights' norm), did not take the weights:
the step fails (WEIGHT_SYNC). Measured on the CPU engines (float32): a merged checkpoint served after a
disk reload answers token for token and logprob for logprob as the PEFT adapter hot-loaded on the base;
reloading the previous step's files answers exactly as before. Small updates can vanish in bf16 (a delta
below half an ulp of the base weight rounds away): the trainer's digest of the bytes says when nothing
changed, and then nothing is asked of the probe. The next step's logprob mismatch is the second proof
(near zero after a sync; it grows as with `+none` when the engine serves stale weights).

Measured on this 2-core CPU (tiny model, 2.9 MB of float32 weights, 3 steps, training mode): SGLang 0.5.23
reloads from disk in 6-14 ms, vLLM 0.32 in 23-31 ms; SGLang's tensor route loads a shared-memory bucket in
13-25 ms; the mismatch stays at 1-2e-7 with either sync, as with the LoRA hot-load. On a GPU, the CUDA IPC
wire formats of both engines were rebuilt bit for bit in another process (H100, torch 2.11:
tests/runner/ipc_wire_check.py); the engines' own `+ipc` routes are tests/runner/test_full_sync_gpu.py.
`+nccl` (split placement, a process group between trainer and engine) is not here: it needs two GPUs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Awaitable, Callable

FULL_SYNCS = ("disk", "ipc")
#: Smallest update (||new - old|| / ||W|| of the merged LoRA product, float32) a greedy probe is asked to see.
PROBE_MIN_REL = 1e-3
GB = 1e9


@dataclass(frozen=True)
class Probe:
    """Greedy tokens and their logprobs for the run's fixed probe prompt."""

    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    text: str = ""


def same_probe(a: Probe | None, b: Probe | None) -> bool:
    """Bit-for-bit the same answer (tokens and every logprob)."""
    return a is not None and b is not None and a.tokens == b.tokens and a.logprobs == b.logprobs


def check_probe(before: Probe | None, after: Probe, pushed: dict) -> str:
    """"" when the probe is consistent with what the trainer handed over, else why the sync did not take
    effect. `pushed` is the trainer's reply (`changed`: the bytes differ from the previous sync's or the base;
    `update_rel`: the update's size relative to the weights)."""
    if before is None or not pushed.get("changed"):
        return ""
    if float(pushed.get("update_rel") or 0.0) < PROBE_MIN_REL:
        return ""
    if same_probe(before, after):
        return ("the engine answers the probe exactly as before the sync although the trainer handed over "
                f"changed weights (update {float(pushed['update_rel']):.2g} of their norm): the weights did not "
                "arrive")
    return ""


def probe_note(before: Probe | None, after: Probe, pushed: dict) -> str:
    """What the probe showed, for the log."""
    if before is None:
        return "probe recorded"
    if not pushed.get("changed"):
        return "trainer's bytes unchanged (no learning signal, or an update below the dtype's resolution)"
    if float(pushed.get("update_rel") or 0.0) < PROBE_MIN_REL:
        return f"update {float(pushed.get('update_rel') or 0.0):.2g} of the weights: below what the probe must see"
    return "probe changed" if not same_probe(before, after) else "probe UNCHANGED"


def sync_data(method: str, pushed: dict, transfer_s: float, load_s: float, paused_s: float,
              setup_s: float | None) -> dict:
    """The weight_sync phase's numbers (Phase.data) from the trainer's reply and the runner's clocks."""
    nbytes = int(pushed.get("bytes") or 0)
    out = {"method": method, "bytes": nbytes, "buckets": int(pushed.get("buckets") or 0),
           "transfer_s": round(transfer_s, 6), "gbps": round(nbytes / transfer_s / GB, 6) if transfer_s > 0 else 0.0,
           "produce_s": round(float(pushed.get("produce") or 0.0), 6), "load_s": round(load_s, 6),
           "paused_s": round(paused_s, 6), "changed": bool(pushed.get("changed")),
           "update_rel": float(pushed.get("update_rel") or 0.0)}
    if setup_s is not None:
        out["setup_s"] = round(setup_s, 6)
    return out


def detail_text(data: dict, engine_detail: str) -> str:
    mb = data["bytes"] / 1e6
    return (f"{data['method']}: {mb:.1f} MB in {data['buckets']} bucket(s), {data['gbps']:.2f} GB/s "
            f"(trainer {data['produce_s']:.3f} s, engine {data['load_s']:.3f} s, not serving "
            f"{data['paused_s']:.3f} s"
            + (f"; set-up {data['setup_s']:.3f} s apart" if "setup_s" in data else "") + f"); {engine_detail}")


class Clock:
    """Sums the engine's call times and spans the window in which its weights change."""

    def __init__(self) -> None:
        self.load_s = 0.0
        self.first: float | None = None
        self.last: float | None = None

    async def time(self, call: Awaitable, changes_weights: bool = True):
        t = time.perf_counter()
        try:
            return await call
        finally:
            now = time.perf_counter()
            self.load_s += now - t
            if changes_weights:
                self.first = t if self.first is None else self.first
                self.last = now

    @property
    def paused_s(self) -> float:
        return 0.0 if self.first is None or self.last is None else self.last - self.first


async def full_sync(engine, push: Callable[..., Awaitable[dict]], step: int, out_dir: str) -> tuple[str, dict, dict]:
    """One full-weight sync; returns (phase detail, phase data, the trainer's reply).

    `push(step, fmt, out_dir, on_bucket)` is the trainer's (MegatronTrainer.push); the engine's methods
    (`full_sync_setup`, `begin_full_sync`, `load_bucket`, `load_checkpoint`, `end_full_sync`) raise
    categorized EngineErrors, the trainer's TrainerErrors: either ends the step, and the run tears both
    down by process group."""
    method = engine.cfg.sync
    setup_s = await engine.full_sync_setup()
    clock = Clock()
    t0 = time.perf_counter()
    fmt = engine.push_format()
    if method == "ipc":
        await clock.time(engine.begin_full_sync())

        async def on_bucket(msg: dict) -> None:
            await clock.time(engine.load_bucket(msg))
            if msg.get("last"):
                await clock.time(engine.end_full_sync())

        pushed = await push(step, fmt, out_dir, on_bucket)
        detail = await clock.time(engine.after_full_sync(), changes_weights=False)
    else:
        pushed = await push(step, fmt, out_dir, None)
        await clock.time(engine.load_checkpoint(out_dir))
        detail = await clock.time(engine.after_full_sync(), changes_weights=False)
    transfer_s = time.perf_counter() - t0
    data = sync_data(method, pushed, transfer_s, clock.load_s, clock.paused_s, setup_s)
    return detail_text(data, detail), data, pushed
