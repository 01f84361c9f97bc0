"""HTTP plumbing shared by the FAULT-INJECTION servers (`vllm_fault_server.py`, `sglang_fault_server.py`).

Both stand-ins take their engine's real command line plus `--sgtui-plan JSON` (the faults) and
`--sgtui-record FILE` (one JSON line per handled call), delay chosen endpoints, stream completions as
chunked SSE and go through the same start-up faults. Only that machinery lives here; each server keeps
what belongs to its engine's real protocol: endpoints, JSON shapes, metric names and log lines.

Stdlib only, like the servers: they run under any Python (the engine venvs' interpreters too). A server
is started as a script, so it imports this file as a sibling module, not as `tests.runner.…`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import parse_qs, urlparse


def parse_args(model_flag: str, lora_flag: str) -> tuple[argparse.Namespace, dict]:
    """The flags a stand-in needs from its engine's argv (the rest ignored, as the real argv carries many
    more), and the fault plan they carry. The model path is `args.model` whatever the engine calls its flag."""
    p = argparse.ArgumentParser()
    p.add_argument(model_flag, dest="model", default="")
    p.add_argument("--served-model-name", default="")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(lora_flag, nargs="*")
    p.add_argument("--sgtui-plan", default="{}")
    p.add_argument("--sgtui-record", default="")
    args, _unknown = p.parse_known_args()
    return args, json.loads(args.sgtui_plan)


class FaultState:
    """What every handler thread of one server shares: its args, the fault plan, a lock and the record file."""

    def __init__(self, args: argparse.Namespace, plan: dict) -> None:
        self.args = args
        self.plan = plan
        self.lock = threading.Lock()
        self.served = args.served_model_name or args.model  # the name requests ask for the base model by
        self.record: IO[str] | None = open(args.sgtui_record, "a", buffering=1) if args.sgtui_record else None

    def log(self, *lines: str) -> None:
        """Lines to stdout, which the engine under test keeps as the server's log (it reads errors from it)."""
        for line in lines:
            print(line, flush=True)


def token_pieces(text: str, body: dict) -> tuple[list[str], dict]:
    """What the fake model writes for a completion request: `max_tokens` one-character tokens cycling
    through `text` (so base and adapter output differ visibly), and the usage block that goes with them."""
    n = int(body.get("max_tokens") or 16)
    return [text[i % len(text)] for i in range(n)], {"prompt_tokens": 4, "completion_tokens": n,
                                                      "total_tokens": n + 4}


class FaultHandler(BaseHTTPRequestHandler):
    """Routing, delays and recording for one request. A subclass sets `state` and `ROUTES` (path -> the name
    of a method `(body, query) -> status or None`, None meaning 200)."""

    protocol_version = "HTTP/1.1"
    state: FaultState
    ROUTES: dict[str, str] = {}

    def log_message(self, fmt: str, *a: Any) -> None:  # quiet; the record file has everything
        pass

    def do_GET(self) -> None:
        self._dispatch({})

    def do_POST(self) -> None:
        self._dispatch(self._body())

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def _dispatch(self, body: dict) -> None:
        """Run the route after the plan's delay for its path, and record the call even when it fails, so the
        tests can place every call in time (t0, t1) against the engine's phases."""
        t0 = time.time()
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        name = self.ROUTES.get(path)
        code = 404
        try:
            if name is None:
                code = self._not_found()
            else:
                delay = self.state.plan.get("delays", {}).get(path, 0.0)
                if delay:
                    time.sleep(delay)
                code = getattr(self, name)(body, query) or 200
        finally:
            if self.state.record:
                self.state.record.write(json.dumps({"method": self.command, "path": path, "query": query,
                                                 "body": body, "t0": t0, "t1": time.time(), "code": code}) + "\n")

    def _send(self, code: int, payload: Any, ctype: str = "application/json") -> int:
        """One whole response: bytes as given, str encoded, anything else as JSON. Returns the status."""
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return code

    def _not_found(self) -> int:
        return self._send(404, {"detail": "Not Found"})  # FastAPI's answer, for both engines

    def _stream_sse(self, events: Iterable[dict], ctype: str = "text/event-stream") -> int:
        """A streamed completion as both engines send it: chunked SSE, one compact `data:` JSON line per event
        (pydantic's model_dump_json is compact), then `data: [DONE]`. A client that hangs up mid-stream ends
        it quietly, as a real server does. The plan's `sse_split` cuts every event in two writes with a pause
        between: the client must join a `data:` line that arrives in pieces. `done_delay` pauses before
        `[DONE]`: the request's latency must end at its last token, as vLLM's benchmark measures it."""
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        split = self.state.plan.get("sse_split", False)  # each event in two writes, as TCP may deliver it
        try:
            for obj in events:
                event = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
                if split:
                    self._chunk(event[: len(event) // 2])
                    time.sleep(0.002)
                    self._chunk(event[len(event) // 2:])
                else:
                    self._chunk(event)
            time.sleep(float(self.state.plan.get("done_delay", 0.0)))  # a slow tail after the last token
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")  # the chunked encoding's end
        except (BrokenPipeError, ConnectionResetError):
            pass
        return 200

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def on_sigterm(st: FaultState) -> None:
    """SIGTERM exits at once, as both engines' launchers do, unless the plan says `ignore_sigterm` (then only
    SIGKILL ends the server: the teardown's escalation is under test)."""
    if st.plan.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, lambda *a: st.log("SIGTERM received: ignored (fault injection)"))
    else:
        signal.signal(signal.SIGTERM, lambda *a: os._exit(0))


def start_up(st: FaultState) -> None:
    """The start-up faults: print the plan's `startup_log`, exit with `exit_at_startup` if set (the engine
    must categorise the failure from that log), else take `startup_seconds` before listening."""
    for line in st.plan.get("startup_log", []):
        st.log(line)
    if "exit_at_startup" in st.plan:
        sys.stdout.flush()
        os._exit(int(st.plan["exit_at_startup"]))
    time.sleep(float(st.plan.get("startup_seconds", 0.2)))


def serve(st: FaultState, handler: type[FaultHandler], ready_prefix: str = "") -> None:
    """Listen on the argv's host and port until killed, after the engine's own "ready" log line."""
    server = ThreadingHTTPServer((st.args.host, st.args.port), handler)
    server.daemon_threads = True
    st.log(f"{ready_prefix}Uvicorn running on http://{st.args.host}:{st.args.port} (fault-injection server)")
    server.serve_forever()
