"""A sequence diagram of what really happened, drawn from a trace.

    diagram = sequence_diagram(client.events, server.events, proxy.events)
    diagram            # in a notebook: the picture (SVG)
    print(diagram)     # the same, as text

Three lifelines, client | wire | server, and time running downwards.  Each
step comes from one recorded event:

- from the consoles (``chatlib.console``): a line the script printed, a line
  typed at its prompt, and how it ended (the traceback's error and the line
  of code that raised it, marked where it happened);
- from the proxy (``chatlib.proxy``): the connection, every piece of data
  with its bytes, and each side's FIN (close) or RST (reset).

Nothing is drawn by hand: a different run draws a different diagram.  Steps
are spaced evenly, in the order of their ``time.monotonic()`` stamps; the
left margin shows the real time since the first one.  The stamps come from
two observers (the terminal's readers and the proxy), so two things a script
does within a millisecond may appear swapped; the one rule imposed is that a
script's crash comes after everything it sent.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape

from chatlib.console import ConsoleEvent, parse_traceback
from chatlib.proxy import TO_SERVER, WireEvent

CLIENT, WIRE, SERVER = "client", "wire", "server"


@dataclass(frozen=True)
class Step:
    """One row of the diagram.

    ``kind`` is ``"print"``, ``"type"``, ``"crash"`` or ``"end"`` (a note on the
    ``where`` lifeline), or ``"connect"``, ``"data"``, ``"fin"``, ``"rst"``,
    ``"refused"`` (an arrow; ``where`` is the sending side).
    """

    t: float
    kind: str
    where: str  # CLIENT or SERVER
    label: str
    detail: str = ""

    @property
    def is_arrow(self) -> bool:
        return self.kind in ("connect", "data", "fin", "rst", "refused")


def steps_from(
    client: Iterable[ConsoleEvent] = (),
    server: Iterable[ConsoleEvent] = (),
    wire: Iterable[WireEvent] = (),
) -> list[Step]:
    """The diagram's rows, in time order, from the three recordings."""
    client, server = list(client), list(server)
    wire_steps = _wire_steps(wire)
    steps = wire_steps
    for where, events in ((CLIENT, client), (SERVER, server)):
        exited = [e.t for e in events if e.kind == "exit"]
        for step in _console_steps(where, events):
            if step.kind == "crash" and exited:
                step = _after_own_sends(step, wire_steps, exited[0])
            steps.append(step)
    return sorted(steps, key=lambda step: step.t)  # stable: equal times keep their order


def _after_own_sends(crash: Step, wire_steps: list[Step], exited: float) -> Step:
    """Move a crash below everything its script sent while it was alive.

    The terminal and the proxy are two observers, each stamping what it
    noticed; within a millisecond either may notice first.  But a script
    sends nothing after its traceback, so what it sent before it ended
    belongs above its crash.
    """
    sent = [s.t for s in wire_steps if s.where == crash.where and s.t < exited]
    latest = max(sent, default=crash.t)
    return crash if latest < crash.t else replace(crash, t=latest + 1e-6)


def _console_steps(where: str, events: Iterable[ConsoleEvent]) -> list[Step]:
    steps: list[Step] = []
    line = ""  # the printed line being completed
    stderr, stderr_began = "", None
    for event in events:
        if event.kind == "stdout":
            for piece in event.text.splitlines(keepends=True):
                line += piece
                if line.endswith("\n"):
                    steps.append(Step(event.t, "print", where, f'prints "{line[:-1]}"'))
                    line = ""
        elif event.kind == "typed":
            prompt = f'after "{line}"' if line else ""
            steps.append(Step(event.t, "type", where, f'types "{event.text}"', prompt))
            line = ""  # the prompt, finished by the typing's Enter
        elif event.kind == "stderr":
            stderr += event.text
            stderr_began = event.t if stderr_began is None else stderr_began
        elif event.kind == "exit":
            crash = parse_traceback(stderr)
            if crash:
                where_in_code = f"at line {crash.line} of {crash.script}:\n{crash.source}"
                steps.append(Step(stderr_began, "crash", where, crash.error, where_in_code))
            elif event.text == "stopped":
                waiting = f"waiting at {line.strip()!r}" if line.strip() else ""
                steps.append(Step(event.t, "end", where, "stopped (Ctrl-C)", waiting))
            else:
                steps.append(Step(event.t, "end", where, f"exits with code {event.returncode}"))
    return steps


