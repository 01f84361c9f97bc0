"""FAULT-INJECTION server speaking SGLang's real HTTP endpoints (not SGLang; for tests only).

The real SGLang CPU server is used wherever it can show a behaviour (tests/runner/test_sglang_real.py).
This stand-in exists for what a real server cannot be made to do on demand, or only on a GPU: answer
slowly by a chosen amount (timing attribution), report requests running that our client never sent
(the idle guard must ask the server), die the way SGLang dies when memory is released while busy or
resumed without a release, run out of memory at resume, fail its TP memory check at start-up, or keep
its HTTP front end up answering 503 after its scheduler died, ignoring SIGTERM.

It takes the same command line as `python -m sglang.launch_server` (the flags it needs, the rest
ignored) plus `--sgtui-plan JSON` (the faults) and `--sgtui-record FILE` (one JSON line per handled
call: method, path, query, body, start and end time), so the engine's real argv building is used.
Its behaviour mirrors SGLang 0.5.23 as observed on CPU (see the comments at each endpoint).
Stdlib only: it runs under any Python.

Signals: SIGUSR1 kills the "scheduler" (from then on /health answers 503 and generation fails);
SIGTERM exits at once unless the plan says `ignore_sigterm`.
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

ALL_TAGS = ("kv_cache", "weights", "cuda_graph")
BASE_TEXT = "base base base base "
ADAPTER_TEXT = "lora lora lora lora "


class State:
    def __init__(self, args: argparse.Namespace, plan: dict) -> None:
        self.args = args
        self.plan = plan
        self.lock = threading.Lock()
        self.loaded: dict[str, str] = {}
        for spec in args.lora_paths or ():
            name, _, path = spec.partition("=")
            self.loaded[name] = path
        self.released: set[str] = set()
        self.inflight = 0
        self.busy_polls = int(plan.get("busy_polls", 0))  # server-side requests our client never sent
        self.scheduler_dead = False
        self.record = open(args.sgtui_record, "a", buffering=1) if args.sgtui_record else None

    def log(self, *lines: str) -> None:
        for line in lines:
            print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}", flush=True)

    def die(self, *lines: str) -> None:
        """What SGLang does when its scheduler raises: log, SIGQUIT to the launcher, the tree exits."""
        self.log(*lines, "SIGQUIT received. signum=None, frame=None. It usually means one child failed.")
        sys.stdout.flush()
        os._exit(1)


def make_handler(st: State):
    served = st.args.served_model_name or st.args.model_path

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

        def _send(self, code: int, payload, ctype: str = "application/json") -> None:
            data = payload if isinstance(payload, bytes) else (
                payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, t0: float, path: str, query: dict, body: dict, code: int) -> None:
            if st.record:
                st.record.write(json.dumps({"method": self.command, "path": path, "query": query, "body": body,
                                            "t0": t0, "t1": time.time(), "code": code}) + "\n")

        def _delay(self, path: str) -> None:
            d = st.plan.get("delays", {}).get(path, 0.0)
            if d:
                time.sleep(d)

        def do_GET(self):
            self._dispatch({})

        def do_POST(self):
            self._dispatch(self._body())

        def _dispatch(self, body: dict) -> None:
            t0 = time.time()
            url = urlparse(self.path)
            path, query = url.path, {k: v[0] for k, v in parse_qs(url.query).items()}
            handler = ROUTES.get(path)
            code = 404
            try:
                if handler is None:
                    self._send(404, {"detail": "Not Found"})
                else:
                    self._delay(path)
                    code = handler(self, body, query) or 200
            finally:
                self._record(t0, path, query, body, code)

        # -- endpoints ---------------------------------------------------------------------------------
        def health(self, body, query):
            code = 503 if st.scheduler_dead else 200
            self._send(code, b"", "text/plain")
            return code

        def server_info(self, body, query):
            self._send(200, {"version": st.plan.get("version", "0.5.23"), "device": "cpu",
                             "served_model_name": served})

        def loads(self, body, query):
            if st.plan.get("no_loads"):
                self._send(404, {"detail": "Not Found"})
                return 404
            with st.lock:
                busy = 1 if st.busy_polls > 0 else 0
                st.busy_polls = max(0, st.busy_polls - 1)
                running = st.inflight + busy
            self._send(200, {"version": st.plan.get("version", "0.5.23"),
                             "loads": [{"dp_rank": 0, "num_running_reqs": running, "num_waiting_reqs": 0}]})

        def get_load(self, body, query):  # SGLang < 0.5.17: a list, num_reqs = running + waiting
            if not st.plan.get("legacy_load"):
                self._send(404, {"detail": "Not Found"})
                return 404
            with st.lock:
                busy = 1 if st.busy_polls > 0 else 0
                st.busy_polls = max(0, st.busy_polls - 1)
                n = st.inflight + busy
            self._send(200, [{"num_reqs": n, "num_waiting_reqs": 0, "num_tokens": 0}])

        def metrics(self, body, query):
            m = st.plan.get("metrics", {})
            labels = '{model_name="%s",engine_type="unified",tp_rank="0",pp_rank="0"}' % served
            lines = ["# HELP sglang:num_running_reqs The number of running requests.",
                     "# TYPE sglang:num_running_reqs gauge"]
            for name in ("num_running_reqs", "num_queue_reqs", "token_usage", "cache_hit_rate", "gen_throughput"):
                lines.append(f"sglang:{name}{labels} {float(m.get(name, 0.0))}")
            self._send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")

        def release(self, body, query):
            # SGLang asserts in its scheduler; the assertion ends the whole server (seen on 0.5.23, CPU).
            with st.lock:
                busy = st.inflight > 0 or st.busy_polls > 0
            if busy:
                st.die("Scheduler hit an exception: Traceback (most recent call last):",
                       '  File "sglang/srt/managers/scheduler_components/weight_updater.py", line 339, '
                       "in release_memory_occupation",
                       "    assert self.is_fully_idle(",
                       "AssertionError: release_memory_occupation should be called only when server is idle.")
            tags = body.get("tags") or list(ALL_TAGS)
            st.released.update(tags)
            self._send(200, b"null")

        def resume(self, body, query):
            tags = body.get("tags") or list(ALL_TAGS)
            missing = [t for t in tags if t not in st.released]
            if missing:  # offload_tags.remove(tag) -> KeyError in the scheduler -> the server exits
                st.die("Scheduler hit an exception: Traceback (most recent call last):",
                       "    self.offload_tags.remove(tag)", f"KeyError: '{missing[0]}'")
            if st.plan.get("resume_oom") and "kv_cache" in tags:
                st.die("[torch_memory_saver.cpp] cu_mem_create has CUDA_ERROR_OUT_OF_MEMORY",
                       "[torch_memory_saver.cpp] cudaError error: 2 (out of memory)  file=csrc/core.cpp "
                       "func=resume line=171")
            st.released.difference_update(tags)
            self._send(200, b"null")

        def update_from_disk(self, body, query):
            path = body.get("model_path", "")
            ok = bool(path) and os.path.isdir(path)
            msg = "Succeeded to update model weights." if ok else f"Failed to get weights iterator: {path}"
            self._send(200 if ok else 400, {"success": ok, "message": msg, "num_paused_requests": 0})

        def load_lora(self, body, query):
            name, path = body.get("lora_name", ""), body.get("lora_path", "")
            if not os.path.isdir(path):
                self._send(400, {"success": False, "error_message": f"Failed to load LoRA adapter {name}: "
                                 f"{path} does not exist", "loaded_adapters": dict(st.loaded)})
                return 400
            st.loaded[name] = path
            self._send(200, {"success": True, "error_message": None, "loaded_adapters": dict(st.loaded)})

        def unload_lora(self, body, query):
            st.loaded.pop(body.get("lora_name", ""), None)
            self._send(200, {"success": True, "error_message": None, "loaded_adapters": dict(st.loaded)})

        def flush(self, body, query):
            self._send(200, "Cache flushed.\nPlease check backend logs for more details.\n", "text/plain")

        def completions(self, body, query):
            model = body.get("model", "")
            base, sep, adapter = model.partition(":")
            if sep and adapter not in st.loaded:
                self._send(400, {"object": "error", "message": f"Got LoRA adapter that has never been loaded: "
                                 f"{adapter}\nAll loaded adapters: dict_keys({list(st.loaded)}).",
                                 "type": "BadRequestError", "param": None, "code": 400})
                return 400
            if st.scheduler_dead:
                self._send(503, {"object": "error", "message": "scheduler is not running"})
                return 503
            # A bare name (adapter or not) is served by the base model and echoed back, as SGLang does.
            use_adapter = bool(sep) and not st.plan.get("adapter_is_noop")
            text = ADAPTER_TEXT if use_adapter else BASE_TEXT
            n = int(body.get("max_tokens") or 16)
            with st.lock:
                st.inflight += 1
            try:
                pieces = [text[i % len(text)] for i in range(n)]
                usage = {"prompt_tokens": 4, "completion_tokens": n, "total_tokens": n + 4}
                if not body.get("stream"):
                    time.sleep(st.plan.get("token_delay", 0.0) * n)
                    self._send(200, {"id": "x", "object": "text_completion", "model": model,
                                     "choices": [{"index": 0, "text": "".join(pieces), "finish_reason": "length"}],
                                     "usage": usage})
                    return 200
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in pieces:
                    time.sleep(st.plan.get("token_delay", 0.0))
                    self._chunk({"id": "x", "object": "text_completion", "model": model,
                                 "choices": [{"index": 0, "text": piece, "finish_reason": None}]})
                self._chunk({"id": "x", "object": "text_completion", "model": model, "choices": [],
                             "usage": usage})
                self._chunk_raw(b"data: [DONE]\n\n")
                self._chunk_raw(b"")
                return 200
            finally:
                with st.lock:
                    st.inflight -= 1

        def _chunk(self, obj: dict) -> None:
            self._chunk_raw(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")  # compact, as SGLang

        def _chunk_raw(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    ROUTES = {
        "/health": Handler.health,
        "/health_generate": Handler.health,
        "/get_server_info": Handler.server_info,
        "/v1/loads": Handler.loads,
        "/get_load": Handler.get_load,
        "/metrics": Handler.metrics,
        "/release_memory_occupation": Handler.release,
        "/resume_memory_occupation": Handler.resume,
        "/update_weights_from_disk": Handler.update_from_disk,
        "/load_lora_adapter": Handler.load_lora,
        "/unload_lora_adapter": Handler.unload_lora,
        "/flush_cache": Handler.flush,
        "/v1/completions": Handler.completions,
    }
    return Handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-path", default="")
    p.add_argument("--served-model-name", default="")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--lora-paths", nargs="*")
    p.add_argument("--sgtui-plan", default="{}")
    p.add_argument("--sgtui-record", default="")
    args, _unknown = p.parse_known_args()
    plan = json.loads(args.sgtui_plan)
    st = State(args, plan)
    if plan.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, lambda *a: st.log("SIGTERM received: ignored (fault injection)"))
    else:
        signal.signal(signal.SIGTERM, lambda *a: os._exit(0))

    def scheduler_dies(*a):
        st.scheduler_dead = True
        st.log("Scheduler process exited (fault injection); the HTTP server stays up")

    signal.signal(signal.SIGUSR1, scheduler_dies)
    st.log(f"server_args=ServerArgs(model_path='{args.model_path}', port={args.port}) (fault-injection server)")
    for line in plan.get("startup_log", []):
        st.log(line)
    if "exit_at_startup" in plan:
        sys.stdout.flush()
        os._exit(int(plan["exit_at_startup"]))
    time.sleep(float(plan.get("startup_seconds", 0.2)))
    if plan.get("never_healthy"):
        st.scheduler_dead = True
    server = ThreadingHTTPServer((args.host, args.port), make_handler(st))
    server.daemon_threads = True
    st.log(f"Uvicorn running on http://{args.host}:{args.port} (fault-injection server)")
    server.serve_forever()


if __name__ == "__main__":
    main()
