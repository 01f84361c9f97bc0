"""An engine server someone else started (`--vllm-url`, `--sglang-url`): what it answers, what it allows.

sgtui neither starts nor stops such a server. It asks the engine's own endpoints what the server is (version,
model, device) and which of sgtui's strategies and weight syncs it can take part in:

- vLLM: /health, /v1/models, /version; /is_sleeping and /server_info exist only in dev mode
  (VLLM_SERVER_DEV_MODE=1), which /sleep and /wake_up need; /server_info?config_format=json says whether
  sleep mode (`--enable-sleep-mode`, needed on GPU; on CPU /sleep only pauses) and LoRA (`--enable-lora`)
  are on; /v1/load_lora_adapter exists only with VLLM_ALLOW_RUNTIME_LORA_UPDATING (a 404 otherwise).
  Without /server_info, LoRA shows in /metrics (`vllm:lora_requests_info`, declared only with LoRA on).
- SGLang: /health, /v1/models, /get_model_info, /get_server_info (its server args: enable_memory_saver, which
  /release_memory_occupation needs on GPU, enable_lora, device).

`keep` always works (nothing is offloaded); `restart` and the restart/full-weight syncs never do (the
config refuses them: sgtui.config.RunConfig.validate). Used by preflight (before anything starts) and by the
runner's engine (sgtui/runner/engines/base.py, when it attaches), so both refuse with the same line.
Only the standard library and httpx: it runs in sgtui's own environment and in the engines' venvs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: What a report says for every run on an external server (sgtui/export/text.py, markdown.py).
NOT_CONTROLLED = ("engine flags and startup were the server owner's (startup not measured); the server's "
                  "processes are not sgtui's, so per-process GPU memory cannot name them")


class ExternalError(Exception):
    """The server does not answer as the engine should; one line naming the URL."""


@dataclass
class Server:
    backend: str
    url: str
    version: str = ""
    models: list[str] = field(default_factory=list)  # served model names, the base model first
    root: str = ""  # the model (path or hub id) the server loaded, where it says
    device: str = ""  # cpu | cuda | ..., where it says
    offload: bool = False  # vLLM /sleep + /wake_up, SGLang /release_memory_occupation + resume
    offload_why: str = ""  # why not
    lora: bool = False  # runtime LoRA load/unload
    lora_why: str = ""  # why not

    def describe(self) -> str:
        what = f"{self.backend} {self.version or '(version not reported)'}"
        model = self.models[0] if self.models else "?"
        if self.root and self.root != model:
            model = f"{self.root} served as {model}"
        offload = "sleep" if self.backend == "vllm" else "release"
        return (f"external server at {self.url} (not started by sgtui): {what}, model {model}"
                + (f", on {self.device}" if self.device else "")
                + f"; {offload} {'available' if self.offload else 'unavailable'}, "
                + f"LoRA loading {'available' if self.lora else 'unavailable'}")


def normalize_url(text: str) -> str:
    """`http(s)://HOST:PORT` without a trailing slash or `/v1`; ValueError with the reason otherwise."""
    from urllib.parse import urlsplit

    url = text.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http://HOST:PORT (the server's base URL)")
    try:
        parts.port
    except ValueError:
        raise ValueError("the port is not a number") from None
    if parts.path.strip("/") or parts.query:
        raise ValueError("expected the server's base URL, without a path (http://HOST:PORT)")
    return url


def _json(client, path: str, **kw) -> dict | None:
    """The JSON body of a 200 answer to GET path; None for any other answer."""
    try:
        r = client.get(path, **kw)
        return r.json() if r.status_code == 200 else None
    except Exception:  # noqa: BLE001 - an optional endpoint: absent, or not JSON
        return None


def probe(backend: str, url: str, timeout: float = 10.0) -> Server:
    """Ask the server what it is and allows; ExternalError (one line naming the URL) if it does not answer as
    a `backend` server."""
    import httpx

    srv = Server(backend=backend, url=url)
    with httpx.Client(base_url=url, timeout=timeout) as client:
        try:
            r = client.get("/health")
        except httpx.HTTPError as e:
            raise ExternalError(f"{backend} server at {url} does not answer ({type(e).__name__}: {e or 'no reply'})"
                                ) from None
        if r.status_code != 200:
            raise ExternalError(f"{backend} server at {url}: /health answered {r.status_code}: not ready to serve")
        models = _json(client, "/v1/models")
        if not models or not isinstance(models.get("data"), list) or not models["data"]:
            raise ExternalError(f"{backend} server at {url}: /v1/models lists no model (is it an OpenAI-compatible "
                                f"{backend} server?)")
        data = [m for m in models["data"] if isinstance(m, dict) and m.get("id")]
        base = [m for m in data if not m.get("parent")] or data
        srv.models = [str(m["id"]) for m in base]
        srv.root = str(base[0].get("root") or "") if base else ""
        (_vllm if backend == "vllm" else _sglang)(client, srv)
    return srv


def _vllm(client, srv: Server) -> None:
    srv.version = str((_json(client, "/version") or {}).get("version", ""))
    dev = _json(client, "/is_sleeping") is not None
    info = _json(client, "/server_info", params={"config_format": "json"}) if dev else None
    cfg = info.get("vllm_config") if isinstance(info, dict) else None
    cfg = cfg if isinstance(cfg, dict) else {}
    model_cfg = cfg.get("model_config") if isinstance(cfg.get("model_config"), dict) else {}
    device_cfg = cfg.get("device_config") if isinstance(cfg.get("device_config"), dict) else {}
    srv.device = str(device_cfg.get("device_type") or device_cfg.get("device") or "")
    if not dev:
        srv.offload_why = "no /sleep: the server is not in dev mode (VLLM_SERVER_DEV_MODE=1)"
    elif model_cfg.get("enable_sleep_mode") or srv.device == "cpu":
        srv.offload = True
    else:
        srv.offload_why = "/sleep frees nothing: the server was started without --enable-sleep-mode"
    if cfg:
        lora_on = cfg.get("lora_config") is not None
    else:
        try:
            lora_on = "vllm:lora_requests_info" in client.get("/metrics").text
        except Exception:  # noqa: BLE001
            lora_on = False
    if not lora_on:
        srv.lora_why = "the server was started without --enable-lora"
        return
    try:  # the route exists only with runtime updating on; an empty body is refused before anything loads
        r = client.post("/v1/load_lora_adapter", json={})
        routed = r.status_code not in (404, 405)
    except Exception:  # noqa: BLE001
        routed = False
    srv.lora = routed
    if not routed:
        srv.lora_why = "no /v1/load_lora_adapter: the server runs without VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"


def _sglang(client, srv: Server) -> None:
    info = _json(client, "/get_server_info") or _json(client, "/server_info") or {}
    srv.version = str(info.get("version", ""))
    srv.device = str(info.get("device") or "")
    if not srv.root:
        srv.root = str((_json(client, "/get_model_info") or {}).get("model_path") or "")
    if info.get("enable_memory_saver") or srv.device == "cpu":
        srv.offload = True
    else:
        srv.offload_why = "/release_memory_occupation needs a server started with --enable-memory-saver"
    if info.get("enable_lora") or info.get("lora_paths"):
        srv.lora = True
    else:
        srv.lora_why = "the server was started without --enable-lora"


def refusal(label: str, backend: str, strategy: str, sync: str, srv: Server) -> str:
    """Why this run cannot measure this server ("" when it can); one line naming the URL."""
    flag = f"--{backend}-url {srv.url}"
    if strategy in ("sleep1", "sleep2", "release") and not srv.offload:
        return f"run {label}: {backend}:{strategy} with {flag}: {srv.offload_why}; use {backend}:keep"
    if sync == "lora" and not srv.lora:  # `none` serves the base model on a server without LoRA
        return (f"run {label}: +lora with {flag}: {srv.lora_why}; use {backend}:{strategy}+none (no weight sync) "
                "or a server with LoRA loading")
    return ""


def local_model(srv: Server) -> str:
    """The server's model as a local directory sgtui can read the tokenizer from ("" when it is not one)."""
    if srv.root and (Path(srv.root).expanduser() / "config.json").is_file():
        return str(Path(srv.root).expanduser())
    return ""


def report_line(config: dict | None) -> str:
    """The line a report prints for a run on an external server ("" for a run sgtui started)."""
    url = (config or {}).get("external_url") if isinstance(config, dict) else ""
    if not url:
        return ""
    return f"external engine at {url}, not controlled by sgtui: {NOT_CONTROLLED}"


def server_model(backend: str, url: str) -> str:
    """The model directory of the server at `url` where it is one on this machine ("" when it does not answer or
    its model is not a local directory): prompts are tokenized with the server's own tokenizer."""
    try:
        return local_model(probe(backend, url, timeout=5.0))
    except ExternalError:
        return ""
