"""A workflow definition drawn as a plain SVG string: one column per tier, no JS library.

The admin page cannot load mermaid from a CDN and we want no Node build, so the server draws
the diagram itself. The layout is a pure function of the definition (tiers in their declared
order, states in definition order, edges sorted), so the same definition always gives the
same bytes: a diagram can be cached by digest and compared in tests.

Every name and title is XML-escaped. Only presentation attributes are used (no <style>, no
script): the SVG is shown through <img>, under a strict Content-Security-Policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from engine.workflow.definition import StateDef, WorkflowDefinition

BOX_W = 188
BOX_H = 48
ROW = 84  # vertical pitch of the boxes in a column
COL = 380  # horizontal pitch of the columns: the gap between them carries edge labels
PAD = 64  # room inside a tier's panel, left of its boxes, for arrows up and down the column
TOP = 64  # room for the tier headings
LEFT = 96  # same-column arrows of the first tier put their labels out here
# An event that enters one state from this many states or more ("do not call", from
# anywhere) is written on its target instead of drawn as a fan of arrows nobody can read.
FAN_IN = 6
FONT = "system-ui, Segoe UI, Roboto, sans-serif"

TIER_FILL = ("#e0eefc", "#e9e4fb", "#e3f4e7", "#fff1dc", "#f1f1f1")
STRAY = "(no such tier)"  # column for states whose tier is not declared: invalid, still drawn


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    column: int

    @property
    def mid_y(self) -> float:
        return self.y + BOX_H / 2


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _columns(defn: WorkflowDefinition) -> list[tuple[str, list[StateDef]]]:
    columns = [(tier, [s for s in defn.states.values() if s.tier == tier]) for tier in defn.tiers]
    stray = [s for s in defn.states.values() if s.tier not in defn.tiers]
    if stray:
        columns.append((STRAY, stray))
    return columns


def _fan_ins(defn: WorkflowDefinition) -> dict[str, list[str]]:
    """target -> ["do_not_call ← 15 states"]: transitions drawn as a note on their target."""
    notes: dict[str, list[str]] = {}
    for t in defn.transitions:
        if len(t.sources) >= FAN_IN and t.target in defn.states:
            notes.setdefault(t.target, []).append(f"{t.event} ← {len(t.sources)} states")
    return notes


def _edges(defn: WorkflowDefinition, boxes: dict[str, Box]) -> list[tuple[str, str, str]]:
    """(source, target, label): transitions between the same two states share one arrow."""
    labels: dict[tuple[str, str], list[str]] = {}
    for t in defn.transitions:
        if len(t.sources) >= FAN_IN:
            continue
        text = t.event + (f" [{t.guard}]" if t.guard else "")
        for src in t.sources:
            if src in boxes and t.target in boxes:  # a dangling name is a validation problem
                names = labels.setdefault((src, t.target), [])
                if text not in names:
                    names.append(text)
    return sorted((a, b, ", ".join(names)) for (a, b), names in labels.items())


def _path(a: Box, b: Box, same: bool, index: int) -> tuple[str, float, float, str]:
    """An SVG path from box a to box b, and where its label goes (x, y, anchor)."""
    if same:  # self-loop on the right side of the box
        x, y = a.x + BOX_W, a.y
        d = f"M{x},{y + 12} C{x + 42},{y - 6} {x + 42},{y + BOX_H + 6} {x},{y + BOX_H - 12}"
        return d, x + 40, a.mid_y + 4, "start"
    if a.column == b.column:  # down or up the column, bulging out to the left
        bulge = 24 + 10 * abs(a.y - b.y) // ROW + 4 * (index % 3)
        x = a.x
        d = (
            f"M{x},{a.mid_y - 6} C{x - bulge},{a.mid_y - 6} "
            f"{x - bulge},{b.mid_y + 6} {x},{b.mid_y + 6}"
        )
        return d, x - bulge * 0.75 - 4, (a.mid_y + b.mid_y) / 2, "end"
    if a.column < b.column:
        x1, x2 = a.x + BOX_W, b.x
    else:
        x1, x2 = a.x, b.x + BOX_W
    y1, y2 = a.mid_y + 8, b.mid_y - 8
    bend = max(40.0, abs(x2 - x1) / 3)
    sign = 1 if x2 > x1 else -1
    d = f"M{x1},{y1} C{x1 + sign * bend},{y1} {x2 - sign * bend},{y2} {x2},{y2}"
    if abs(a.column - b.column) == 1:  # neighbours: the label in the gap between them
        return d, (x1 + x2) / 2, (y1 + y2) / 2 - 3, "middle"
    # Longer jumps: near the source, where the edges leaving one box fan out and separate.
    return d, x1 + sign * 12, y1 + (y2 - y1) * 0.12 - 3, "start" if sign > 0 else "end"


def render_svg(defn: WorkflowDefinition, *, title: str | None = None) -> str:
    """The definition as a standalone SVG document (UTF-8 text)."""
    columns = _columns(defn)
    boxes: dict[str, Box] = {}
    for c, (_, states) in enumerate(columns):
        for r, state in enumerate(states):
            boxes[state.name] = Box(LEFT + PAD + c * COL, TOP + r * ROW, c)
    rows = max((len(states) for _, states in columns), default=0)
    width = LEFT + max(len(columns), 1) * COL + 80  # self-loop labels of the last tier
    height = TOP + max(rows, 1) * ROW + 24
    heading = title or f"Workflow {defn.name}"

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{_attr(FONT)}" font-size="12" '
        f'role="img" aria-label="{_attr(heading)}">',
        f"<title>{escape(heading)}</title>",
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#45515e"/></marker></defs>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for c, (tier, states) in enumerate(columns):
        x = LEFT + c * COL
        fill = TIER_FILL[min(c, len(TIER_FILL) - 1)] if tier != STRAY else "#fde7e8"
        col_h = max(len(states), 1) * ROW + 12
        out.append(
            f'<g class="tier" data-tier="{_attr(tier)}">'
            f'<rect x="{x}" y="{TOP - 40}" width="{BOX_W + PAD + 40}" '
            f'height="{col_h + 28}" rx="10" '
            f'fill="{fill}" fill-opacity="0.55" stroke="#c3ccd5"/>'
            f'<text x="{x + 14}" y="{TOP - 18}" font-size="14" font-weight="700" '
            f'fill="#1b1f24">{escape(tier)}</text></g>'
        )
    for i, (src, dst, label) in enumerate(_edges(defn, boxes)):
        d, lx, ly, anchor = _path(boxes[src], boxes[dst], src == dst, i)
        text = _clip(label, 34)
        out.append(
            f'<g class="edge" data-from="{_attr(src)}" data-to="{_attr(dst)}">'
            f"<title>{escape(f'{src} → {dst}: {label}')}</title>"
            f'<path d="{d}" fill="none" stroke="#45515e" stroke-width="1.2" '
            f'marker-end="url(#arrow)"/>'
            f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" font-size="10" '
            f'fill="#2d3640" stroke="#ffffff" stroke-width="3" paint-order="stroke">'
            f"{escape(text)}</text></g>"
        )
    notes = _fan_ins(defn)
    for name, box in boxes.items():
        out.append(
            _state(defn.states[name], box, initial=name == defn.initial, notes=notes.get(name, []))
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _state(state: StateDef, box: Box, *, initial: bool, notes: list[str]) -> str:
    x, y = box.x, box.y
    marks = []
    if initial:
        marks.append("▶ start")
    if state.final:
        marks.append("■ final")
    if state.kpi:
        marks.append(f"★ KPI: {state.kpi}")
    stroke = "#1b1f24" if state.final else "#0b5cad"
    extra = ' data-final="true"' if state.final else ""
    if state.kpi:
        extra += f' data-kpi="{_attr(state.kpi)}"'
    parts = [
        f'<g class="state" data-state="{_attr(state.name)}"{extra}>',
        f"<title>{escape(f'{state.title} ({state.name}), tier {state.tier}')}</title>",
        f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="#ffffff" '
        f'stroke="{stroke}" stroke-width="{2.5 if state.final else 1.5}"/>',
    ]
    if state.final:  # a double border, as final states are drawn in statecharts
        parts.append(
            f'<rect x="{x + 4}" y="{y + 4}" width="{BOX_W - 8}" height="{BOX_H - 8}" rx="5" '
            f'fill="none" stroke="{stroke}" stroke-width="1"/>'
        )
    if state.kpi:
        parts.append(f'<rect x="{x}" y="{y}" width="6" height="{BOX_H}" rx="2" fill="#b8860b"/>')
    parts.append(
        f'<text x="{x + 12}" y="{y + 18}" font-size="12.5" font-weight="600" fill="#1b1f24">'
        f"{escape(_clip(state.title, 26))}</text>"
    )
    detail = " · ".join([state.name, *marks])
    parts.append(
        f'<text x="{x + 12}" y="{y + 35}" font-size="10" fill="#5a6470">'
        f"{escape(_clip(detail, 34))}</text>"
    )
    for i, note in enumerate(notes[:2]):  # below the box, inside the row gap
        parts.append(
            f'<text x="{x + 12}" y="{y + BOX_H + 13 + 12 * i}" font-size="10" '
            f'font-style="italic" fill="#2d3640">{escape(_clip(note, 36))}</text>'
        )
    parts.append("</g>")
    return "".join(parts)
