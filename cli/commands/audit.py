"""`vpsie-rebalancer audit --db PATH [--plan ID] [--json]`: what the rebalancer did, and why.

Without --plan: every plan (id, node group, strategy, proposed at, outcome, nodes, saving).
With --plan (a unique prefix will do): its decisions with their reasons, its replacements,
its timeline and its totals. --json prints the same as JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.audit import PlanReport, PlanRow

HELP = "show what the rebalancer did and why, from the event log alone"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, metavar="PATH", help="the event log (SQLite)")
    parser.add_argument("--plan", metavar="ID", help="one plan (a unique prefix of its id)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"${value}/mo"


def _saving(row: PlanRow) -> str:
    if row.realised_saving is not None:
        return _money(row.realised_saving)
    return f"({_money(row.planned_saving)} planned)"


def render_list(rows: Sequence[PlanRow]) -> str:
    if not rows:
        return "no plans in the log"
    return table(
        ("PLAN", "NODE GROUP", "STRATEGY", "PROPOSED AT", "OUTCOME", "NODES", "SAVING"),
        [
            (r.plan_id, r.node_group, r.strategy, r.proposed_at, r.outcome, r.nodes, _saving(r))
            for r in rows
        ],
    )


def render_report(report: PlanReport) -> str:
    row = report.row
    out = [
        f"plan {row.plan_id}: {row.outcome}",
        f"  cluster {report.cluster}, node group {row.node_group}, strategy {row.strategy}, "
        f"{report.opportunity}",
        f"  proposed at {row.proposed_at}; planned saving {_money(row.planned_saving)}",
        "",
        "DECISIONS",
    ]
    for d in report.decisions:
        reasons = "; ".join(d.reasons)
        out.append(f"  {d.at}  {d.kind}: {d.action}" + (f" ({reasons})" if reasons else ""))
        for name, status, message in d.checks:
            out.append(f"      {status:<8} {name}: {message}")
    if report.prices_seen:
        prices = ", ".join(f"size {k} ${v}" for k, v in sorted(report.prices_seen.items()))
        out.append(f"  prices seen (monthly): {prices}")
    if report.exclusions:
        out += ["", "LEFT OUT"]
        out.append(table(("NODE", "REASON", "WHY"), report.exclusions))
    out += ["", "REPLACEMENTS"]
    out.append(table(("ID", "OLD NODE", "FROM", "TO", "STATUS"), report.replacements))
    out += ["", "TIMELINE"]
    out.append(
        table(
            ("SEQ", "TIME", "NODE", "EVENT", "FROM -> TO", "REASON"),
            [
                (
                    t.seq,
                    t.at,
                    t.node or "-",
                    t.event,
                    t.from_state
                    if t.from_state == t.to_state
                    else f"{t.from_state or '-'} -> {t.to_state}",
                    t.detail,
                )
                for t in report.timeline
            ],
        )
    )
    duration = "-" if report.duration_s is None else f"{report.duration_s:g} s"
    out += [
        "",
        "TOTALS",
        f"  replaced {report.replaced}, rolled back {report.rolled_back}, failed "
        f"{report.failed}; realised saving {_money(row.realised_saving)}; duration {duration}",
    ]
    if report.problems:
        out += ["", "PROBLEMS", *(f"  {p}" for p in report.problems)]
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses
    import sys

    import orjson

    from cli.audit import AuditError, list_plans, open_existing, plan_report, resolve_plan
    from eventstore import EventStoreError

    def to_json(value: object) -> str:
        def default(o: object) -> object:
            if isinstance(o, Decimal):
                return str(o)
            raise TypeError(type(o).__name__)

        return orjson.dumps(value, default=default, option=orjson.OPT_INDENT_2).decode()

    async def run() -> int:
        store = await open_existing(args.db)
        try:
            if args.plan:
                report = await plan_report(store, await resolve_plan(store, args.plan))
                print(to_json(dataclasses.asdict(report)) if args.json else render_report(report))
                return 0
            rows, problems = await list_plans(store)
        finally:
            await store.close()
        if args.json:
            print(to_json({"plans": [dataclasses.asdict(r) for r in rows], "problems": problems}))
        else:
            print(render_list(rows))
            for problem in problems:
                print(f"problem: {problem}", file=sys.stderr)
        return 0

    try:
        return asyncio.run(run())
    except (AuditError, EventStoreError) as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # an event this build cannot read (statemachine decode errors)
        print(f"audit: {args.db}: {exc}", file=sys.stderr)
        return 2
