"""How a set of runs is judged and reported: one value object every report, the verdict and the UI share.

Why one object: the flags that change what a verdict says (`--allow-mismatch`, `--include-first-step`,
`--goodput`) must give the same numbers in text, Markdown, JSON, CSV and every UI screen; threading them
one by one through each renderer is how two of them would drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportOptions:
    #: rank runs on different devices or models anyway (their differences stay caveats)
    allow_mismatch: bool = False
    #: count step 1 (first LoRA batch, CUDA set-up, cold caches) in the steady-state samples
    include_first_step: bool = False
    #: vLLM's --goodput SLOs as (metric, milliseconds): metric in ttft, tpot, e2el
    goodput: tuple[tuple[str, float], ...] = ()
