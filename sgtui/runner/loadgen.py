"""Streaming load generator: the rollouts of one RL step, measured like `vllm bench serve`.

One coroutine per request, at most `concurrency` in flight (a fixed set of
slot workers pulling from a queue, so each request knows its slot for the
trace view). The request function never raises: every failure is an
`error` string on its record.

A client that is itself the bottleneck would falsify the comparison, so the
per-chunk path is minimal: a line is scanned for a non-empty `choices` list
(a generated token, as `vllm bench serve` counts it) and only timestamps are taken; chunk
JSON is decoded after the request ends (for the completion text the trainer
needs, the served model name and the usage counts).

The HTTP client is aiohttp, as in `vllm bench serve`, not httpx (which the engines' control calls use):
measured side by side on the real vLLM CPU server (32 requests x 64 tokens, 8 in flight, 6 alternating
rounds), httpx's pure-Python stack spent 0.58 s CPU a round against aiohttp's 0.24 s, and on 2 cores that
CPU came out of the server's share: 750 vs 920 tok/s, mean TTFT 72 vs 60 ms. One asyncio thread at
~0.28 ms a chunk would also cap the client near 3,500 tokens/s, below what one GPU serves.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from dataclasses import dataclass, field
from typing import Callable

import aiohttp
import orjson

from sgtui.events import Event, Request
from sgtui.runner.workload import Prompt


@dataclass
class RequestOutcome:
    prompt: Prompt
    text: str = ""
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    served_model: str = ""
    ttft: float = 0.0
    latency: float = 0.0
    itl: array = field(default_factory=lambda: array("d"))  # as `events.Request` holds them: no conversion
    start: float = 0.0
    slot: int = 0
    # With want_logprobs: the engine's prompt tokens, the sampled tokens and each one's logprob (the trainer
    # trains on exactly these tokens and scores them with its own logprobs: the mismatch)
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


def make_client(concurrency: int, read_timeout: float = 600.0) -> aiohttp.ClientSession:
    """One pooled keep-alive session for the whole run, sized for the concurrency (call inside the loop)."""
    connector = aiohttp.TCPConnector(limit=concurrency + 4, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=read_timeout)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def request_body(endpoint: str, model: str, prompt: Prompt, max_tokens: int, temperature: float, seed: int,
                 want_logprobs: bool = False) -> dict:
    body: dict = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,  # vLLM and SGLang extra field: equal output lengths on both engines
    }
    if temperature > 0:
        # Seeded sampling makes rollouts reproducible; greedy needs no seed (and a per-request seed
        # costs vLLM a separate generator per request).
        body["seed"] = seed
    if want_logprobs:
        # Both engines' completions API: `logprobs: 0` gives the sampled token's logprob alone (no top-k
        # alternatives to compute or send), `return_token_ids` the prompt's and the sampled tokens' ids.
        body["return_token_ids"] = True
        body["logprobs"] = True if endpoint == "chat" else 0
    if endpoint == "chat":
        body["messages"] = prompt.messages or [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text if prompt.text else _flatten(prompt.messages)
    return body


def _flatten(messages: list[dict]) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


#: A chunk with a non-empty `choices` list stands for generated tokens, as `vllm bench serve` counts them
#: (its text can be empty: a random model emits partial UTF-8); the final usage chunk has `"choices":[]`.
_CHOICE_MARKER = b'"choices":[{'
_JSON = {"Content-Type": "application/json"}


async def send_request(client: aiohttp.ClientSession, url: str, body: dict, outcome: RequestOutcome) -> RequestOutcome:
    """Stream one request; fills `outcome` in place and never raises."""
    chunks: list[bytes] = []
    ttft = 0.0
    itl = outcome.itl
    outcome.start = time.time()
    st = time.perf_counter()
    most_recent = st
    try:
        async with client.post(url, data=orjson.dumps(body), headers=_JSON) as resp:
            if resp.status != 200:
                text = (await resp.read()).decode("utf-8", "replace")
                outcome.error = f"HTTP {resp.status}: {text[:300]}"
                outcome.latency = time.perf_counter() - st
                return outcome
            rest = b""
            # Whole blocks as they arrive (no line-length limit, unlike aiohttp's line iterator), split into
            # SSE lines here; read to the end of the body so the connection goes back to the pool.
            async for block in resp.content.iter_any():
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        continue
                    chunks.append(data)
                    if _CHOICE_MARKER in data:
                        now = time.perf_counter()
                        if ttft == 0.0:
                            ttft = now - st
                            outcome.ttft = ttft
                        else:
                            itl.append(now - most_recent)
                        most_recent = now
        # As vLLM's benchmark: the request ends at its last token chunk, not when the server closed the
        # stream after the usage chunk and [DONE] (that tail is the server's bookkeeping, not generation).
        outcome.latency = (most_recent if ttft else time.perf_counter()) - st
    except Exception as e:  # noqa: BLE001 - the request function never raises
        outcome.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        outcome.latency = time.perf_counter() - st
        return outcome
    _finish(outcome, chunks)
    return outcome


def _finish(outcome: RequestOutcome, chunks: list[bytes]) -> None:
    """Decode chunks after the fact: text for the trainer, model name, usage counts."""
    pieces: list[str] = []
    for raw in chunks:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            outcome.error = outcome.error or f"malformed chunk: {raw[:80]!r}"
            continue
        if not outcome.served_model:
            outcome.served_model = obj.get("model") or ""
        for choice in obj.get("choices") or ():
            piece = choice.get("text")
            if piece is None:
                piece = (choice.get("delta") or {}).get("content")
            if piece:
                pieces.append(piece)
            if choice.get("prompt_token_ids"):
                outcome.prompt_ids = choice["prompt_token_ids"]
            if choice.get("token_ids"):
                outcome.token_ids.extend(choice["token_ids"])
            lp = choice.get("logprobs")
            if lp:
                # completions: {"token_logprobs": [...]}; chat: {"content": [{"logprob": ...}, ...]}
                got = lp.get("token_logprobs")
                outcome.logprobs.extend(got if got is not None else [c.get("logprob") for c in lp.get("content") or ()])
        if obj.get("prompt_token_ids") and not outcome.prompt_ids:  # vLLM's chat API: on the response
            outcome.prompt_ids = obj["prompt_token_ids"]
        usage = obj.get("usage")
        if usage:
            outcome.prompt_tokens = usage.get("prompt_tokens") or 0
            outcome.output_tokens = usage.get("completion_tokens") or 0
        if obj.get("object") == "error" or "error" in obj and not obj.get("choices"):
            outcome.error = str(obj.get("message") or obj.get("error"))[:300]
    outcome.text = "".join(pieces)
    if not outcome.error and outcome.ttft == 0.0:
        outcome.error = "no token received"


async def run_batch(client: aiohttp.ClientSession, base_url: str, endpoint: str, model: str, prompts: list[Prompt], *,
                    concurrency: int, max_tokens: int, temperature: float, seed: int, run: str, step: int,
                    emit: Callable[[Event], None] | None, want_logprobs: bool = False) -> list[RequestOutcome]:
    """Send every prompt with at most `concurrency` in flight; one `request` event each (unless emit is None)."""
    url = base_url.rstrip("/") + ("/v1/chat/completions" if endpoint == "chat" else "/v1/completions")
    outcomes = [RequestOutcome(prompt=p) for p in prompts]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(prompts)):
        queue.put_nowait(i)

    async def slot_worker(slot: int) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            o = outcomes[i]
            o.slot = slot
            body = request_body(endpoint, model, prompts[i], max_tokens, temperature, seed + prompts[i].seed_offset,
                                want_logprobs)
            await send_request(client, url, body, o)
            if emit is not None:
                emit(Request(t=time.time(), run=run, step=step, start=o.start, ttft=o.ttft, latency=o.latency,
                             itl=o.itl, prompt_tokens=o.prompt_tokens, output_tokens=o.output_tokens,
                             error=o.error, slot=slot, model=model, served_model=o.served_model))

    await asyncio.gather(*(slot_worker(s) for s in range(min(concurrency, len(prompts)))))
    return outcomes


async def warmup(client: aiohttp.ClientSession, base_url: str, endpoint: str, model: str, prompts: list[Prompt], *,
                 concurrency: int, max_tokens: int, seed: int) -> list[RequestOutcome]:
    """A batch that is not counted (no events): first-request compilation and caches stay out of step 1."""
    return await run_batch(client, base_url, endpoint, model, prompts, concurrency=concurrency,
                           max_tokens=max_tokens, temperature=0.0, seed=seed, run="", step=0, emit=None)
