import math
import os
import stat
from array import array

import orjson
import pytest

from sgtui import events as E
from sgtui.session import SessionReadError, SessionTail, SessionWriter, make_header, new_session_path, read_session, redact
from tests.gen import generate


def write_lines(path, lines):
    path.write_bytes(b"".join(lines))


def test_roundtrip_every_kind():
    for ev in generate(steps=1, requests=3) + [E.Log(t=1, run="a", line="x"), E.Error(t=1, run="a", category="OOM"),
                                               E.Proc(t=1, run="a", pgid=5)]:
        assert E.decode(E.encode(ev)) == ev


@pytest.mark.parametrize("line,needle", [
    (b'{"kind":"nope","t":1}', "unknown event kind 'nope'"),
    (b'{"kind":"request","t":"1"}', "request.t: expected int or float, got str"),
    (b'{"kind":"phase","t":1,"step":true}', "phase.step: expected int, got bool"),
    (b'{"kind":"log"}', "missing field 't'"),
    (b'[1,2]', "expected a JSON object"),
    (b'{"kind":', "not valid JSON"),
])
def test_decode_errors_name_the_line(line, needle):
    with pytest.raises(E.EventError) as e:
        E.decode(line, lineno=42)
    assert str(e.value).startswith("line 42: ") and needle in str(e.value)


def test_newer_schema_stops(tmp_path):
    p = tmp_path / "s.jsonl"
    write_lines(p, [b'{"kind":"session","t":1,"schema":%d}\n' % (E.SCHEMA + 1)])
    with pytest.raises(SessionReadError) as e:
        read_session(p)
    assert f"session written by a newer sgtui (schema {E.SCHEMA + 1}), this one reads up to {E.SCHEMA}" in str(e.value)


def test_unknown_fields_are_ignored():
    ev = E.decode(b'{"kind":"log","t":1,"run":"a","line":"x","future_field":3}')
    assert ev == E.Log(t=1, run="a", line="x")


def test_reader_skips_bad_lines_and_ignores_truncated_tail(tmp_path):
    evs = generate(steps=1, requests=2)
    lines = [E.encode(e) for e in evs]
    lines.insert(3, b"garbage line\n")
    lines.insert(5, b'{"kind":"request","t":"x"}\n')
    partial = E.encode(E.Log(t=5, run="a", line="cut"))[:-10]
    write_lines(tmp_path / "s.jsonl", lines + [partial])
    res = read_session(tmp_path / "s.jsonl")
    assert res.events == evs
    assert res.truncated_tail
    assert any(":4: not valid JSON" in p for p in res.problems)
    assert any(":6: request.t" in p for p in res.problems)
    assert sum("incomplete" in p for p in res.problems) == 1


