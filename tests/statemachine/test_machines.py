"""The machines: the fold's fast lookups agree with `transitions`, restore fires nothing,
and the committed diagrams are current."""

from __future__ import annotations

from pathlib import Path

import pytest
from transitions import MachineError

from statemachine import diagrams
from statemachine.machines import (
    PLAN_NEXT,
    REPLACEMENT_NEXT,
    PlanStatus,
    ReplacementStatus,
    plan_machine,
    replacement_machine,
    restore,
)


class Model:
    def __init__(self) -> None:
        self.entered: list[str] = []

    def on_enter(self) -> None:
        self.entered.append(getattr(self, "state", "?"))


@pytest.mark.parametrize(
    ("build", "states", "lookup"),
    [
        (plan_machine, PlanStatus, PLAN_NEXT),
        (replacement_machine, ReplacementStatus, REPLACEMENT_NEXT),
    ],
    ids=["plan", "replacement"],
)
def test_lookup_matches_the_live_machine_for_every_state_and_trigger(
    build: object,
    states: type[PlanStatus] | type[ReplacementStatus],
    lookup: dict[tuple[str, str], str],
) -> None:
    triggers = {t for _, t in lookup}
    model = Model()
    machine = build(model)  # type: ignore[operator]
    checked = 0
    for state in states:
        for trigger in sorted(triggers):
            restore(machine, model, state.value)
            expected = lookup.get((state.value, trigger))
            if expected is None:
                with pytest.raises(MachineError):
                    model.trigger(trigger)  # type: ignore[attr-defined]
            else:
                model.trigger(trigger)  # type: ignore[attr-defined]
                assert model.state == expected  # type: ignore[attr-defined]
            checked += 1
    assert checked == len(states) * len(triggers)


def test_restore_fires_no_callbacks() -> None:
    model = Model()
    machine = replacement_machine(model)
    machine.get_state("draining").add_callback("enter", model.on_enter)
    restore(machine, model, "draining")
    assert model.state == "draining"  # type: ignore[attr-defined]
    assert model.entered == []
    restore(machine, model, "cordoned")
    model.trigger("DrainStarted")  # type: ignore[attr-defined]
    assert model.entered == ["draining"]


def test_terminal_states_have_no_way_out() -> None:
    for state in ("completed", "rejected", "cancelled", "rolled_back", "failed"):
        assert not [t for (s, t) in PLAN_NEXT if s == state]
    for state in ("done", "rolled_back", "failed"):
        assert not [t for (s, t) in REPLACEMENT_NEXT if s == state]


def test_committed_diagrams_are_current() -> None:
    assert diagrams.DEFAULT_PATH.read_text(encoding="utf-8") == diagrams.render(), (
        "docs/machines.md is stale: run python -m statemachine.diagrams"
    )


def test_diagram_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "machines.md"
    stale.write_text("old\n", encoding="utf-8")
    assert diagrams.main(["--path", str(stale), "--check"]) == 1
    assert diagrams.main(["--path", str(stale)]) == 0
    assert diagrams.main(["--path", str(stale), "--check"]) == 0
