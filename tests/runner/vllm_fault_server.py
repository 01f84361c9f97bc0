"""FAULT-INJECTION server speaking vLLM's real HTTP endpoints (not vLLM; for tests only).

The real vLLM CPU server is used wherever it can show a behaviour (tests/runner/test_vllm_real.py,
tests/faults/test_engine_faults.py). This stand-in exists for what a real server cannot be made to do on
demand, or only on a GPU: answer a control call slowly by a chosen amount (timing attribution),
run out of memory at `/wake_up` (CUDA only), stay asleep after `/wake_up`, discard its weights at
sleep level 2 so that only `reload_weights` brings the model back, print a chosen log and exit
during start-up, never become healthy, or ignore SIGTERM.

It takes the same command line as `python -m vllm.entrypoints.openai.api_server` (the flags it
needs, the rest ignored) plus `--sgtui-plan JSON` (the faults) and `--sgtui-record FILE` (one JSON
line per handled call: method, path, query, body, start and end time, status), so the engine's real
argv building is used. Behaviour mirrors vLLM 0.32.0 as read in its source (paths in the comments
at each endpoint) and as observed on CPU. Stdlib only: it runs under any Python.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

try:  # started as a script by the engine under test: the sibling module
    from fault_server_base import FaultHandler, FaultState, on_sigterm, parse_args, serve, start_up, token_pieces
except ImportError:  # imported by the tests
    from .fault_server_base import FaultHandler, FaultState, on_sigterm, parse_args, serve, start_up, token_pieces

BASE_TEXT = "base base base base "
ADAPTER_TEXT = "lora lora lora lora "
GARBAGE_TEXT = "!!!!"  # what a model whose weights were discarded (sleep level 2) and not reloaded emits

WAKE_OOM_LOG = [
    "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749] Invocation of wake_up method failed",
    "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749] Traceback (most recent call last):",
    '(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749]   File "vllm/v1/engine/core.py", line 1008, '
    "in wake_up",
    "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749]     self.model_executor.wake_up(tags)",
    '(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749]   File "vllm/device_allocator/cumem.py", '
    "line 227, in wake_up",
    "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749]     create_and_map(handle)",
    "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749] torch.OutOfMemoryError: CUDA out of memory. "
    "Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.10 GiB is free.",
    'INFO:     127.0.0.1:40210 - "POST /wake_up HTTP/1.1" 500 Internal Server Error',
]


class State(FaultState):
    def __init__(self, args: argparse.Namespace, plan: dict) -> None:
        super().__init__(args, plan)
        self.awake = threading.Event()
        self.awake.set()
        self.level = 0  # sleep level while asleep
        self.asleep_tags: set[str] = set()
        self.weights_discarded = False
        self.loras: dict[str, str] = {}
        for spec in args.lora_modules or ():  # --lora-modules name=path
            name, _, path = spec.partition("=")
            self.loras[name] = path
        self.counters = {"hits": 0.0, "queries": 0.0}


def make_handler(st: State) -> type[FaultHandler]:
    class Handler(FaultHandler):
        state = st
        ROUTES = {
            "/health": "health",
            "/version": "version",
            "/sleep": "sleep",
            "/wake_up": "wake_up",
            "/is_sleeping": "is_sleeping",
            "/collective_rpc": "collective_rpc",
            "/v1/load_lora_adapter": "load_lora",
            "/v1/unload_lora_adapter": "unload_lora",
            "/metrics": "metrics",
            "/v1/completions": "completions",
        }

        def _error(self, code: int, message: str, typ: str) -> int:
            # vllm/entrypoints/serve/engine/protocol.py: ErrorResponse {"error": ErrorInfo}
            return self._send(code, {"error": {"message": message, "type": typ, "param": None, "code": code}})

        # -- endpoints ---------------------------------------------------------------------------------
        def health(self, body, query):
            return self._send(200, b"", "text/plain")

        def version(self, body, query):
            return self._send(200, {"version": st.plan.get("version", "0.32.0")})

        def sleep(self, body, query):
            # vllm/entrypoints/serve/dev/sleep/api_router.py: level in 0..2, mode (default abort)
            level = int(query.get("level", ["1"])[0])
            with st.lock:
                st.level = level
                st.asleep_tags = {"weights", "kv_cache"} if level >= 1 else set()
                if level == 2:
                    st.weights_discarded = True
                st.awake.clear()
            return self._send(200, {"status": "sleeping", "level": level})

        def wake_up(self, body, query):
            tags = query.get("tags") or None  # no tags: wake everything
            if st.plan.get("wake_oom"):
                # The engine core fails the utility call (core.py _invoke_utility_method) and stays up;
                # FastAPI turns the exception into a bare 500.
                st.log(*WAKE_OOM_LOG)
                return self._send(500, "Internal Server Error", "text/plain")
            with st.lock:
                if not st.plan.get("stays_asleep"):
                    st.asleep_tags -= set(tags) if tags else st.asleep_tags
                fully = not st.asleep_tags
                if fully:
                    st.awake.set()
            return self._send(200, {"status": "awake" if fully else "sleeping", "tags": tags})

        def is_sleeping(self, body, query):
            return self._send(200, {"is_sleeping": not st.awake.is_set()})

        def collective_rpc(self, body, query):
            # vllm/entrypoints/serve/dev/rpc/api_router.py
            method = body.get("method")
            if method is None:
                return self._send(400, {"detail": "Missing 'method' in request body"})
            if method == "reload_weights":
                with st.lock:
                    if "weights" in st.asleep_tags:
                        st.log("ERROR reload_weights while the weights are asleep")
                        return self._send(500, "Internal Server Error", "text/plain")
                    st.weights_discarded = False
            return self._send(200, {"results": [None]})

        def load_lora(self, body, query):
            # vllm/entrypoints/openai/models/serving.py load_lora_adapter + its checks
            name, path = body.get("lora_name", ""), body.get("lora_path", "")
            if not name or not path:
                return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
            if name == st.served:
                return self._error(400, f"The lora adapter '{name}' conflicts with a served base model.",
                                   "InvalidUserInput")
            if not body.get("load_inplace") and name in st.loras:
                return self._error(400, f"The lora adapter '{name}' has already been loaded. If you want to load "
                                   "the adapter in place, set 'load_inplace' to True.", "InvalidUserInput")
            if not os.path.isfile(os.path.join(path, "adapter_config.json")):
                return self._error(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
            st.loras[name] = path
            st.log(f"INFO Loaded new LoRA adapter: name '{name}', path '{path}'")
            return self._send(200, f"Success: LoRA adapter '{name}' added successfully.", "text/plain")

        def unload_lora(self, body, query):
            name = body.get("lora_name", "")
            if name not in st.loras:
                return self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            del st.loras[name]
            return self._send(200, f"Success: LoRA adapter '{name}' removed successfully.", "text/plain")

        def metrics(self, body, query):
            m = st.plan.get("metrics", {})
            lab = f'engine="0",model_name="{st.served}"'
            with st.lock:
                st.counters["queries"] += float(m.get("queries_per_scrape", 0))
                st.counters["hits"] += float(m.get("hits_per_scrape", 0))
                awake = st.awake.is_set()
                level = st.level
            lines = [
                "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{{{lab}}} {float(m.get('running', 0))}",
                f"vllm:num_requests_waiting{{{lab}}} {float(m.get('waiting', 0))}",
                f"vllm:kv_cache_usage_perc{{{lab}}} {float(m.get('kv', 0))}",
                f"vllm:prefix_cache_queries_total{{{lab}}} {st.counters['queries']}",
                f"vllm:prefix_cache_hits_total{{{lab}}} {st.counters['hits']}",
                f'vllm:engine_sleep_state{{{lab},sleep_state="awake"}} {1.0 if awake else 0.0}',
                f'vllm:engine_sleep_state{{{lab},sleep_state="weights_offloaded"}} '
                f"{1.0 if not awake and level == 1 else 0.0}",
                f'vllm:engine_sleep_state{{{lab},sleep_state="discard_all"}} {1.0 if not awake and level == 2 else 0.0}',
                *([f'vllm:cache_config_info{{block_size="{m.get("block_size", 16)}",engine="0",'
                   f'num_cpu_blocks="None",num_gpu_blocks="{m["num_gpu_blocks"]}"}} 1.0']
                  if "num_gpu_blocks" in m else []),
            ]
            return self._send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")

        def completions(self, body, query):
            model = body.get("model", "")
            if model != st.served and model not in st.loras:
                return self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
            # A request sent while asleep waits for wake_up (observed on CPU with dev mode).
            st.awake.wait()
            if st.weights_discarded:
                text = GARBAGE_TEXT
            else:
                text = ADAPTER_TEXT if model in st.loras else BASE_TEXT
            pieces, usage = token_pieces(text, body)
            head = {"id": "cmpl-x", "object": "text_completion", "created": int(time.time()), "model": model}
            if not body.get("stream"):
                return self._send(200, {**head, "choices": [{"index": 0, "text": "".join(pieces),
                                                             "finish_reason": "length"}], "usage": usage})

            def stream():
                for piece in pieces:
                    time.sleep(st.plan.get("token_delay", 0.0))
                    yield {**head, "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None,
                                                "stop_reason": None}], "usage": None}
                yield {**head, "choices": [], "usage": usage}

            return self._stream_sse(stream(), "text/event-stream; charset=utf-8")

    return Handler


def main() -> None:
    args, plan = parse_args("--model", "--lora-modules")
    st = State(args, plan)
    on_sigterm(st)
    st.log(f"INFO vLLM API server version {plan.get('version', '0.32.0')} (fault-injection server)")
    st.log(f"INFO non-default args: {{'model': '{args.model}', 'port': {args.port}}}")
    start_up(st)
    if plan.get("never_healthy"):
        time.sleep(3600)
    serve(st, make_handler(st), "INFO:     ")


if __name__ == "__main__":
    main()
