"""Prompts for the rollouts: identical across every run of a session, whatever the backend.

Everything is derived from the run config's seed and the served model's own
tokenizer (loaded with `tokenizers`, no transformers import), so two runs of
a session send the same token sequences. GRPO needs several rollouts of one
prompt: prompts come in groups of `group_size` that differ only in their
sampling seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from sgtui.config import ConfigError, RunConfig

_WORDS = (
    "the model reads a question and writes an answer step by step until the final number is clear "
    "apples oranges trains minutes hours total each left more less twice half sum difference product"
).split()
SYSTEM_PREFIX = (
    "You are an agent working in a shell. Tools: ls, cat, grep, python. Think step by step, "
    "call one tool per turn, and finish with the answer on the last line. "
)


@dataclass
class Prompt:
    id: str
    text: str = ""
    messages: list[dict] = field(default_factory=list)
    reference: str = ""
    group: int = 0
    seed_offset: int = 0  # sampling seed offset: rollouts of one group differ only here


def _load_tokenizer(tokenizer_dir: str):
    path = Path(tokenizer_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def _synthetic_text(rnd: random.Random, tok, n_tokens: int) -> str:
    words: list[str] = []
    text = ""
    while True:
        words.extend(rnd.choice(_WORDS) for _ in range(max(8, n_tokens // 2)))
        text = " ".join(words)
        if tok is None:
            if len(words) >= n_tokens:
                return " ".join(words[:n_tokens])
            continue
        ids = tok.encode(text, add_special_tokens=False).ids
        if len(ids) >= n_tokens:
            return _exact_cut(tok, ids, n_tokens)


def _exact_cut(tok, ids: list[int], n_tokens: int) -> str:
    """Text of the first ~n_tokens ids that the tokenizer encodes back to exactly n_tokens tokens.

    Decoding a cut and encoding it again is not always the identity (a cut inside a word can merge into
    other tokens), and the server counts the re-encoded text: the cut moves a few tokens either way until
    the round trip gives the length asked for (the first try does, almost always)."""
    first = tok.decode(ids[:n_tokens])
    for delta in (0, -1, 1, -2, 2, -3, 3, -4, 4, -5, 5, -6, 6, -7, 7, -8, 8):
        cut = n_tokens + delta
        if not 1 <= cut <= len(ids):
            continue
        text = first if delta == 0 else tok.decode(ids[:cut])
        if len(tok.encode(text, add_special_tokens=False).ids) == n_tokens:
            return text
    return first


def _read_jsonl(path: str) -> list[Prompt]:
    out: list[Prompt] = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as e:
        raise ConfigError(f"--dataset {path}: cannot read ({e.strerror})") from None
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ConfigError(f"{path}:{lineno}: not valid JSON; expected {{\"question\",\"answer\"}} or {{\"messages\"}}") from None
        if isinstance(obj, dict) and isinstance(obj.get("question"), str):
            answer = str(obj.get("answer", ""))
            ref = answer.split("####")[-1].strip() if "####" in answer else answer.strip()
            out.append(Prompt(id=f"{lineno}", text=obj["question"], reference=ref))
        elif isinstance(obj, dict) and isinstance(obj.get("messages"), list) and obj["messages"]:
            msgs = obj["messages"]
            if not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
                raise ConfigError(f"{path}:{lineno}: every message needs \"role\" and \"content\"")
            ref = ""
            if msgs[-1].get("role") == "assistant":
                ref = str(msgs[-1]["content"])
                msgs = msgs[:-1]
            out.append(Prompt(id=f"{lineno}", messages=msgs, reference=ref))
        else:
            raise ConfigError(f"{path}:{lineno}: expected an object with \"question\" (+\"answer\") or \"messages\"")
    if not out:
        raise ConfigError(f"--dataset {path}: no prompts in the file")
    return out


def _multiturn(rnd: random.Random, tok, n: int, n_tokens: int) -> list[Prompt]:
    """Shared-prefix agent conversations: one long common prefix, then per-conversation turns."""
    prefix = SYSTEM_PREFIX + _synthetic_text(random.Random(0), tok, max(16, n_tokens // 2))
    out = []
    for i in range(n):
        turns = [{"role": "system", "content": prefix}]
        for k in range(rnd.randint(1, 3)):
            turns.append({"role": "user", "content": _synthetic_text(rnd, tok, max(4, n_tokens // 8))})
            turns.append({"role": "assistant", "content": f"tool call {k}: ls"})
        turns.append({"role": "user", "content": "What is the answer?"})
        out.append(Prompt(id=f"mt{i}", messages=turns))
    return out


def build_prompts(cfg: RunConfig, tokenizer_dir: str) -> list[Prompt]:
    """cfg.num_rollouts prompts in GRPO groups of cfg.group_size; deterministic from cfg.seed."""
    group_size = max(1, min(cfg.group_size, cfg.num_rollouts))
    n_groups = math.ceil(cfg.num_rollouts / group_size)
    rnd = random.Random(cfg.seed)
    tok = _load_tokenizer(tokenizer_dir)
    if cfg.workload == "synthetic":
        bases = [Prompt(id=f"s{i}", text=_synthetic_text(rnd, tok, cfg.max_input_tokens)) for i in range(n_groups)]
    elif cfg.workload == "jsonl":
        if not cfg.dataset:
            raise ConfigError("--workload jsonl needs --dataset PATH")
        pool = _read_jsonl(cfg.dataset)
        bases = [pool[i % len(pool)] for i in range(n_groups)]
    elif cfg.workload == "multiturn":
        bases = _multiturn(rnd, tok, n_groups, cfg.max_input_tokens)
    else:
        raise ConfigError(f"--workload {cfg.workload!r}: expected synthetic, jsonl or multiturn")
    prompts = []
    for g, base in enumerate(bases):
        for k in range(group_size):
            if len(prompts) == cfg.num_rollouts:
                break
            prompts.append(Prompt(id=f"{base.id}.{k}", text=base.text, messages=base.messages,
                                  reference=base.reference, group=g, seed_offset=g * group_size + k))
    return prompts
