"""The training batch: rollouts on disk (JSON lines) -> token ids, completion masks, advantages.

The runner writes `batch.jsonl` (prompt, completion, group, reward per
rollout); every rank reads the same file and builds the same tensors. The
completion is re-tokenised with the served model's tokenizer (the engines'
HTTP answers carry text, not token ids), appended to the tokenised prompt,
and only its tokens enter the loss. A chat prompt reaches the trainer as the
repr of its message list; it is rendered with the tokenizer's chat template,
as the engine did when it served it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
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


@dataclass
class Encoded:
    input_ids: list[int]
    prompt_len: int  # tokens before the completion
    advantage: float


def read_batch(path: str | Path) -> list[Sample]:
    out = []
    for line in Path(path).read_bytes().splitlines():
        if line.strip():
            d = orjson.loads(line)
            out.append(Sample(prompt=d["prompt"], completion=d["completion"], group=int(d["group"]),
                              reward=float(d["reward"])))
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
        msgs = _messages(s.prompt)
        p_ids = tokenizer.chat(msgs) if msgs is not None else tokenizer.encode(s.prompt)
        c_ids = tokenizer.encode(s.completion)
        ids = (p_ids + c_ids)[:max_len]
        if len(ids) > len(p_ids) and len(p_ids) > 0:
            out.append(Encoded(input_ids=ids, prompt_len=len(p_ids), advantage=a))
    return out


def collate(items: list[Encoded], pad_id: int, multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids [b, s], loss mask [b, s-1] over predicted tokens, advantages [b]); right-padded.

    Right padding needs no attention change: padded positions come after every
    real token, so the causal mask already hides them, and the loss mask drops them.
    The length is rounded up to `multiple` so that consecutive steps reuse shapes.
    """
    s = max(len(e.input_ids) for e in items)
    s = -(-s // multiple) * multiple
    ids = torch.full((len(items), s), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), s - 1))
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, e.prompt_len - 1:n - 1] = 1.0  # position t predicts token t+1: completion tokens only
    adv = torch.tensor([e.advantage for e in items])
    return ids, mask, adv
