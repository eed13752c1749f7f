"""The server-side SVG diagram of a workflow definition."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from engine.workflow import default_definition_text, parse_definition
from engine.workflow.diagram import render_svg

SVG = "{http://www.w3.org/2000/svg}"

HOSTILE = """\
name: telemarketing
tiers: [cold, sales]
initial: new
states:
  new:
    tier: cold
    title: 'New <script>alert("x")</script> & co'
    follow_up: {due: {after: 1h}, kind: call_back}
  won:
    tier: sales
    title: Won "big" </text></svg>
    kpi: payment
    final: true
transitions:
  - {event: close, from: new, to: won, guard: has_email}
  - {event: retry, from: new, to: new}
"""


def _states(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-state"): g for g in root.iter(SVG + "g") if g.get("data-state")}


def test_every_state_of_the_default_workflow_is_drawn_in_its_tiers_column() -> None:
    defn = parse_definition(default_definition_text())
    root = ET.fromstring(render_svg(defn))
    states = _states(root)
    assert set(states) == set(defn.states)
    tiers = [g.get("data-tier") for g in root.iter(SVG + "g") if g.get("data-tier")]
    assert tiers == list(defn.tiers)
    # One column per tier: all states of a tier share the x of their boxes, tiers left to right.
    xs: dict[str, set[float]] = {}
    for name, g in states.items():
        rect = g.find(SVG + "rect")
        assert rect is not None
        xs.setdefault(defn.states[name].tier, set()).add(float(rect.get("x", "nan")))
    assert all(len(v) == 1 for v in xs.values())
    assert [next(iter(xs[t])) for t in defn.tiers] == sorted(next(iter(v)) for v in xs.values())
    # Final and KPI states carry their marks, readable as text and as attributes.
    assert states["do_not_call"].get("data-final") == "true"
    assert "final" in "".join(states["do_not_call"].itertext())
    assert states["invoice_sent"].get("data-kpi") == "invoice"
    assert "KPI: invoice" in "".join(states["invoice_sent"].itertext())
    assert "start" in "".join(states["new"].itertext())


def test_transitions_are_labelled_arrows_between_the_right_states() -> None:
    defn = parse_definition(default_definition_text())
    root = ET.fromstring(render_svg(defn))
    edges = {
        (g.get("data-from"), g.get("data-to")): "".join(g.itertext())
        for g in root.iter(SVG + "g")
        if g.get("data-from")
    }
    assert "send_invoice [has_email]" in edges[("presentation", "invoice_sent")]
    assert "hand_to_sales" in edges[("qualified", "presentation")]
    assert "no_answer" in edges[("no_answer", "no_answer")]  # a self-loop
    for g in root.iter(SVG + "g"):
        if g.get("data-from"):
            path = g.find(SVG + "path")
            assert path is not None and path.get("marker-end") == "url(#arrow)"
    # "do not call" from 15 states is written on its target, not drawn as 15 arrows.
    assert not any(to == "do_not_call" for _, to in edges)
    assert "do_not_call ← 15 states" in "".join(_states(root)["do_not_call"].itertext())


def test_names_and_titles_are_escaped() -> None:
    svg = render_svg(parse_definition(HOSTILE))
    root = ET.fromstring(svg)  # still well-formed XML
    assert "<script" not in svg
    assert "&lt;script&gt;" in svg
    assert not list(root.iter(SVG + "script"))
    texts = "".join(root.itertext())
    assert 'New <script>alert("x")</script> & co' in texts
    assert 'Won "big" </text></svg>' in texts
    assert set(_states(root)) == {"new", "won"}


def test_output_is_deterministic() -> None:
    text = default_definition_text()
    first = render_svg(parse_definition(text))
    assert first == render_svg(parse_definition(text))
    assert first.startswith("<svg ") and first.rstrip().endswith("</svg>")


def test_a_state_on_an_undeclared_tier_is_still_drawn() -> None:
    source = HOSTILE.replace("tier: sales", "tier: nowhere")
    root = ET.fromstring(render_svg(parse_definition(source)))
    assert set(_states(root)) == {"new", "won"}
    assert "(no such tier)" in [g.get("data-tier") for g in root.iter(SVG + "g")]
