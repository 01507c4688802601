"""A fake executor behind the control API, and a running server on an ephemeral port."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.control import ControlError, ControlServer, Readiness, Role
from daemon.control_protocol import Address

# state -> {action: next state}
_ALLOWED = {
    "awaiting_approval": {"approve": "approved", "reject": "cancelled", "cancel": "cancelled"},
    "executing": {"pause": "paused", "cancel": "rolling_back"},
    "paused": {"resume": "executing", "cancel": "rolling_back"},
}


@dataclass
class FakeTarget:
    """Plans and the actions their states allow: the part of the executor the API sees."""

    plans: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str, str, str]] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        return {
            "plans": [
                {
                    "plan_id": pid,
                    "state": state,
                    "node_group": "web",
                    "strategy": "rolling",
                    "replacements_done": 1,
                    "replacements_total": 3,
                }
                for pid, state in sorted(self.plans.items())
            ]
        }

    async def _act(self, action: str, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        if plan_id not in self.plans:
            raise ControlError(404, f"no plan {plan_id}")
        state = self.plans[plan_id]
        nxt = _ALLOWED.get(state, {}).get(action)
        if nxt is None:
            raise ControlError(409, f"plan {plan_id} is {state}; cannot {action} it")
        self.calls.append((action, plan_id, by, reason))
        self.plans[plan_id] = nxt
        return {"plan_id": plan_id, "state": nxt}

    async def approve(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        return await self._act("approve", plan_id, by, reason)

    async def reject(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        return await self._act("reject", plan_id, by, reason)

    async def pause(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        return await self._act("pause", plan_id, by, reason)

    async def resume(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        return await self._act("resume", plan_id, by, reason)

    async def cancel(self, plan_id: str, by: str, reason: str) -> dict[str, Any]:
        return await self._act("cancel", plan_id, by, reason)


@dataclass
class Running:
    server: ControlServer
    address: Address
    target: FakeTarget
    readiness: Readiness
    token: str
    token_file: Path


@pytest.fixture
def token_file(tmp_path: Path) -> tuple[str, Path]:
    token = secrets.token_urlsafe(32)
    path = tmp_path / "control-token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token, path


@pytest.fixture
async def running(token_file: tuple[str, Path]) -> AsyncIterator[Running]:
    from adapters.metrics import Metrics

    token, path = token_file
    target = FakeTarget(plans={"p-wait": "awaiting_approval", "p-run": "executing"})
    readiness = Readiness()
    readiness.set_role(Role.LEADER)
    readiness.mark_recovered()
    metrics = Metrics()
    metrics.plan_created("web", "rolling")
    server = ControlServer(
        target, listen="127.0.0.1:0", readiness=readiness, metrics=metrics, token_file=path
    )
    address = await server.start()
    try:
        yield Running(server, address, target, readiness, token, path)
    finally:
        await server.stop()
