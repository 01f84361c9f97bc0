"""Rewards per workload: what GRPO optimises. Pure functions of (completion, reference)."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def exact_match(completion: str, reference: str) -> float:
    """GSM8K style: 1.0 when the last number of the completion equals the reference's."""
    nums = _NUMBER.findall(completion)
    ref = _NUMBER.findall(reference)
    if not nums or not ref:
        return 0.0
    return 1.0 if nums[-1].replace(",", "") == ref[-1].replace(",", "") else 0.0


def format_reward(completion: str) -> float:
    """Synthetic prompts have no answer: reward readable, non-repetitive text, in [0, 1].

    The share of characters that are ASCII letters or spaces times the distinct-word ratio. Both parts
    vary from sample to sample even for a model with random weights (the letter share of its byte-level
    tokens does), so GRPO's group-normalized advantages are not all zero and training has a signal to
    follow; a distinct-word ratio alone is 1.0 for nearly every random completion.
    """
    words = completion.split()
    if not words:
        return 0.0
    letters = sum(1 for c in completion if c == " " or ("a" <= c.lower() <= "z"))
    return (letters / len(completion)) * (len(set(words)) / len(words))


def reward(completion: str, reference: str) -> float:
    return exact_match(completion, reference) if reference else format_reward(completion)
