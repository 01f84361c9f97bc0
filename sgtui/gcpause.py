"""`gc_paused()`: the cyclic garbage collector off for a burst of new objects that hold no cycles.

Why: a replay makes millions of objects in bursts (decoding a session, loading its tail from the read's helper,
freezing thousands of steps for the summaries worker), and each burst of n objects triggers ~n / 700
young-generation collections and, now and then, a full one that walks every object not frozen
(`gc.freeze`): a frozen copy of a 1M-event session's runs took 0.2-0.4 s with the collector on, 0.06 s with it
off. Objects without cycles are freed by their reference counts either way. Standard library only.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off meanwhile, then as it was (nested uses leave it off until the outermost ends)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
