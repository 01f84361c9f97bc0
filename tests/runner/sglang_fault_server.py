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
import os
import signal
import sys
import time

try:  # started as a script by the engine under test: the sibling module
    from fault_server_base import FaultHandler, FaultState, on_sigterm, parse_args, serve, start_up, token_pieces
except ImportError:  # imported by the tests
    from .fault_server_base import FaultHandler, FaultState, on_sigterm, parse_args, serve, start_up, token_pieces

ALL_TAGS = ("kv_cache", "weights", "cuda_graph")
BASE_TEXT = "base base base base "
ADAPTER_TEXT = "lora lora lora lora "


class State(FaultState):
    def __init__(self, args: argparse.Namespace, plan: dict) -> None:
        super().__init__(args, plan)
        self.loaded: dict[str, str] = {}
        for spec in args.lora_paths or ():
            name, _, path = spec.partition("=")
            self.loaded[name] = path
        self.released: set[str] = set()
        #: the scheduler's KV pool in tokens (max_total_num_tokens); a resume of the KV cache may shrink it
        self.token_capacity = int(plan.get("token_capacity", 16384))
        self.inflight = 0
        self.busy_polls = int(plan.get("busy_polls", 0))  # server-side requests our client never sent
        # the scheduler's last batch, still there after /v1/loads counts no request (it goes with the next loop
        # iteration, or with a flush): while it lingers, `is_fully_idle` is false; each flush try uses one up
        self.lingering = int(plan.get("lingering_batch", 0))
        self.scheduler_dead = False

    def log(self, *lines: str) -> None:
        super().log(*(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}" for line in lines))

    def running(self) -> int:
        """Requests running as the server counts them: ours in flight, plus one of its own while `busy_polls`
        lasts (each look uses one up), so the idle guard has to wait for the server, not for our client."""
        with self.lock:
            busy = 1 if self.busy_polls > 0 else 0
            self.busy_polls = max(0, self.busy_polls - 1)
            return self.inflight + busy

    def die(self, *lines: str) -> None:
        """What SGLang does when its scheduler raises: log, SIGQUIT to the launcher, the tree exits."""
        self.log(*lines, "SIGQUIT received. signum=None, frame=None. It usually means one child failed.")
        sys.stdout.flush()
        os._exit(1)


def make_handler(st: State) -> type[FaultHandler]:
    class Handler(FaultHandler):
        state = st
        ROUTES = {
            "/health": "health",
            "/health_generate": "health",
            "/get_server_info": "server_info",
            "/server_info": "server_info",
            "/v1/loads": "loads",
            "/get_load": "get_load",
            "/metrics": "metrics",
            "/release_memory_occupation": "release",
            "/resume_memory_occupation": "resume",
            "/update_weights_from_disk": "update_from_disk",
            "/load_lora_adapter": "load_lora",
            "/unload_lora_adapter": "unload_lora",
            "/flush_cache": "flush",
            "/v1/completions": "completions",
        }

        # -- endpoints ---------------------------------------------------------------------------------
        def health(self, body, query):
            return self._send(503 if st.scheduler_dead else 200, b"", "text/plain")

        def server_info(self, body, query):
            self._send(200, {"version": st.plan.get("version", "0.5.23"), "device": "cpu",
                             "served_model_name": st.served, "max_total_num_tokens": st.token_capacity,
                             "internal_states": [{"memory_usage": {"token_capacity": st.token_capacity}}]})

        def loads(self, body, query):
            if st.plan.get("no_loads"):
                return self._not_found()
            self._send(200, {"version": st.plan.get("version", "0.5.23"),
                             "loads": [{"dp_rank": 0, "num_running_reqs": st.running(), "num_waiting_reqs": 0}]})

        def get_load(self, body, query):  # SGLang < 0.5.17: a list, num_reqs = running + waiting
            if not st.plan.get("legacy_load"):
                return self._not_found()
            self._send(200, [{"num_reqs": st.running(), "num_waiting_reqs": 0, "num_tokens": 0}])

        def metrics(self, body, query):
            m = st.plan.get("metrics", {})
            labels = '{model_name="%s",engine_type="unified",tp_rank="0",pp_rank="0"}' % st.served
            lines = ["# HELP sglang:num_running_reqs The number of running requests.",
                     "# TYPE sglang:num_running_reqs gauge"]
            for name in ("num_running_reqs", "num_queue_reqs", "token_usage", "cache_hit_rate", "gen_throughput"):
                lines.append(f"sglang:{name}{labels} {float(m.get(name, 0.0))}")
            self._send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")

        def release(self, body, query):
            # SGLang asserts in its scheduler; the assertion ends the whole server (seen on 0.5.23, CPU).
            with st.lock:
                busy = st.inflight > 0 or st.busy_polls > 0 or st.lingering > 0
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
            if "kv_cache" in tags and "capacity_after_resume" in st.plan:
                st.token_capacity = int(st.plan["capacity_after_resume"])
            self._send(200, b"null")

        def update_from_disk(self, body, query):
            path = body.get("model_path", "")
            ok = bool(path) and os.path.isdir(path)
            msg = "Succeeded to update model weights." if ok else f"Failed to get weights iterator: {path}"
            self._send(200 if ok else 400, {"success": ok, "message": msg, "num_paused_requests": 0})

        def load_lora(self, body, query):
            name, path = body.get("lora_name", ""), body.get("lora_path", "")
            if not os.path.isdir(path):
                return self._send(400, {"success": False, "error_message": f"Failed to load LoRA adapter "
                                        f"{name}: {path} does not exist", "loaded_adapters": dict(st.loaded)})
            st.loaded[name] = path
            self._send(200, {"success": True, "error_message": None, "loaded_adapters": dict(st.loaded)})

        def unload_lora(self, body, query):
            st.loaded.pop(body.get("lora_name", ""), None)
            self._send(200, {"success": True, "error_message": None, "loaded_adapters": dict(st.loaded)})

        def flush(self, body, query):
            # scheduler.flush_cache: only when `is_fully_idle`, which clears the last batch; else 400
            with st.lock:
                idle = st.inflight == 0 and st.busy_polls == 0 and st.lingering == 0
                st.lingering = max(0, st.lingering - 1)
            if not idle:
                return self._send(400, "Flush cache failed.\n", "text/plain")
            self._send(200, "Cache flushed.\nPlease check backend logs for more details.\n", "text/plain")

        def completions(self, body, query):
            model = body.get("model", "")
            base, sep, adapter = model.partition(":")
            if sep and adapter not in st.loaded:
                return self._send(400, {"object": "error", "message": "Got LoRA adapter that has never been "
                                        f"loaded: {adapter}\nAll loaded adapters: dict_keys({list(st.loaded)}).",
                                        "type": "BadRequestError", "param": None, "code": 400})
            if st.scheduler_dead:
                return self._send(503, {"object": "error", "message": "scheduler is not running"})
            # A bare name (adapter or not) is served by the base model and echoed back, as SGLang does.
            use_adapter = bool(sep) and not st.plan.get("adapter_is_noop")
            pieces, usage = token_pieces(ADAPTER_TEXT if use_adapter else BASE_TEXT, body)
            head = {"id": "x", "object": "text_completion", "model": model}
            delay = st.plan.get("token_delay", 0.0)

            def stream():
                for piece in pieces:
                    time.sleep(delay)
                    yield {**head, "choices": [{"index": 0, "text": piece, "finish_reason": None}]}
                yield {**head, "choices": [], "usage": usage}

            with st.lock:
                st.inflight += 1
            try:
                if body.get("stream"):
                    return self._stream_sse(stream())
                time.sleep(delay * len(pieces))
                return self._send(200, {**head, "choices": [{"index": 0, "text": "".join(pieces),
                                                             "finish_reason": "length"}], "usage": usage})
            finally:
                with st.lock:
                    st.inflight -= 1

    return Handler


def main() -> None:
    args, plan = parse_args("--model-path", "--lora-paths")
    st = State(args, plan)
    on_sigterm(st)

    def scheduler_dies(*a):
        st.scheduler_dead = True
        st.log("Scheduler process exited (fault injection); the HTTP server stays up")

    signal.signal(signal.SIGUSR1, scheduler_dies)
    st.log(f"server_args=ServerArgs(model_path='{args.model}', port={args.port}) (fault-injection server)")
    start_up(st)
    if plan.get("never_healthy"):
        st.scheduler_dead = True
    serve(st, make_handler(st))


if __name__ == "__main__":
    main()