def _wire_steps(events: Iterable[WireEvent]) -> list[Step]:
    events = list(events)
    several = len({e.connection for e in events}) > 1
    steps = []
    for event in events:
        sender = CLIENT if event.direction == TO_SERVER else SERVER
        number = f"#{event.connection} " if several else ""
        if event.kind == "connect":
            steps.append(Step(event.t, "connect", CLIENT, f"{number}connect()", "TCP handshake"))
        elif event.kind == "data":
            size = f"{len(event.data)} byte" + ("" if len(event.data) == 1 else "s")
            steps.append(Step(event.t, "data", sender, number + repr(event.data), size))
        elif event.kind == "close":
            steps.append(Step(event.t, "fin", sender, f"{number}FIN", "close(): no more data"))
        elif event.kind == "reset":
            steps.append(Step(event.t, "rst", sender, f"{number}RST", "connection reset"))
        elif event.kind == "refused":
            steps.append(Step(event.t, "refused", CLIENT, f"{number}refused", "nobody listening"))
    return steps


# ---------------------------------------------------------------------------
# Drawing

FONT_SIZE = 12
CHAR_WIDTH = 7.25  # a 12 px monospace character: the labels are sized by it
NOTE_CHARS = 46
LABEL_CHARS = 64
X = {CLIENT: 275, WIRE: 525, SERVER: 775}
WIDTH = 1010
TOP = 70  # below the lifeline heads
COLOURS = {CLIENT: "#1f5fa8", SERVER: "#b35806", WIRE: "#777777", "crash": "#c62828"}
TINTS = {CLIENT: "#eaf1fb", SERVER: "#fdf1e6", "crash": "#fdecea"}
HALO = 'stroke="white" stroke-width="4" paint-order="stroke"'  # legible over the lifeline
FONTS = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"


class SequenceDiagram:
    """The diagram of one run: ``.steps``, ``.svg``, and ``str()`` as text."""

    def __init__(self, steps: Sequence[Step], names: dict[str, str]):
        self.steps = list(steps)
        self.names = names
        self.svg = _draw(self.steps, names)

    def _repr_svg_(self) -> str:
        return self.svg

    def text(self) -> str:
        """The diagram as lines of text, one per step (for reading aloud or a diff)."""
        if not self.steps:
            return "(nothing was recorded)"
        start = self.steps[0].t
        width = max(len(name) for name in self.names.values())
        rows = []
        for step in self.steps:
            when = f"+{step.t - start:6.3f} s"
            if step.is_arrow:
                other = SERVER if step.where == CLIENT else CLIENT
                who = f"{self.names[step.where]} -> {self.names[other]}"
            else:
                who = self.names[step.where].ljust(width)
            mark = "✗ " if step.kind == "crash" else ""
            detail = f"  ({' '.join(step.detail.split())})" if step.detail else ""
            rows.append(f"{when}  {who}  {mark}{step.label}{detail}")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()


def sequence_diagram(
    client: Iterable[ConsoleEvent] = (),
    server: Iterable[ConsoleEvent] = (),
    wire: Iterable[WireEvent] = (),
    *,
    client_name: str | None = None,
    server_name: str | None = None,
) -> SequenceDiagram:
    """Draw the diagram of a run from its recordings (consoles' events, proxy's events)."""
    client, server, wire = list(client), list(server), list(wire)
    names = {
        CLIENT: client_name or (client[0].console if client else "client"),
        SERVER: server_name or (server[0].console if server else "server"),
        WIRE: "wire (seen by the proxy)" if wire else "wire (not recorded)",
    }
    return SequenceDiagram(steps_from(client, server, wire), names)


