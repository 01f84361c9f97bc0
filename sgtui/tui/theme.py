"""Colours and short names shared by every widget, so a phase or a run reads the same everywhere.

Colours are 256-colour hex values that stay legible on dark and light terminals
and survive tmux (which may downgrade truecolor): widgets never rely on colour
alone, every phase also has a letter and every run its label.
"""

from __future__ import annotations

PHASE_COLORS: dict[str, str] = {
    "trainer_start": "#875f87",
    "startup": "#808080",
    "warmup": "#8787af",
    "rollout": "#5faf5f",
    "offload": "#d7af00",
    "train": "#af5fd7",
    "reload": "#00afaf",
    "weight_sync": "#5f87ff",
    "restart": "#d75f5f",
    "shutdown": "#626262",
    "park": "#4e4e4e",  # --interleave: the engine put aside while another run takes its step
    "unpark": "#4e4e4e",
}
#: Labels that fit inside a timeline segment, longest first.
PHASE_NAMES: dict[str, tuple[str, ...]] = {
    "trainer_start": ("trainer start", "tstart", "ts"),
    "startup": ("startup", "start", "st"),
    "warmup": ("warmup", "warm", "wu"),
    "rollout": ("rollout", "roll", "ro"),
    "offload": ("offload", "off", "of"),
    "train": ("train", "trn", "tr"),
    "reload": ("reload", "rel", "rl"),
    "weight_sync": ("weight sync", "sync", "ws"),
    "restart": ("restart", "rst", "rs"),
    "shutdown": ("shutdown", "stop", "sd"),
    "park": ("park", "park", "pk"),
    "unpark": ("unpark", "unpk", "up"),
}
#: One letter per phase, for the GPU markers and the narrowest timeline.
PHASE_LETTERS: dict[str, str] = {
    "trainer_start": "T",
    "startup": "S",
    "warmup": "W",
    "rollout": "r",
    "offload": "o",
    "train": "t",
    "reload": "l",
    "weight_sync": "s",
    "restart": "R",
    "shutdown": "x",
    "park": "p",
    "unpark": "u",
}
RUN_COLORS = ("#5fafff", "#ffaf5f", "#87d787", "#d787d7", "#d7d75f", "#5fd7d7", "#ff8787", "#afafaf")
STATUS_STYLES = {
    "pending": "dim",
    "running": "bold #5fafff",
    "ok": "bold #5faf5f",
    "failed": "bold #ff5f5f",
    "cancelled": "bold #d7af00",
    "skipped": "dim",
    "dead": "bold #ffffff on #870000",
}
ERROR_STYLE = "bold #ff5f5f"
BETTER_STYLE = "bold #5fd75f"
SPARK_CHARS = " ▁▂▃▄▅▆▇█"


def run_color(index: int) -> str:
    return RUN_COLORS[index % len(RUN_COLORS)]


def phase_color(name: str) -> str:
    return PHASE_COLORS.get(name, "#808080")


def phase_label(name: str, width: int) -> str:
    """The longest name of the phase that fits in `width` cells ('' if none does)."""
    for label in PHASE_NAMES.get(name, (name,)):
        if len(label) <= width:
            return label
    return ""


def spark_char(fraction: float | None) -> str:
    """One sparkline cell for a 0..1 value (None: no sample in that bucket)."""
    if fraction is None:
        return " "
    f = min(1.0, max(0.0, fraction))
    i = int(round(f * (len(SPARK_CHARS) - 1)))
    if i == 0 and f > 0:
        i = 1  # a little memory still shows
    return SPARK_CHARS[i]
