"""Run labels across sessions: one naming for the dashboard's columns and every report.

Contract:
    run_labels(labels_per_session) -> list[list[str]]   the label each run is shown under, unique
    session_tag(n) -> str                                "#n": session n (1-based, command-line order)
    legend(sources) -> list[tuple[str, str]]             ("#1", "a.jsonl"), ... (empty for one session)
    elide(label, width) -> str                           fits `width`, keeps the "#n" tag and both ends

A run keeps its own label while no other session shown has a run of that name; runs whose labels
collide get the tag of their session (`vllm-sleep1#2`), and the legend says which file each tag is.
Why one function: the dashboard named runs `<file stem>:<label>` and the text report `<label>#n`, so
a column and a report line about the same run read differently, and the stems of dated session files
made every column head read `202…eep1` (issue 14). Pure, no IO: the UI (`sgtui.viewmodel.views`) and
the exports (`sgtui.export.combined`) both call it.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

#: Backend names shrink first when a label must fit a narrow column (vllm-sleep1 -> v-sleep1).
_SHORT_BACKENDS = (("sglang", "sg"), ("vllm", "v"))


def session_tag(n: int) -> str:
    """The tag of the n-th session (1-based, in the order the files were given)."""
    return f"#{n}"


def run_labels(labels_per_session: Sequence[Sequence[str]]) -> list[list[str]]:
    """Shown label of every run, per session, same shape as the input.

    One session: labels as they are. Several: a label found in more than one session gets its
    session's tag; a tagged label that still collides (a run already named `x#2`) gets primes
    until unique, so a column key never names two runs."""
    if len(labels_per_session) <= 1:
        return [list(labels) for labels in labels_per_session]
    seen: dict[str, int] = {}
    for labels in labels_per_session:
        for lbl in labels:
            seen[lbl] = seen.get(lbl, 0) + 1
    used: set[str] = set()
    out: list[list[str]] = []
    for n, labels in enumerate(labels_per_session, start=1):
        shown_here = []
        for lbl in labels:
            shown = lbl if seen[lbl] == 1 else f"{lbl}{session_tag(n)}"
            while shown in used:
                shown += "'"
            used.add(shown)
            shown_here.append(shown)
        out.append(shown_here)
    return out


def legend(sources: Sequence[str]) -> list[tuple[str, str]]:
    """(tag, file name) per session when several sessions are shown: the key of the tags; none for one."""
    if len(sources) <= 1:
        return []
    return [(session_tag(n), Path(src).name if src else "live") for n, src in enumerate(sources, start=1)]


def elide(label: str, width: int) -> str:
    """`label` in at most `width` characters, still tellable from its neighbours: the session tag
    stays whole, backend names shrink first, then the middle of the rest goes
    (`sglang-release-lora#2` -> `sg-r…-lora#2`)."""
    if width <= 0:
        return ""
    if len(label) <= width:
        return label
    body, tag = label, ""
    hash_at = label.rfind("#")
    if hash_at > 0 and label[hash_at + 1:].rstrip("'").isdigit():
        body, tag = label[:hash_at], label[hash_at:]
    if len(tag) + 2 > width:  # no room for a body beside the tag: cut plainly
        return label[:width]
    for long, short in _SHORT_BACKENDS:
        body = body.replace(long, short)
    room = width - len(tag)
    if len(body) > room:
        if room < 4:
            body = body[:room]
        else:
            head = (room - 1) // 2
            tail = room - 1 - head
            body = body[:head] + "…" + body[-tail:]
    return body + tag
