"""Detached runs: the orchestrator in a process of its own, so runs outlive the UI (quit, SSH drop).

    python -m sgtui.tui.detach --session PATH --runs @runs.json [--export txt,json] [--goodput "ttft:500 ..."]
        [--runner-prefix JSON]

The UI starts this with `start_new_session=True` (its own session and process
group: a terminal hangup does not reach it), follows the session file it
writes (`SessionTail`, as `sgtui replay --follow` does) and cancels it with
SIGTERM to this one process, which the orchestrator turns into a clean cancel
of every run (process groups: SIGTERM, grace, SIGKILL). At the end it writes
the reports next to the session, as the headless CLI does.

`sgtui --detach` (headless or UI) starts the same process. Its environment
carries `SGTUI_SESSION=<absolute session path>`: `sgtui stop` signals a pid
only if that marker names the session being stopped (see
`sgtui.sessions_index`), and its stdout/stderr (the headless progress lines,
errors) go to `<session>.d/orchestrator.log`. No Textual here: the CLI uses
this module without the UI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import orjson

from sgtui import pkgpath
from sgtui.config import DEFAULT_EXPORTS, RunConfig
from sgtui.options import ReportOptions
from sgtui.sessions_index import SESSION_MARKER


def log_path(session_path: Path) -> Path:
    return Path(session_path).with_suffix(".d") / "orchestrator.log"


def spawn(runs: list[RunConfig], session_path: Path, exports: list[str], *, concurrent: bool = False,
          runner_prefix: list[str] | None = None, python: str = sys.executable,
          opts: ReportOptions = ReportOptions(), interleave: bool = False) -> subprocess.Popen:
    """Start the detached orchestrator; returns its Popen (its pid is the process group id)."""
    session_path = Path(session_path).absolute()  # the marker and the log must not depend on cwd
    d = session_path.with_suffix(".d")
    d.mkdir(parents=True, exist_ok=True)
    runs_file = d / "runs.json"
    runs_file.write_bytes(orjson.dumps([r.to_dict() for r in runs]))
    argv = [python, "-m", "sgtui.tui.detach", "--session", str(session_path), "--runs", f"@{runs_file}",
            "--export", ",".join(exports)]
    if concurrent:
        argv.append("--concurrent")
    if interleave:
        argv.append("--interleave")
    argv += ["--report-options", opts.to_json()]  # the reports written at the end judge as this sgtui would
    if runner_prefix:
        argv += ["--runner-prefix", orjson.dumps(runner_prefix).decode()]
    env = dict(os.environ)
    pkgpath.child_env(env)  # this very sgtui, also when started from a checkout that is not installed
    env[SESSION_MARKER] = str(session_path)
    log = open(log_path(session_path), "ab")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True, cwd=os.getcwd())
    finally:
        log.close()


def wait_started(proc: subprocess.Popen, session_path: Path, timeout: float = 20.0) -> str:
    """Wait until the detached orchestrator wrote its session header; "" then, else why it did not
    (it exited: the last line of its log, e.g. the session can't be written or a port is taken)."""
    import time

    from sgtui.session import SessionReadError, read_session

    session_path = Path(session_path).absolute()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = proc.poll() is not None
        try:
            if read_session(session_path).header is not None:
                return ""
        except SessionReadError:
            pass
        if exited:
            break
        time.sleep(0.05)
    rc = proc.poll()
    if rc is None:
        return f"no session header after {timeout:.0f} s (see {log_path(session_path)})"
    try:
        lines = [ln for ln in log_path(session_path).read_text().splitlines() if ln.strip()]
    except OSError:
        lines = []
    errors = [ln for ln in lines if ln.startswith("sgtui: error:")]
    last = (errors or lines or [f"exit code {rc}"])[-1]
    return last.removeprefix("sgtui: error: ")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sgtui.tui.detach")
    p.add_argument("--session", required=True)
    p.add_argument("--runs", required=True, help="JSON list of RunConfig dicts, or @file")
    p.add_argument("--export", default=",".join(DEFAULT_EXPORTS))
    p.add_argument("--concurrent", action="store_true")
    p.add_argument("--interleave", action="store_true")
    p.add_argument("--report-options", default="", help="ReportOptions as JSON (sgtui/options.py)")
    p.add_argument("--runner-prefix", default="", help="JSON list: argv prefix of a stand-in runner (tests)")
    args = p.parse_args(argv)
    text = Path(args.runs[1:]).read_bytes() if args.runs.startswith("@") else args.runs.encode()
    runs = [RunConfig.from_dict(d) for d in orjson.loads(text)]
    session = Path(args.session)
    kw = {}
    if args.runner_prefix:
        prefix = list(orjson.loads(args.runner_prefix))
        kw["runner_argv"] = lambda c: prefix + ["--config", c.to_json()]
    from rich.console import Console

    from sgtui.headless import Progress
    from sgtui.lifecycle import run_session

    # The log gets the headless progress lines: what `tail -f orchestrator.log` shows on a box without the UI.
    progress = Progress(Console(stderr=True, highlight=False, soft_wrap=True, force_terminal=False))
    print(f"sgtui: detached orchestrator pid {os.getpid()} writing {session}", file=sys.stderr, flush=True)
    opts = ReportOptions.from_json(args.report_options) if args.report_options else ReportOptions()
    out = run_session(runs, session, [f for f in args.export.split(",") if f], opts=opts, subscribers=[progress],
                      concurrent=args.concurrent, interleave=args.interleave, **kw)
    for path in out.exports:
        print(f"wrote {path}", file=sys.stderr)
    if out.export_error:
        print(f"sgtui: error: {out.export_error}", file=sys.stderr)
    if out.fatal:  # last: `wait_started` reports the last error line of this log
        print(f"sgtui: error: {out.fatal}", file=sys.stderr)
    return out.exit_code


if __name__ == "__main__":
    sys.exit(main())
