"""What the UI asks of the hub (`Hub.command`): small typed values, not tuples of strings.

    hub.command(SeekStep(3, run="a:vllm")); hub.command(TogglePlay()); hub.command(Finished())

Why types: a misspelt command or a missing argument is caught where it is written (type checkers, a
TypeError at once), not silently ignored in the hub thread. The replay commands do nothing outside replay
mode, and nothing while the sessions are still being read. No Textual, no rich.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union, get_args


SPEEDS = ("1x", "10x", "max")


def check_speed(speed: str) -> str:
    if speed not in SPEEDS:
        raise ValueError(f"replay speed {speed!r}: expected one of {', '.join(SPEEDS)}")
    return speed


@dataclass(frozen=True)
class Refresh:
    """Rebuild the views from scratch (caches forgotten), e.g. after the terminal was resized."""


@dataclass(frozen=True)
class Finished:
    """The orchestrator is done: expected runs that never sent an event were skipped, not pending."""


@dataclass(frozen=True)
class TogglePlay:
    """Replay: play if paused (from the start if at the end), else pause."""


@dataclass(frozen=True)
class Play:
    """Replay: play (from the start if at the end)."""


@dataclass(frozen=True)
class Pause:
    """Replay: pause."""


@dataclass(frozen=True)
class SetSpeed:
    """Replay: "1x", "10x" or "max" (anything else: ValueError in the caller's thread)."""

    speed: str

    def __post_init__(self) -> None:
        check_speed(self.speed)


@dataclass(frozen=True)
class CycleSpeed:
    """Replay: the next speed (1x -> 10x -> max -> 1x)."""


@dataclass(frozen=True)
class SeekStep:
    """Replay: step `step` of run `run` (a column key; "" the run under the playhead); <= 0 the start.
    A step that run does not have is refused: nothing moves (the UI says so, from `ReplayStatus.run_steps`)."""

    step: int
    run: str = ""


@dataclass(frozen=True)
class SeekRel:
    """Replay: the next (+1) or previous (-1) step start of any run, all runs' steps in time order."""

    delta: int


@dataclass(frozen=True)
class SeekStart:
    """Replay: the start."""


@dataclass(frozen=True)
class SeekEnd:
    """Replay: the end (every event shown)."""


ReplayCommand = Union[TogglePlay, Play, Pause, SetSpeed, CycleSpeed, SeekStep, SeekRel, SeekStart, SeekEnd]
Command = Union[Refresh, Finished, ReplayCommand]
#: Every command type (for isinstance).
COMMANDS: tuple[type, ...] = get_args(Command)