def _note_lines(step: Step) -> list[str]:
    label = ("✗ " if step.kind == "crash" else "") + step.label
    lines = textwrap.wrap(label, NOTE_CHARS, max_lines=2, placeholder=" …")
    for part in step.detail.splitlines():
        lines += textwrap.wrap(part, NOTE_CHARS, max_lines=2, placeholder=" …")
    return lines or [""]


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _draw(steps: list[Step], names: dict[str, str]) -> str:
    parts: list[str] = []
    y = TOP
    ends: dict[str, float] = {}  # where a lifeline stops: the script's end
    start = steps[0].t if steps else 0.0
    for step in steps:
        if step.is_arrow:
            height = 48
            parts += _arrow(step, y + 26)
        else:
            lines = _note_lines(step)
            height = 16 + 16 * len(lines)
            parts += _note(step, lines, y + 6)
            if step.kind in ("crash", "end"):
                ends[step.where] = y + height - 6
        parts.append(
            f'<text x="8" y="{y + 20}" fill="#888" font-size="11">+{step.t - start:.3f} s</text>'
        )
        y += height
    bottom = y + 16
    height = bottom + 30

    back: list[str] = []
    for where in (CLIENT, WIRE, SERVER):
        x, colour = X[where], COLOURS[where]
        end = ends.get(where, bottom)
        dash = ' stroke-dasharray="6 5"' if where == WIRE else ""
        back.append(
            f'<line x1="{x}" y1="{TOP - 16}" x2="{x}" y2="{end}" stroke="{colour}"'
            f' stroke-width="1.5"{dash}/>'
        )
        name = escape(names[where])
        box = len(names[where]) * CHAR_WIDTH + 24
        back.append(
            f'<rect x="{x - box / 2}" y="18" width="{box}" height="36" rx="6" '
            f'fill="{TINTS.get(where, "#f4f4f4")}" stroke="{colour}"/>'
            f'<text x="{x}" y="41" text-anchor="middle" font-weight="bold" '
            f'fill="{colour}">{name}</text>'
        )
    caption = (
        "Time runs downwards.  Arrows: what crossed the wire, as the proxy saw it "
        "(bytes as Python writes them).  ✗: where a script died."
    )
    back.append(
        f'<text x="{WIDTH / 2}" y="{height - 12}" text-anchor="middle" fill="#666" '
        f'font-size="11">{escape(caption)}</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" style="max-width:100%;height:auto" '
        f'font-family="{FONTS}" font-size="{FONT_SIZE}">'
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>'
        + "".join(back)
        + "".join(parts)
        + "</svg>"
    )


def _note(step: Step, lines: list[str], top: float) -> list[str]:
    x = X[step.where]
    tone = "crash" if step.kind == "crash" else step.where
    colour, tint = COLOURS[tone], TINTS[tone]
    width = max(len(line) for line in lines) * CHAR_WIDTH + 20
    height = 10 + 16 * len(lines)
    out = [
        f'<rect x="{x - width / 2:.1f}" y="{top}" width="{width:.1f}" height="{height}" '
        f'rx="4" fill="{tint}" stroke="{colour}"/>'
    ]
    label_lines = len(_note_lines(Step(0, step.kind, step.where, step.label)))
    for index, line in enumerate(lines):
        weight = ' font-weight="bold"' if step.kind == "crash" and index < label_lines else ""
        fill = colour if index < label_lines else "#333"
        out.append(
            f'<text x="{x}" y="{top + 18 + 16 * index}" text-anchor="middle" fill="{fill}"'
            f"{weight}>{escape(line)}</text>"
        )
    if step.kind in ("crash", "end"):
        mark_y = top + height + 4
        out.append(
            f'<path d="M{x - 7},{mark_y - 7} L{x + 7},{mark_y + 7} M{x + 7},{mark_y - 7} '
            f'L{x - 7},{mark_y + 7}" stroke="{colour}" stroke-width="2.5"/>'
            if step.kind == "crash"
            else f'<line x1="{x - 10}" y1="{mark_y}" x2="{x + 10}" y2="{mark_y}" '
            f'stroke="{colour}" stroke-width="2.5"/>'
        )
    return out


def _arrow(step: Step, y: float) -> list[str]:
    other = SERVER if step.where == CLIENT else CLIENT
    x1, x2 = X[step.where], X[other]
    head = 10 if x2 > x1 else -10
    colour = {"rst": COLOURS["crash"], "refused": COLOURS["crash"]}.get(
        step.kind, COLOURS[step.where]
    )
    dash = ' stroke-dasharray="5 4"' if step.kind in ("fin", "rst", "refused") else ""
    label = escape(_cut(step.label, LABEL_CHARS))
    detail = escape(_cut(step.detail, LABEL_CHARS))
    return [
        f'<line x1="{x1}" y1="{y}" x2="{x2 - head}" y2="{y}" stroke="{colour}" '
        f'stroke-width="1.6"{dash}/>',
        f'<polygon points="{x2},{y} {x2 - head},{y - 5} {x2 - head},{y + 5}" fill="{colour}"/>',
        f'<circle cx="{X[WIRE]}" cy="{y}" r="3.5" fill="{COLOURS[WIRE]}"/>',
        f'<text x="{X[WIRE]}" y="{y - 7}" text-anchor="middle" fill="{colour}" '
        f'font-weight="bold" {HALO}>{label}</text>',
        f'<text x="{X[WIRE]}" y="{y + 16}" text-anchor="middle" fill="#666" '
        f'font-size="11" {HALO}>{detail}</text>',
    ]
