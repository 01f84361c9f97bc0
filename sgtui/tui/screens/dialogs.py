"""Small modal dialogs: confirm with a choice of buttons, ask for a step number."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class Choice(ModalScreen[str]):
    """A question and buttons; dismisses with the chosen button's id ('' on escape)."""

    DEFAULT_CSS = """
    Choice { align: center middle; }
    Choice > Vertical { width: 72; max-width: 95%; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    Choice #question { width: 1fr; margin-bottom: 1; }
    Choice Horizontal { height: auto; width: 1fr; align-horizontal: right; }
    Choice Button { margin-left: 1; min-width: 10; }
    """
    BINDINGS = [Binding("escape", "dismiss_empty", "Back")]

    def __init__(self, question: str, choices: list[tuple[str, str, str]], title: str = "") -> None:
        """choices: (id, label, variant) — variant one of default, primary, error, warning, success."""
        super().__init__()
        self.question = question
        self.choices = choices
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical():
            if self.title_text:
                yield Label(self.title_text, classes="title")
            yield Static(self.question, id="question")
            with Horizontal():
                for cid, label, variant in self.choices:
                    yield Button(label, id=cid, variant=variant)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        buttons = list(self.query(Button))
        if buttons:
            buttons[-1].focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id or "")

    def action_dismiss_empty(self) -> None:
        self.dismiss("")


class AskStep(ModalScreen[int | None]):
    DEFAULT_CSS = """
    AskStep { align: center middle; }
    AskStep > Vertical { width: 60; max-width: 95%; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, prompt: str = "Go to step (0 = start):") -> None:
        super().__init__()
        self.prompt = prompt

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.prompt)
            yield Input(placeholder="step", type="integer", id="step")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(int(event.value))
        except ValueError:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
