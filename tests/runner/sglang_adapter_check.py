"""The tests' own check that SGLang serves the adapter asked for: greedy completions straight to the server.

The step loop checks adapters with the load generator (sgtui/runner/__main__.py `verify_adapter`, through
the engine's `served_model_matches`); these helpers ask the server directly, with SGLang's own refusal
texts, so that an engine test can tell what answered without running the loop. Test-only: the product
never calls them.
"""

from __future__ import annotations

import httpx

from sgtui.runner.engines.base import EngineError
from sgtui.runner.engines.sglang import SglangEngine

ADAPTER_ADVICE = ('SGLang selects an adapter with "model": "BASE:NAME"; a bare "NAME" (or an unknown name) is '
                  "answered by the base model without an error")


def check_request_model(eng: SglangEngine, model: str) -> None:
    """Refuse a model string that SGLang would silently serve with the base model."""
    if eng.loaded and model != eng.request_model():
        raise EngineError("CONFIG", f"requests ask for model {model!r}, but the loaded adapter is "
                          f"{eng.request_model()!r}", advice=ADAPTER_ADVICE)


async def greedy(eng: SglangEngine, model: str, prompt: str, max_tokens: int) -> tuple[str, str]:
    """(served model, text) of one greedy, non-streamed completion."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
    try:
        r = await eng.client.post("/v1/completions", json=body, timeout=eng.cfg.request_timeout)
    except httpx.HTTPError as e:
        await eng.check_crashed()
        raise EngineError("REQUEST", f"sglang completion with model {model!r}: {type(e).__name__}: {e}",
                          eng.tail()) from None
    if r.status_code != 200:
        raise EngineError("CONFIG" if model != eng.cfg.served_model_name else "REQUEST",
                          f"sglang completion with model {model!r} answered {r.status_code}: {r.text[:300]}",
                          eng.tail(), ADAPTER_ADVICE if ":" in model else "")
    j = r.json()
    return str(j.get("model") or ""), "".join(c.get("text") or "" for c in j.get("choices") or ())


async def verify_adapter(eng: SglangEngine, prompt: str, max_tokens: int = 8) -> str:
    """Prove that the loaded adapter is what answers `request_model()`.

    Two checks: the model name SGLang reports back, and a greedy completion that must differ from
    the base model's (SGLang serves a bare or unknown name with the base model, silently). An adapter
    that really equals the base model (a PEFT init with zero B matrices) fails the second check too:
    it cannot be told apart, so sgtui's test adapters are never zero.
    """
    if not eng.loaded:
        return "no adapter loaded"
    want = eng.request_model()
    check_request_model(eng, want)
    got, text = await greedy(eng, want, prompt, max_tokens)
    if not eng.served_model_matches(want, got):
        raise EngineError("CONFIG", f"asked for adapter {want!r} but {got!r} answered", eng.tail(), ADAPTER_ADVICE)
    _, base_text = await greedy(eng, eng.cfg.served_model_name, prompt, max_tokens)
    if text == base_text:
        raise EngineError("CONFIG", f"adapter {want!r} answers exactly like the base model: the adapter is "
                          "not applied (wrong adapter name?)", eng.tail(), ADAPTER_ADVICE)
    return f"{want} differs from the base model"
