import subprocess
import sys
from pathlib import Path

from sgtui.events import encode
from tests.gen import generate

REPO = Path(__file__).resolve().parent.parent


def sgtui(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "sgtui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_bad_flags_are_one_line_errors():
    for args, needle in [
        (["--run", "foo:bar", "--skip-preflight"], "--run 'foo:bar': backend 'foo'"),
        (["--run", "vllm:release", "--skip-preflight"], "strategy 'release', vllm supports"),
        (["--run", "vllm", "--vllm-python", "/nope/python", "--skip-preflight"], "--vllm-python: /nope/python not found"),
        (["--run", "vllm", "--export", "pdf"], "--export 'pdf'"),
    ]:
        r = sgtui(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sgtui: error:") and needle in lines[0], r.stderr
        assert "Traceback" not in r.stderr


def test_report_every_format_and_bad_session(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b"".join(encode(e) for e in generate(steps=2)))
    for fmt in ("txt", "md", "json", "csv", "trace"):
        out = tmp_path / f"r.{fmt}"
        r = sgtui("report", str(p), "--format", fmt, "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert out.stat().st_size > 100
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"kind":"session","t":1,"schema":99}\n')
    r = sgtui("report", str(bad))
    assert r.returncode == 2 and "newer sgtui (schema 99)" in r.stderr and "Traceback" not in r.stderr
    r = sgtui("report", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2 and "no such session file" in r.stderr


def test_replay_bundled_session_headless_and_ls():
    sessions = sorted((REPO / "sessions").glob("*.jsonl"))
    assert sessions, "the project ships real sessions"
    r = sgtui("replay", str(sessions[0]), "--no-ui")
    assert r.returncode == 0 and "VERDICT" in r.stdout
    r = sgtui("ls", str(REPO / "sessions"))
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == len(sessions)


def test_core_imports_no_engine_or_torch():
    """Harlequin-style contract: the core never imports torch, vllm, sglang, megatron or transformers."""
    code = ("import sys, sgtui.cli, sgtui.orchestrator, sgtui.state, sgtui.export, sgtui.export.text, "
            "sgtui.export.trace, sgtui.verdict, sgtui.gpu, sgtui.preflight, sgtui.headless, sgtui.sessions_index, "
            "sgtui.tui.app, sgtui.models, sgtui.pkgpath; "
            "bad = [m for m in ('torch', 'vllm', 'sglang', 'megatron', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
