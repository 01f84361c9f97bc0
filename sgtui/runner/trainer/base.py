"""The trainer interface the step loop calls between offload and reload.

Both backends share the exact same trainer so training time is the control
variable of the comparison; only what surrounds it (offload, reload, weight
sync) differs by engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sgtui.config import RunConfig
from sgtui.events import Event


@dataclass
class Rollout:
    """One sampled completion, with its GRPO group and reward."""

    prompt: str
    completion: str
    group: int
    reward: float
    reference: str = ""
    output_tokens: int = 0
    prompt_ids: list[int] = field(default_factory=list)  # the engine's tokens, where it returned them
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # the engine's logprob of each completion token


class TrainerError(Exception):
    def __init__(self, category: str, message: str, log_tail: list[str] | None = None, advice: str = "") -> None:
        super().__init__(message)
        self.category, self.message, self.log_tail, self.advice = category, message, log_tail or [], advice


class Trainer(ABC):
    def __init__(self, cfg: RunConfig, emit: Callable[[Event], None], workdir: Path) -> None:
        self.cfg, self.emit, self.workdir = cfg, emit, workdir

    #: Launched once per run (a `trainer_start` phase before the engine starts) rather than per step.
    persistent: bool = False
    #: Scores the engine's sampled tokens with its own logprobs (the rollouts then ask the engine for token
    #: ids and logprobs).
    scores_rollouts: bool = False

    async def start(self) -> str:
        """Launch what lives for the whole run; returns the phase detail."""
        return ""

    @abstractmethod
    async def train(self, step: int, rollouts: list[Rollout]) -> str:
        """Run one training step; emit a `train` event; return the new adapter directory (PEFT format)."""

    def stop_now(self) -> None:
        """Tear down any process group (signal path)."""

    async def close(self) -> None:
        self.stop_now()
