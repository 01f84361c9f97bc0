"""FAULT-INJECTION server speaking vLLM's real HTTP endpoints (not vLLM; for tests only).

The real vLLM CPU server is used wherever it can show a behaviour (tests/runner/test_vllm_real.py,
tests/test_faults_vllm.py). This stand-in exists for what a real server cannot be made to do on
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
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

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


class State:
    def __init__(self, args: argparse.Namespace, plan: dict) -> None:
        self.args = args
        self.plan = plan
        self.lock = threading.Lock()
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
        self.record = open(args.sgtui_record, "a", buffering=1) if args.sgtui_record else None

    def log(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)


def make_handler(st: State):
    served = st.args.served_model_name or st.args.model

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # quiet; the record file has everything
            pass

        # -- plumbing --------------------------------------------------------------------------------
        def _body(self) -> dict:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                return json.loads(raw) if raw else {}
            except ValueError:
                return {}

        def _send(self, code: int, payload, ctype: str = "application/json") -> int:
            data = payload if isinstance(payload, bytes) else (
                payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return code

        def _error(self, code: int, message: str, typ: str) -> int:
            # vllm/entrypoints/serve/engine/protocol.py: ErrorResponse {"error": ErrorInfo}
            return self._send(code, {"error": {"message": message, "type": typ, "param": None, "code": code}})

        def do_GET(self):
            self._dispatch({})

        def do_POST(self):
            self._dispatch(self._body())

        def _dispatch(self, body: dict) -> None:
            t0 = time.time()
            url = urlparse(self.path)
            path, query = url.path, parse_qs(url.query)
            handler = ROUTES.get(path)
            code = 404
            try:
                if handler is None:
                    code = self._send(404, {"detail": "Not Found"})
                else:
                    d = st.plan.get("delays", {}).get(path, 0.0)
                    if d:
                        time.sleep(d)
                    code = handler(self, body, query) or 200
            finally:
                if st.record:
                    st.record.write(json.dumps({"method": self.command, "path": path, "query": query,
                                                "body": body, "t0": t0, "t1": time.time(), "code": code}) + "\n")

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
            if name == served:
                return self._error(400, f"The lora adapter '{name}' conflicts with a served base model.",
                                   "InvalidUserInput")
            inplace = body.get("load_inplace") and not st.plan.get("no_inplace")  # older vLLM: field ignored
            if not inplace and name in st.loras:
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
            lab = f'engine="0",model_name="{served}"'
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
            ]
            return self._send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")

        def completions(self, body, query):
            model = body.get("model", "")
            if model != served and model not in st.loras:
                return self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
            # A request sent while asleep waits for wake_up (observed on CPU with dev mode).
            st.awake.wait()
            if st.weights_discarded:
                text = GARBAGE_TEXT
            else:
                text = ADAPTER_TEXT if model in st.loras else BASE_TEXT
            n = int(body.get("max_tokens") or 16)
            pieces = [text[i % len(text)] for i in range(n)]
            usage = {"prompt_tokens": 4, "total_tokens": n + 4, "completion_tokens": n}
            head = {"id": "cmpl-x", "object": "text_completion", "created": int(time.time()), "model": model}
            if not body.get("stream"):
                return self._send(200, {**head, "choices": [{"index": 0, "text": "".join(pieces),
                                                             "finish_reason": "length"}], "usage": usage})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for piece in pieces:
                    time.sleep(st.plan.get("token_delay", 0.0))
                    self._chunk({**head, "choices": [{"index": 0, "text": piece, "logprobs": None,
                                                      "finish_reason": None, "stop_reason": None}], "usage": None})
                self._chunk({**head, "choices": [], "usage": usage})
                self._chunk_raw(b"data: [DONE]\n\n")
                self._chunk_raw(b"")
            except (BrokenPipeError, ConnectionResetError):
                pass
            return 200

        def _chunk(self, obj: dict) -> None:
            # pydantic's model_dump_json is compact, as here
            self._chunk_raw(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")

        def _chunk_raw(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    ROUTES = {
        "/health": Handler.health,
        "/version": Handler.version,
        "/sleep": Handler.sleep,
        "/wake_up": Handler.wake_up,
        "/is_sleeping": Handler.is_sleeping,
        "/collective_rpc": Handler.collective_rpc,
        "/v1/load_lora_adapter": Handler.load_lora,
        "/v1/unload_lora_adapter": Handler.unload_lora,
        "/metrics": Handler.metrics,
        "/v1/completions": Handler.completions,
    }
    return Handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="")
    p.add_argument("--served-model-name", default="")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--lora-modules", nargs="*")
    p.add_argument("--sgtui-plan", default="{}")
    p.add_argument("--sgtui-record", default="")
    args, _unknown = p.parse_known_args()
    plan = json.loads(args.sgtui_plan)
    st = State(args, plan)
    if plan.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, lambda *a: st.log("SIGTERM received: ignored (fault injection)"))
    else:
        signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    st.log(f"INFO vLLM API server version {plan.get('version', '0.32.0')} (fault-injection server)")
    st.log(f"INFO non-default args: {{'model': '{args.model}', 'port': {args.port}}}")
    for line in plan.get("startup_log", []):
        st.log(line)
    if "exit_at_startup" in plan:
        sys.stdout.flush()
        os._exit(int(plan["exit_at_startup"]))
    time.sleep(float(plan.get("startup_seconds", 0.2)))
    if plan.get("never_healthy"):
        time.sleep(3600)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(st))
    server.daemon_threads = True
    st.log(f"INFO:     Uvicorn running on http://{args.host}:{args.port} (fault-injection server)")
    server.serve_forever()


if __name__ == "__main__":
    main()
