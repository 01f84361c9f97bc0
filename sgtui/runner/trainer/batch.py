"""The training batch: rollouts on disk (JSON lines) -> token ids, completion masks, advantages.

The runner writes `batch.jsonl` (prompt, completion, group, reward per
rollout, and where the engine returned them, the prompt's and the sampled
tokens' ids and the engine's log-probability of each sampled token); every
rank reads the same file and builds the same tensors. The trainer trains on
exactly the tokens the engine sampled: text re-tokenised can differ from the
sampled ids (a random or small model emits partial UTF-8 and odd merges), and
then neither the loss nor the logprob mismatch would be about those tokens.
Without ids (an engine that does not return them), the completion is
re-tokenised with the served model's tokenizer and has no engine logprobs. A
chat prompt reaches the trainer as the repr of its message list; it is
rendered with the tokenizer's chat template, as the engine did when it served it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import torch

from sgtui.runner.trainer.grpo import group_advantages


@dataclass
class Sample:
    prompt: str
    completion: str
    group: int
    reward: float
    prompt_ids: list[int] = field(default_factory=list)  # as the engine tokenised the prompt
    completion_ids: list[int] = field(default_factory=list)  # the sampled tokens
    logprobs: list[float] = field(default_factory=list)  # the engine's logprob of each sampled token


@dataclass
class Encoded:
    input_ids: list[int]
    prompt_len: int  # tokens before the completion
    advantage: float
    engine_logprobs: list[float] = field(default_factory=list)  # per completion token kept, or empty


@dataclass
class MicroBatch:
    ids: torch.Tensor  # [b, s] right-padded
    mask: torch.Tensor  # [b, s-1]: 1 where position t predicts a completion token
    adv: torch.Tensor  # [b]
    engine_logp: torch.Tensor  # [b, s-1]: the engine's logprob of the token position t predicts
    engine_mask: torch.Tensor  # [b, s-1]: 1 where engine_logp holds one


def read_batch(path: str | Path) -> list[Sample]:
    out = []
    for line in Path(path).read_bytes().splitlines():
        if line.strip():
            d = orjson.loads(line)
            out.append(Sample(prompt=d["prompt"], completion=d["completion"], group=int(d["group"]),
                              reward=float(d["reward"]), prompt_ids=list(d.get("prompt_ids") or ()),
                              completion_ids=list(d.get("completion_ids") or ()),
                              logprobs=[float(x) for x in d.get("logprobs") or ()]))
    return out


def write_batch(path: str | Path, samples: list[Sample]) -> None:
    Path(path).write_bytes(b"".join(orjson.dumps(s.__dict__) + b"\n" for s in samples))


def _messages(prompt: str) -> list[dict] | None:
    if not prompt.startswith("[{"):
        return None
    try:
        msgs = ast.literal_eval(prompt)
    except (ValueError, SyntaxError):
        return None
    if isinstance(msgs, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
        return msgs
    return None


class Tokenizer:
    """The served model's tokenizer, loaded with `tokenizers` alone when the model has a tokenizer.json.

    transformers is imported only for what needs it (a chat template, or a
    model without tokenizer.json): its import costs several seconds in every
    rank of every step on a small CPU.
    """

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        self._hf = None
        self._fast = None
        path = self.model_dir / "tokenizer.json"
        if path.exists():
            from tokenizers import Tokenizer as Fast

            self._fast = Fast.from_file(str(path))
        self.pad_token_id = self._pad_id()

    def hf(self):
        if self._hf is None:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(str(self.model_dir))
        return self._hf

    def _pad_id(self) -> int:
        if self._fast is None:
            tok = self.hf()
            return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        cfg_path = self.model_dir / "tokenizer_config.json"
        cfg = orjson.loads(cfg_path.read_bytes()) if cfg_path.exists() else {}
        for name in ("pad_token", "eos_token"):
            tok = cfg.get(name)
            tok = tok.get("content") if isinstance(tok, dict) else tok
            if tok and self._fast.token_to_id(tok) is not None:
                return self._fast.token_to_id(tok)
        return 0

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return self._fast.encode(text, add_special_tokens=False).ids
        return self.hf().encode(text, add_special_tokens=False)

    def chat(self, messages: list[dict]) -> list[int]:
        out = self.hf().apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def encode(samples: list[Sample], tokenizer: Tokenizer, max_len: int) -> list[Encoded]:
    """Token ids of prompt + completion, cut to max_len; samples without a completion token are dropped."""
    adv = group_advantages([s.reward for s in samples], [s.group for s in samples])
    out = []
    for s, a in zip(samples, adv):
        if s.prompt_ids and s.completion_ids:
            p_ids, c_ids = s.prompt_ids, s.completion_ids
            lps = s.logprobs if len(s.logprobs) == len(c_ids) else []
        else:
            msgs = _messages(s.prompt)
            p_ids = tokenizer.chat(msgs) if msgs is not None else tokenizer.encode(s.prompt)
            c_ids, lps = tokenizer.encode(s.completion), []
        ids = (p_ids + c_ids)[:max_len]
        if len(ids) > len(p_ids) and len(p_ids) > 0:
            out.append(Encoded(input_ids=ids, prompt_len=len(p_ids), advantage=a,
                               engine_logprobs=lps[:len(ids) - len(p_ids)]))
    return out


def collate(items: list[Encoded], pad_id: int, multiple: int = 8) -> MicroBatch:
    """Right-padded tensors of a micro-batch (see MicroBatch).

    Right padding needs no attention change: padded positions come after every
    real token, so the causal mask already hides them, and the loss mask drops them.
    The length is rounded up to `multiple` so that consecutive steps reuse shapes.
    """
    s = max(len(e.input_ids) for e in items)
    s = -(-s // multiple) * multiple
    ids = torch.full((len(items), s), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), s - 1))
    engine_logp = torch.zeros((len(items), s - 1))
    engine_mask = torch.zeros((len(items), s - 1))
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, e.prompt_len - 1:n - 1] = 1.0  # position t predicts token t+1: completion tokens only
        if e.engine_logprobs:
            k = len(e.engine_logprobs)
            engine_logp[i, e.prompt_len - 1:e.prompt_len - 1 + k] = torch.tensor(e.engine_logprobs)
            engine_mask[i, e.prompt_len - 1:e.prompt_len - 1 + k] = 1.0
    adv = torch.tensor([e.advantage for e in items])
    return MicroBatch(ids=ids, mask=mask, adv=adv, engine_logp=engine_logp, engine_mask=engine_mask)


class Mismatch:
    """Train/rollout logprob mismatch over a step's sampled tokens, accumulated micro-batch by micro-batch.

    d = log p_trainer - log p_engine per token. k3 = exp(d) - 1 - d is the non-negative, unbiased k3
    estimator of KL(engine || trainer) on samples drawn from the engine (Schulman's k3), the quantity
    importance-sampling corrections in RL stacks (TIS, MIS) react to."""

    def __init__(self) -> None:
        self.n = 0
        self.abs_sum = 0.0
        self.abs_max = 0.0
        self.k3_sum = 0.0

    def add(self, trainer_logp: torch.Tensor, engine_logp: torch.Tensor, engine_mask: torch.Tensor) -> None:
        keep = engine_mask > 0
        if not bool(keep.any()):
            return
        d = (trainer_logp.double() - engine_logp.double())[keep]
        self.n += int(d.numel())
        self.abs_sum += float(d.abs().sum())
        self.abs_max = max(self.abs_max, float(d.abs().max()))
        self.k3_sum += float((d.exp() - 1.0 - d).sum())

    def result(self) -> dict[str, float]:
        """{} when no token had an engine logprob (the engine returned none)."""
        if not self.n:
            return {}
        return {"mean_abs": self.abs_sum / self.n, "max_abs": self.abs_max, "k3": self.k3_sum / self.n,
                "tokens": self.n}
