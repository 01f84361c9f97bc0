"""How a set of runs is judged and reported: one value object every report, the verdict and the UI share.

Why one object: the flags that change what a verdict says (`--allow-mismatch`, `--include-first-step`,
`--goodput`) must give the same numbers in text, Markdown, JSON, CSV and every UI screen; threading them
one by one through each renderer is how two of them would drift apart. Where the reports go besides files
(`--log-to` a tracker) travels with them, and the detached orchestrator gets the whole object as one JSON
argument (`to_json`/`from_json`), not flag by flag. The CLI's report flags take their defaults from these
fields (sgtui/cli.py), so this is the one place a report default is spelled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class ReportOptions:
    #: rank runs on different devices or models anyway (their differences stay caveats)
    allow_mismatch: bool = False
    #: count step 1 (first LoRA batch, CUDA set-up, cold caches) in the steady-state samples
    include_first_step: bool = False
    #: vLLM's --goodput SLOs as (metric, milliseconds): metric in ttft, tpot, e2el
    goodput: tuple[tuple[str, float], ...] = ()
    #: after the reports: log each run's per-step numbers to this tracker (sgtui.trackers), "" for none
    log_to: str = ""
    log_dir: str = "runs"  # where the tracker writes (TensorBoard logdir, W&B dir)

    def to_json(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> "ReportOptions":
        d = orjson.loads(text)
        return cls(allow_mismatch=bool(d["allow_mismatch"]), include_first_step=bool(d["include_first_step"]),
                   goodput=tuple((str(k), float(v)) for k, v in d["goodput"]), log_to=str(d["log_to"]),
                   log_dir=str(d["log_dir"]))