def test_not_a_session(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(E.encode(E.Log(t=1, run="a")))
    with pytest.raises(SessionReadError, match="not an sgtui session"):
        read_session(p)
    with pytest.raises(SessionReadError, match="no such session file"):
        read_session(tmp_path / "missing.jsonl")


def test_writer_creates_0600_never_overwrites_and_flushes_each_line(tmp_path):
    p = new_session_path(tmp_path, ["vllm-sleep1", "sglang-release"], now=0)
    assert p.name == "19700101T000000Z-vllm-sleep1_vs_sglang-release.jsonl"
    w = SessionWriter(p)
    w.write(make_header(["sgtui"], {}))
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert read_session(p).header is not None  # readable while still open: no user-space buffer
    p2 = new_session_path(tmp_path, ["vllm-sleep1", "sglang-release"], now=0)
    assert p2 != p and p2.name.endswith("-2.jsonl")
    with pytest.raises(FileExistsError):
        SessionWriter(p)
    w.close()


def test_tail_follows_a_growing_file(tmp_path):
    p = tmp_path / "s.jsonl"
    w = SessionWriter(p)
    tail = SessionTail(p)
    assert tail.poll() == []
    evs = generate(steps=1, requests=1)
    for e in evs[:3]:
        w.write(e)
    assert tail.poll() == evs[:3]
    line = E.encode(evs[3])
    os.write(w._fd, line[:7])  # a write in progress: waits for its newline
    assert tail.poll() == []
    os.write(w._fd, line[7:])
    assert tail.poll() == [evs[3]]
    w.close()


def test_redaction_of_secrets():
    cfg = redact({"env": {"HF_TOKEN": "hf_abc", "PATH": "/bin"}, "api_key": "k", "nested": [{"password": "p"}]})
    assert cfg["env"]["HF_TOKEN"] == "<redacted>" and cfg["env"]["PATH"] == "/bin"
    assert cfg["api_key"] == "<redacted>" and cfg["nested"][0]["password"] == "<redacted>"
    argv = redact(["sgtui", "--hf-token", "secret", "--api-key=abc", "OPENAI_API_KEY=x", "--model", "m"])
    assert argv == ["sgtui", "--hf-token", "<redacted>", "--api-key=<redacted>", "OPENAI_API_KEY=<redacted>", "--model", "m"]
    kept = redact({"max_input_tokens": 128, "max_output_tokens": 64, "author": "x", "runs": [{"max_output_tokens": 8}]})
    assert kept == {"max_input_tokens": 128, "max_output_tokens": 64, "author": "x", "runs": [{"max_output_tokens": 8}]}
    assert redact(["--max-output-tokens", "64"]) == ["--max-output-tokens", "64"]
    header = make_header(["sgtui", "--hf-token", "zzz"], {"env": {"MY_SECRET": "s"}})
    assert b"zzz" not in E.encode(header) and b'"s"' not in orjson.dumps(header.config)


@pytest.mark.parametrize("itl, why", [
    ([0.01, 0.02], None),
    ([9e14, 9e14], None),  # each plausible, their sum not: still plausible
    ([0.0, 1e15], None),
    ([0.01, 2e15], "is not a plausible value"),
    ([-2e15, 0.01], "is not a plausible value"),
    ([-0.5, 0.01], None),  # negative but plausible (a clock step): the values are kept as they are
    ([0.01, "x"], "expected a list of numbers, got str 'x'"),  # held as array("d"): numbers only
    ([0.01, 1e300, "x"], "is not a plausible value"),
    # around the quick check's bound (2**49, `events._floats`): above it the full check decides, as it words
    ([2.0 ** 49 - 1, -(2.0 ** 49 - 1), 2.0 ** 49, -1e15], None),
    ([1, 2, True], None),  # ints (and bools) held as floats, as array("d") converts them
    ([-0.0, 0.5], None),
    ([0.5, -(2.0 ** 49), 1e15 * (1 + 2 ** -52)], "is not a plausible value"),
])
def test_itl_values_are_limit_checked(itl, why):
    line = orjson.dumps({"kind": "request", "t": 1.0, "run": "a", "step": 1, "start": 0.5, "ttft": 0.1,
                         "latency": 0.2, "itl": itl})
    if why is None:
        got = E.decode(line).itl
        assert isinstance(got, array) and got.tolist() == itl
        assert [math.copysign(1, x) for x in got] == [math.copysign(1, x) for x in itl]  # -0.0 kept
        assert E.decode(E.encode(E.decode(line))) == E.decode(line)  # written back as the same list
    else:
        with pytest.raises(E.EventError, match=f"line 7: request.itl: .*{why}"):
            E.decode(line, 7)


def test_events_packed_for_the_read_helper_come_back_equal_and_in_order():
    """`pack_events` (requests in columns, the rest as they are) and `unpack_events` give back the very
    events, in their order and with their types (an int where a float may be, an empty ITL list)."""
    import pickle

    from tests.gen import generate

    evs = generate(steps=2, requests=5, itl_len=7, seed=3)
    evs.insert(3, E.decode(orjson.dumps({"kind": "request", "t": 5, "run": "a", "step": 1, "latency": 2,
                                         "itl": [], "error": "boom", "model": "m"})))
    got = E.unpack_events(pickle.loads(pickle.dumps(E.pack_events(evs))))
    assert got == evs and [type(e) for e in got] == [type(e) for e in evs]
    assert type(got[3].t) is int and type(got[3].latency) is int and got[3].itl == array("d")
    only = [e for e in evs if isinstance(e, E.Request)]
    assert E.unpack_events(E.pack_events(only)) == only and E.unpack_events(E.pack_events([])) == []


def test_repeated_labels_and_counts_are_one_object_each():
    """A run label, a model name, a step number on every line: one object per value, not one per event."""
    lines = [orjson.dumps({"kind": "request", "t": 1.0, "run": "vllm-sleep1", "step": 1000 + i // 2,
                           "model": "Qwen/Qwen2.5-7B-Instruct", "prompt_tokens": 1500, "output_tokens": 70000,
                           "itl": [0.01]}) for i in range(4)]
    a, b, c, d = (E.decode(line) for line in lines)
    assert a.run is b.run is d.run and a.model is c.model and a.prompt_tokens is d.prompt_tokens
    assert a.step is b.step and a.step == 1000 and c.step == 1001
    assert a.output_tokens == b.output_tokens == 70000  # beyond SHARED_INT_LIMIT: equal, kept as read
    assert E.decode(lines[0]) == a
