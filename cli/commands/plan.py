"""`vpsie-rebalancer plan --config FILE [--json]`: what the daemon would do now, acting on nothing.

Reads the cluster and VPSie, runs the planner for every configured node group and shows the
candidates, the nodes left out and why, the five safety checks, the saving, the batches and
the estimate. Each proposed plan is written to the event log as `PlanProposed` and closed at
once, in the same transaction, with `PlanCancelled(by="plan", reason="dry run ...")`, so
`audit` can show it later and no daemon ever picks it up as work (`--no-record` skips that).
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from planner import Analysis
    from statemachine.plan import PlanSpec

HELP = "show the plan the daemon would make now (a dry run: nothing is changed)"

EXIT_CONFIG = 2
EXIT_WORLD = 3  # VPSie or Kubernetes could not be read
EXIT_LOG = 4  # the event log is unusable


class PlanCommandError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="the daemon's configuration file (TOML)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--no-record", action="store_true", help="do not write the proposed plans to the event log"
    )


def main(args: argparse.Namespace) -> int:
    import asyncio

    try:
        return asyncio.run(_run(args.config, as_json=args.json, record=not args.no_record))
    except PlanCommandError as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return exc.exit_code


async def _run(config_path: str, *, as_json: bool, record: bool) -> int:
    import random

    from adapters.errors import AdapterError
    from adapters.kubernetes import KubeClient
    from adapters.vpsie import VpsieClient
    from adapters.vpsie.settings import SettingsError
    from daemon.clock import SystemClock, rfc3339
    from daemon.config import ConfigError, load_config
    from daemon.eventlog import open_configured_log
    from daemon.service.recovery import RecoveryError, recover
    from daemon.service.snapshot import SnapshotError, gather_snapshot
    from eventstore import EventStoreError
    from planner import analyze, make_plan
    from planner.health import assess, outlook
    from statemachine.events import to_json

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise PlanCommandError(str(exc), EXIT_CONFIG) from None
    clock = SystemClock()
    try:
        store = await open_configured_log(config)
    except EventStoreError as exc:
        raise PlanCommandError(f"event log {config.database}: {exc}", EXIT_LOG) from None
    try:
        try:
            recovered = await recover(store)
        except (RecoveryError, EventStoreError) as exc:
            raise PlanCommandError(f"event log {config.database}: {exc}", EXIT_LOG) from None
        try:
            vpsie = VpsieClient.from_file(
                config.vpsie_credentials,
                clock=clock,
                rng=random.Random(),
                max_retries=1,  # a person is waiting; they can run it again
                timeout_s=10,
            )
        except SettingsError as exc:
            raise PlanCommandError(str(exc), EXIT_CONFIG) from None
        try:
            async with vpsie, KubeClient.from_kubeconfig(str(config.kubeconfig)) as kube:
                now = clock.now()
                gathered = await gather_snapshot(
                    vpsie,
                    kube,
                    cluster_identifier=config.cluster,
                    now=now,
                    logged_sizes=recovered.state.workers,
                )
        except SnapshotError as exc:
            raise PlanCommandError(str(exc), EXIT_WORLD) from None
        except AdapterError as exc:
            raise PlanCommandError(str(exc), EXIT_WORLD) from None
        health = assess(
            gathered.snapshot,
            config.node_groups,
            now=rfc3339(now),
            cluster_limit=config.repair_max_unhealthy,
        )
        results: list[tuple[Analysis, PlanSpec | None]] = []
        for policy in config.node_groups:
            analysis = analyze(
                gathered.snapshot,
                policy,
                now=rfc3339(now),
                last_plan_finished_at=recovered.last_finished(policy.name),
            )
            results.append((analysis, make_plan(analysis, policy, now=rfc3339(now))))
        if record:
            for _, spec in results:
                if spec is not None:
                    await _record(store, spec, rfc3339(clock.now()))
    finally:
        await store.close()
    if as_json:
        body = {
            "taken_at": gathered.snapshot.taken_at,
            "api_reachable": gathered.snapshot.api_reachable,
            "problems": list(gathered.problems),
            "node_groups": [_analysis_json(a, s) for a, s in results],
            "recorded": record,
            "unhealthy": [
                {
                    "node_group": g.group,
                    "node": u.node,
                    "signal": u.signal.value,
                    "detail": u.detail,
                    "since": u.since,
                    "due_at": u.due_at,
                    "outlook": outlook(u, g),
                }
                for g in health.groups
                for u in g.unhealthy
            ],
            "repair_blocked": {g.group: g.blocked for g in health.groups if g.blocked},
        }
        sys.stdout.write(to_json(body).decode() + "\n")
    else:
        for problem in gathered.problems:
            print(f"warning: {problem}")
        for g in health.groups:
            if g.blocked and g.unhealthy:
                print(f"repair blocked in node group {g.group}: {g.blocked}")
            for u in g.unhealthy:
                print(
                    f"unhealthy: node {u.node} ({g.group}) {u.signal.value} since {u.since}: "
                    f"{u.detail}; {outlook(u, g)}"
                )
        for analysis, spec in results:
            print(_render(analysis, spec, recorded=record, db=str(config.database)))
    return 0


async def _record(store: Any, spec: PlanSpec, at: str) -> None:
    from eventstore import NewEvent
    from statemachine import events as ev

    proposed = ev.PlanProposed(plan_id=spec.plan_id, at=at, plan=spec)
    closed = ev.PlanCancelled(
        plan_id=spec.plan_id,
        at=at,
        by="plan",
        reason="dry run: shown by `vpsie-rebalancer plan`, not executed",
    )
    stream = ev.stream_for(spec.plan_id)
    if await store.stream_version(stream):
        return  # the same plan (same inputs, same instant) is already in the log
    events = []
    for event in (proposed, closed):
        encoded = ev.encode(event)
        events.append(
            NewEvent(type=encoded.type, schema_version=encoded.schema_version, data=encoded.data)
        )
    await store.append(stream, 0, events)


def _analysis_json(analysis: Analysis, spec: PlanSpec | None) -> dict[str, Any]:
    return {
        "node_group": analysis.group,
        "action": analysis.action.value,
        "action_reasons": list(analysis.action_reasons),
        "opportunity": analysis.opportunity.value if analysis.opportunity else None,
        "target_size": None if analysis.target is None else analysis.target.name,
        "fleet_before": analysis.fleet_before,
        "fleet_after": analysis.fleet_after,
        "rejected_fleets": list(analysis.rejected_fleets),
        "candidates": analysis.candidates,
        "exclusions": analysis.exclusions,
        "checks": analysis.checks,
        "options": analysis.options,
        "monthly_saving": analysis.monthly_saving,
        "estimated_duration_s": analysis.estimated_duration_s,
        "plan": spec,
    }


def _money(amount: Decimal) -> str:
    return f"${amount:,.2f}"


def _duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return [f"{indent}(none)"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    out = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        out.append(
            indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )
    return out


def _render(analysis: Analysis, spec: PlanSpec | None, *, recorded: bool, db: str) -> str:
    lines = [
        f"Node group {analysis.group} (cluster {analysis.cluster}, strategy "
        f"{analysis.strategy.value}, {len(analysis.group_nodes)} nodes)",
    ]
    action = analysis.action.value.upper().replace("_", " ")
    lines.append(f"  Recommendation: {action}")
    lines += [f"    - {reason}" for reason in analysis.action_reasons]
    lines.append("")
    lines.append("  Safety checks")
    lines += _table(
        ["CHECK", "RESULT", "WHY"],
        [[c.name, c.status.value, c.message] for c in analysis.checks],
        "    ",
    )
    lines.append("")
    lines.append("  Candidates")
    target = analysis.target  # the size most new nodes have (None: no plan)
    by_old = {r.old_node: r for r in (spec.replacements if spec else analysis.replacements)}
    rows = []
    for c in analysis.candidates:
        r = by_old.get(c.node)
        new = (r.new_size_name or "remove") if r is not None and r.new_size_id else "remove"
        if r is None:
            new = "keep"
        saving = _money(r.monthly_saving) if r is not None else "-"
        batch = str(r.batch) if r is not None else "-"
        rows.append(
            [
                c.node,
                c.size_name,
                new,
                f"{_money(c.monthly_price)}",
                saving,
                f"{c.utilisation_per_mille / 10:.0f}%",
                str(c.pods),
                batch,
            ]
        )
    lines += _table(
        ["NODE", "SIZE", "NEW SIZE", "PRICE/MO", "SAVING/MO", "USED", "PODS", "BATCH"],
        rows,
        "    ",
    )
    added = [r for r in (spec.replacements if spec else analysis.replacements) if r.adds_only]
    if added:
        lines.append("")
        lines.append("  Added (the group grows: a new node, none removed for it)")
        lines += _table(
            ["NODE", "NEW SIZE", "PRICE/MO", "BATCH"],
            [
                [
                    "new " + r.replacement_id.rsplit("/", 1)[-1],
                    r.new_size_name or str(r.new_size_id),
                    _money(r.new_monthly_price),
                    str(r.batch),
                ]
                for r in added
            ],
            "    ",
        )
    lines.append("")
    lines.append("  Left out")
    lines += _table(
        ["NODE", "REASON", "WHY"],
        [[e.node, e.reason, e.message] for e in analysis.exclusions],
        "    ",
    )
    lines.append("")
    if analysis.fleet_before:
        lines.append(f"  Fleet now:   {analysis.fleet_before}")
    if target is not None:
        grows = f" ({len(added)} node{'s' if len(added) != 1 else ''} added)" if added else ""
        lines.append(f"  Fleet after: {analysis.fleet_after}{grows}")
    for why in analysis.rejected_fleets:
        lines.append(f"  Cheaper fleet not taken: {why}")
    lines.append(f"  Saving: {_money(analysis.monthly_saving)}/month")
    if spec is not None:
        batches = "  ".join(
            f"[{i}] " + ", ".join(rid.rsplit("/", 1)[-1] for rid in batch)
            for i, batch in enumerate(spec.batches)
        )
        lines.append(f"  Batches: {batches}")
        lines.append(
            f"  Estimate: {_duration(spec.estimated_duration_s)} "
            f"(at most {spec.max_concurrent} at once)"
        )
        if recorded:
            lines.append(
                f"  Recorded as {spec.plan_id} (dry run): "
                f"vpsie-rebalancer audit --db {db} --plan {spec.plan_id}"
            )
    else:
        lines.append("  No plan: nothing to replace.")
    lines.append("")
    return "\n".join(lines)
