"""What python-statemachine costs per event, against a plain lookup of the transition.

engine.workflow.apply_event rehydrates a machine from the client's stored state (build an
instance over ClientFacts, send the event); the class is compiled once per definition
version (engine.workflow.compile_machine, cached by digest). The same answer is one dict
lookup in the parsed definition (WorkflowDefinition.transition_for), which is what the
runtime decides with (engine.decide.decide, whose row adds the follow-up planning, i.e.
the whole CPU cost of one event before the database). Pure CPU, no database.

    python -m bench.rehydrate [--quick]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable

from bench.common import percentiles, print_table
from engine.calendar import CallingPolicy
from engine.clock import SystemClock
from engine.decide import ClientSnapshot, Rules, decide
from engine.workflow import ClientFacts, apply_event, compile_machine, load_definition
from engine.workflow import compile as compile_module
from engine.workflow.definition import default_definition_text

# (state, event): a self-loop that counts attempts, a plain move, and a guarded move.
CASES = [("no_answer", "no_answer"), ("new", "call_back"), ("presentation", "send_invoice")]


def per_op(fn: Callable[[int], object], rounds: int) -> list[float]:
    """µs per call, one timing per call (perf_counter_ns), after a short warm-up."""
    for i in range(min(50, rounds)):
        fn(i)
    out = []
    gc.disable()  # a collection landing in one call would be charged to that call
    try:
        for i in range(rounds):
            t = time.perf_counter_ns()
            fn(i)
            out.append((time.perf_counter_ns() - t) / 1000)
    finally:
        gc.enable()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    args = ap.parse_args()
    rounds, cold_rounds = (2_000, 30) if args.quick else (20_000, 200)

    defn = load_definition(default_definition_text())
    cls = compile_machine(defn)
    facts = [ClientFacts(state=s, has_email=True) for s, _ in CASES]
    events = [e for _, e in CASES]

    def cold(_: int) -> object:
        compile_module._cache.clear()  # what the first event on a new version pays
        return compile_machine(defn)

    def warm(_: int) -> object:
        return compile_machine(defn)

    def instance(i: int) -> object:
        return cls(model=ClientFacts(state=facts[i % 3].state), state_field="state")

    def machine_send(i: int) -> object:
        model = ClientFacts(state=facts[i % 3].state, has_email=True)
        cls(model=model, state_field="state").send("e_" + events[i % 3])
        return model.state

    def engine_apply(i: int) -> object:
        return apply_event(defn, facts[i % 3], events[i % 3])

    def lookup(i: int) -> object:
        return defn.transition_for(facts[i % 3].state, events[i % 3])

    def lookup_guarded(i: int) -> object:
        return defn.transition_for(facts[i % 3].state, events[i % 3], facts[i % 3])

    rules = Rules(SystemClock().now(), CallingPolicy(), "Europe/Moscow")
    snaps = [
        ClientSnapshot(
            id=1, workflow_version_id=1, state=f.state, tier=defn.tier_of(f.state), attempts=0,
            owner_id=None, revision=0, email="a@example.com", segment_class="regular",
            timezone=None, last_contact_at=None, primary_e164="+79161234567",
        )
        for f in facts
    ]  # fmt: skip

    def runtime_decide(i: int) -> object:
        return decide(defn, snaps[i % 3], events[i % 3], rules)

    cases = [
        ("compile_machine, cold (class built from the definition)", cold, cold_rounds),
        ("compile_machine, cached (digest lookup)", warm, rounds),
        ("rehydrate: machine instance over ClientFacts", instance, rounds),
        ("rehydrate + send one event (library only)", machine_send, rounds),
        ("apply_event (engine: checks + rehydrate + send)", engine_apply, rounds),
        ("transition_for (dict lookup, no guard)", lookup, rounds),
        ("transition_for with facts (guard evaluated)", lookup_guarded, rounds),
        ("decide (runtime: lookup + owner/attempts + follow-up plan)", runtime_decide, rounds),
    ]
    rows = []
    base = None
    for label, fn, n in cases:
        s = percentiles(per_op(fn, n))
        if label.startswith("transition_for with"):
            base = s.p50
        rows.append([label, n, s.p50, s.p99, s.mean])
    assert base is not None
    for row in rows:
        ratio = row[2] / base
        row.append(f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.1f}×")
    compile_machine(defn)  # leave the cache warm for the memory figure

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    live = [cls(model=ClientFacts(state="new"), state_field="state") for _ in range(1000)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per_instance = sum(d.size_diff for d in after.compare_to(before, "filename")) / len(live)

    print(f"definition: {len(defn.states)} states, {len(defn.transitions)} transitions")
    print_table(
        "python-statemachine per event vs a dict lookup (µs per op)",
        ["operation", "ops", "p50 µs", "p99 µs", "mean µs", "p50 vs guarded lookup"],
        rows,
    )
    print(f"memory per live machine instance: {per_instance / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
