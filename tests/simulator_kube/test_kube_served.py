"""The Kubernetes half of `start_simulator`: scenario settings reach the world, the token in
the kubeconfig it writes is the one the API checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adapters.errors import AuthenticationError
from adapters.kubernetes import KubeClient
from simulator.scenario import parse_scenario
from simulator.serve import start_simulator

SMALL = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "small.yaml"


async def test_scenario_pod_start_delay_and_kubeconfig_token(tmp_path: Path) -> None:
    text = SMALL.read_text().replace("podStartDelaySeconds: 5", "podStartDelaySeconds: 42")
    scenario = parse_scenario(text, source="small.yaml")
    async with start_simulator(scenario, speed=1000, state_dir=tmp_path / "state") as sim:
        assert sim.kube.pod_start_delay_s == 42
        async with KubeClient.from_kubeconfig(str(sim.kubeconfig_path)) as kube:
            assert len(await kube.list_nodes()) == 3
        config = yaml.safe_load(sim.kubeconfig_path.read_text())
        token = config["users"][0]["user"]["token"]
        config["users"][0]["user"]["token"] = token[::-1]
        wrong = tmp_path / "wrong-kubeconfig"
        wrong.write_text(yaml.safe_dump(config))
        async with KubeClient.from_kubeconfig(str(wrong)) as kube:
            with pytest.raises(AuthenticationError):
                await kube.list_nodes()


def test_scenario_without_pod_start_delay_keeps_the_worlds_default() -> None:
    text = SMALL.read_text().replace("  podStartDelaySeconds: 5\n", "")
    assert parse_scenario(text, source="small.yaml").pod_start_delay_s == 3.0
