"""Launch: every run option of the CLI in one form, and a preflight panel that gates Start.

The form is a view over `LaunchOptions` (prefilled from the CLI flags and the
last session). Every change re-runs the preflight (ports, venvs and engine
versions, GPUs and free memory, leftover servers of earlier runs, sessions
dir) in a worker thread, debounced; Start stays disabled, with the reason in
plain words, until the checks for exactly the values on screen have passed.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

from sgtui.config import BACKENDS, STRATEGIES, SYNCS, ConfigError, RunConfig
from sgtui.tui.host import host_of
from sgtui.viewmodel.launch_model import FIELDS, LaunchOptions
from sgtui.viewmodel.preflight_view import PreflightResult

DEBOUNCE_S = 0.5
BACKEND_NAMES = {"vllm": "vLLM", "sglang": "SGLang"}


class PreflightDone(Message):
    def __init__(self, key: bytes, result: PreflightResult) -> None:
        super().__init__()
        self.key = key
        self.result = result


class Recheck(Message):
    """Run the preflight again (after cleaning up leftovers)."""


class StartRequested(Message):
    """The launch form asks the app to start these runs (built and checked in a worker)."""

    def __init__(self, runs: list[RunConfig], options: LaunchOptions, session_path: Any = None, error: str = "") -> None:
        super().__init__()
        self.runs = runs
        self.options = options
        self.session_path = session_path
        self.error = error


def checks_text(result: PreflightResult | None, checking: bool) -> Text:
    t = Text()
    if result is None:
        t.append("checking…" if checking else "waiting for the form", style="dim")
        return t
    if result.error:
        t.append("✗ ", style="bold #ff5f5f")
        t.append(result.error + "\n")
    for c, info in [(c, False) for c in result.checks] + [(c, True) for c in result.info]:
        if info:
            t.append("• ", style="dim")
        else:
            t.append("✓ " if c.ok else "✗ ", style="bold #5fd75f" if c.ok else "bold #ff5f5f")
        t.append(f"{c.name}: ", style="bold")
        t.append(c.message, style="" if c.ok else "#ff8787")
        if c.fix and not c.ok:
            t.append(f"\n    → {c.fix}", style="#d7af00")
        t.append("\n")
    if checking:
        t.append("re-checking…", style="dim italic")
    return t


class LaunchScreen(Screen):
    DEFAULT_CSS = """
    LaunchScreen #launch-title { height: 1; background: $panel; padding: 0 1; }
    LaunchScreen #launch-body { height: 1fr; }
    LaunchScreen #form { width: 1fr; padding: 0 1; }
    LaunchScreen #side { width: 56; padding: 0 1; border-left: tall $panel; }
    LaunchScreen.-narrow #launch-body { layout: vertical; }
    LaunchScreen.-narrow #side { width: 1fr; height: auto; max-height: 10; border-left: none; border-bottom: tall $panel; dock: top; }
    LaunchScreen #checks-box { height: auto; max-height: 100%; }
    LaunchScreen.-narrow #checks-box { max-height: 5; }
    LaunchScreen.-narrow .section { margin-top: 0; }
    LaunchScreen .section { text-style: bold; color: $accent; margin-top: 1; height: 1; }
    LaunchScreen .row { height: 1; margin-bottom: 0; }
    LaunchScreen .row Label { width: 18; color: $text-muted; }
    LaunchScreen .row Checkbox { width: 12; }
    LaunchScreen .row Select { width: 16; }
    LaunchScreen .row .port { width: 8; }
    LaunchScreen .row .portlabel { width: 6; }
    LaunchScreen .row Input { width: 1fr; }
    LaunchScreen #opts { grid-size: 2; grid-columns: 18 1fr; grid-rows: 1; grid-gutter: 0 1; height: auto; }
    LaunchScreen.-wide #opts { grid-size: 4; grid-columns: 18 1fr 18 1fr; }
    LaunchScreen #opts Label { color: $text-muted; }
    LaunchScreen #start { width: 1fr; margin-top: 1; text-style: bold; }
    LaunchScreen #cleanup { width: 1fr; }
    LaunchScreen .hidden { display: none; }
    LaunchScreen #reason { color: #ff8787; height: auto; }
    LaunchScreen.-narrow #start { margin-top: 0; }
    """
    BINDINGS = [
        Binding("ctrl+r,f5", "start", "Start", priority=True),
        Binding("ctrl+q", "app.request_quit", "Quit", priority=True),
    ]

    def __init__(self, options: LaunchOptions, source_note: str = "") -> None:
        super().__init__()
        self.options = options
        self.source_note = source_note
        self.result: PreflightResult | None = None
        self.result_key: bytes = b""
        self.form_key: bytes = b""
        self.form_error = ""
        self._timer: Timer | None = None
        self._checking = False
        self._starting = False
        self._start_pending = False

    # -- composition -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        note = f"  ({self.source_note})" if self.source_note else ""
        yield Static(Text.assemble((" sgtui ", "bold #000000 on #5fafff"), " new session", (note, "dim"),
                                   ("  · Start (ctrl+r) opens once the preflight is green", "dim")),
                     id="launch-title")
        o = self.options
        with Horizontal(id="launch-body"):
            with VerticalScroll(id="form"):
                yield Static("backends", classes="section")
                for b in BACKENDS:
                    row = o.backends[b]
                    with Horizontal(classes="row"):
                        yield Checkbox(BACKEND_NAMES[b], row.enabled, id=f"{b}-enabled", compact=True)
                        yield Select([(s, s) for s in STRATEGIES[b]], value=row.strategy, allow_blank=False,
                                     id=f"{b}-strategy", compact=True, prompt="strategy")
                        yield Select([(s, s) for s in SYNCS[b]], value=row.sync, allow_blank=False,
                                     id=f"{b}-sync", compact=True, prompt="sync")
                        yield Label(" port", classes="portlabel")
                        yield Input(str(row.port), id=f"{b}-port", type="integer", compact=True, classes="port")
                    with Horizontal(classes="row"):
                        yield Label(f"  {BACKEND_NAMES[b]} python")
                        yield Input(row.python, id=f"{b}-python", compact=True, placeholder="/path/to/venv/bin/python")
                with Horizontal(classes="row"):
                    yield Label("more runs")
                    yield Input(o.extra_runs, id="extra_runs", compact=True,
                                placeholder="vllm:restart, sglang:keep@/opt/sglang/bin/python")
                yield Static("options", classes="section")
                with Grid(id="opts"):
                    for spec in FIELDS:
                        yield Label(spec.label)
                        yield self._field_widget(spec.name, spec.kind, spec.choices, getattr(o, spec.name), spec.help)
            with Vertical(id="side"):
                yield Button("Start", id="start", variant="success", disabled=True, compact=True)
                yield Static("", id="reason")
                yield Button("Clean up leftover servers", id="cleanup", variant="warning", classes="hidden",
                             compact=True)
                yield Static("preflight", classes="section")
                with VerticalScroll(id="checks-box"):
                    yield Static(checks_text(None, True), id="checks")
        yield Footer(compact=True)

    def _field_widget(self, name: str, kind: str, choices: tuple[str, ...], value: Any, help: str):
        wid = f"f-{name}"
        if kind == "choice":
            return Select([(c, c) for c in choices], value=value, allow_blank=False, id=wid, compact=True)
        if kind == "bool":
            return Checkbox(help or name, bool(value), id=wid, compact=True)
        typ = {"int": "integer", "float": "number"}.get(kind, "text")
        return Input(str(value), id=wid, type=typ, compact=True, placeholder=help)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self._apply_size(self.size.width)
        self._schedule_check(0.0)

    def on_resize(self, event) -> None:
        self._apply_size(event.size.width)

    def _apply_size(self, width: int) -> None:
        self.set_class(width < 110, "-narrow")
        self.set_class(width >= 170, "-wide")

    # -- reading the form ---------------------------------------------------------------------
    def read_options(self) -> LaunchOptions:
        """The form's values as LaunchOptions; ConfigError names the field that is wrong."""
        o = self.options.copy()
        for b in BACKENDS:
            row = o.backends[b]
            row.enabled = self.query_one(f"#{b}-enabled", Checkbox).value
            row.strategy = str(self.query_one(f"#{b}-strategy", Select).value)
            row.sync = str(self.query_one(f"#{b}-sync", Select).value)
            row.python = self.query_one(f"#{b}-python", Input).value.strip()
            port = self.query_one(f"#{b}-port", Input).value.strip()
            try:
                row.port = int(port)
            except ValueError:
                raise ConfigError(f"{BACKEND_NAMES[b]} port: {port!r}, expected a number") from None
        o.extra_runs = self.query_one("#extra_runs", Input).value
        for spec in FIELDS:
            w = self.query_one(f"#f-{spec.name}")
            if spec.kind == "choice":
                setattr(o, spec.name, str(w.value))  # type: ignore[attr-defined]
            elif spec.kind == "bool":
                setattr(o, spec.name, bool(w.value))  # type: ignore[attr-defined]
            else:
                raw = w.value.strip()  # type: ignore[attr-defined]
                if spec.kind in ("int", "float"):
                    try:
                        setattr(o, spec.name, int(raw) if spec.kind == "int" else float(raw))
                    except ValueError:
                        raise ConfigError(f"{spec.label}: {raw!r}, expected a number") from None
                else:
                    setattr(o, spec.name, raw)
        return o

    def set_value(self, widget_id: str, value: Any) -> None:
        """Set one form widget (tests, and the CLI prefill after mount)."""
        w = self.query_one(f"#{widget_id}")
        w.value = value if not isinstance(w, Input) else str(value)  # type: ignore[attr-defined]

    # -- preflight -------------------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        self._schedule_check()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._schedule_check()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._schedule_check()

    def _schedule_check(self, delay: float = DEBOUNCE_S) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(delay, self._run_check)

    def _run_check(self) -> None:
        self._timer = None
        try:
            opts = self.read_options()
            runs = opts.to_runs()
        except ConfigError as e:
            self.form_error = str(e)
            self.form_key = b""
            self._update_side()
            return
        self.form_error = ""
        self.form_key = opts.key()
        self._checking = True
        self._update_side()
        self._preflight(opts, runs, self.form_key)

    @work(thread=True, exclusive=True, group="preflight", exit_on_error=False)
    def _preflight(self, opts: LaunchOptions, runs: list[RunConfig], key: bytes) -> None:
        try:
            result = host_of(self).run_preflight(runs, opts.output)
        except Exception as e:  # noqa: BLE001 - a broken check must say so, not kill the form
            result = PreflightResult(error=f"preflight failed: {type(e).__name__}: {e}")
        self.post_message(PreflightDone(key, result))

    def on_preflight_done(self, msg: PreflightDone) -> None:
        if msg.key != self.form_key:
            return  # the form changed meanwhile; a newer check is coming
        self._checking = False
        self.result, self.result_key = msg.result, msg.key
        self._update_side()
        if self._start_pending:  # Start was pressed while the form and its last check disagreed
            self._start_pending = False
            if self.ready:
                self.action_start()

    @property
    def ready(self) -> bool:
        return (not self.form_error and self.result is not None and self.result_key == self.form_key
                and self.result.ok and not self._checking)

    def blocked_reason(self) -> str:
        if self.form_error:
            return self.form_error
        if self.result is None or self._checking or self.result_key != self.form_key:
            return "preflight is checking…"
        return self.result.reason()

    def _update_side(self) -> None:
        self.query_one("#checks", Static).update(checks_text(self.result if not self.form_error else None,
                                                             self._checking))
        start = self.query_one("#start", Button)
        start.disabled = not self.ready or self._starting
        reason = "" if self.ready else self.blocked_reason()
        self.query_one("#reason", Static).update(Text(reason))
        leftovers = bool(self.result and self.result.leftovers)
        self.query_one("#cleanup", Button).set_class(not leftovers, "hidden")

    # -- start --------------------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        elif event.button.id == "cleanup":
            self._cleanup()

    def action_start(self) -> None:
        if self._starting:
            return
        if not self.ready:
            self.notify(self.blocked_reason() or "not ready", title="cannot start yet", severity="warning")
            return
        try:
            opts = self.read_options()
        except ConfigError as e:
            self.notify(str(e), severity="error")
            return
        if opts.key() != self.result_key:
            self._start_pending = True  # check the form as it is now, then start if it is green
            self._schedule_check(0.0)
            return
        self._starting = True
        self._update_side()
        self._start(opts)

    @work(thread=True, exclusive=True, group="start", exit_on_error=False)
    def _start(self, opts: LaunchOptions) -> None:
        from sgtui.viewmodel.launch_model import resolve_initial_adapter, resolve_models

        try:
            runs = opts.to_runs()
            resolve_models(runs)  # a hub id -> its snapshot directory, before the adapter is looked for there
            resolve_initial_adapter(runs)
            path = host_of(self).session_path_for(runs, opts.output)
            self.post_message(StartRequested(runs, opts, path))
        except (ConfigError, OSError) as e:
            self.post_message(StartRequested([], opts, error=str(e)))

    def on_start_requested(self, msg: StartRequested) -> None:
        self._starting = False
        if msg.error:
            self.notify(msg.error, severity="error")
            self._update_side()
            return
        host_of(self).start_from_launch(msg.runs, msg.options, msg.session_path)

    @work(thread=True, exclusive=True, group="cleanup", exit_on_error=False)
    def _cleanup(self) -> None:
        from sgtui import preflight

        found = list(self.result.leftovers) if self.result else []
        if found:
            preflight.cleanup_leftovers(found)
        self.post_message(Recheck())

    def on_recheck(self, msg: "Recheck") -> None:
        self._schedule_check(0.0)
