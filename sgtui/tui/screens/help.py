"""The help screen (`?`, F1, `h` on the dashboards): every key of the screen it was opened over.

Built from that screen's live bindings (`Screen.active_bindings`: the focused widget's, the
screen's and the app's BINDINGS, as Textual resolves them), so it lists exactly what the keys do
there and can never go stale; keys that share an action share a line.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

_NAMES = {"app.": "", "screen.": ""}


def _action(action: str) -> str:
    for prefix in _NAMES:
        if action.startswith(prefix):
            return action[len(prefix):]
    return action


def help_rows(screen: Screen) -> list[tuple[str, str]]:
    """(keys, what they do) for every enabled key of `screen`, keys of one action on one row: the
    screen's keys, then the focused widget's, then the app's."""
    app = screen.app
    rows: dict[str, tuple[list[str], str]] = {}
    bindings = list(screen.active_bindings.items())
    # the screen's own keys first, then the focused widget's (scrolling, selecting), then the app's
    bindings.sort(key=lambda kv: 0 if kv[1].node is screen else (2 if kv[1].node is app else 1))
    for key, active in bindings:
        b = active.binding
        if not active.enabled:
            continue
        name = _action(b.action)
        if name == "help":
            desc = "this help"
        else:
            desc = b.description or b.tooltip or name.replace("_", " ")
        keys, first = rows.setdefault(name, ([], desc))
        shown = app.get_key_display(b)
        if shown not in keys:
            keys.append(shown)
    return [(", ".join(keys), desc) for keys, desc in rows.values()]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 64; max-width: 95%; height: auto; max-height: 90%; border: thick $accent;
                            background: $surface; padding: 0 1; }
    HelpScreen #help-title { text-style: bold; margin-bottom: 1; }
    HelpScreen VerticalScroll { height: auto; max-height: 100%; }
    HelpScreen #help-hint { color: $text-muted; margin-top: 1; }
    """
    BINDINGS = [Binding("escape,question_mark,f1,h,q", "close", "Close")]

    def __init__(self, over: Screen, title: str = "") -> None:
        super().__init__()
        self.rows = help_rows(over)
        self.title_text = title or "keys"

    def compose(self) -> ComposeResult:
        width = max((len(k) for k, _ in self.rows), default=4)
        text = Text()
        for i, (keys, desc) in enumerate(self.rows):
            if i:
                text.append("\n")
            text.append(f"{keys:<{width}}", style="bold")
            text.append(f"  {desc}")
        with Vertical():
            yield Label(f"help · {self.title_text}", id="help-title")
            with VerticalScroll():
                yield Static(text, id="help-keys")
            yield Label("Escape or ? closes", id="help-hint")

    def action_close(self) -> None:
        self.dismiss(None)

    def text(self) -> str:
        """The rows as plain text (tests)."""
        return "\n".join(f"{k}  {d}" for k, d in self.rows)
