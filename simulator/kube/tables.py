"""Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for.

kubectl prints whatever columns the server sends; nodes and pods get their familiar columns,
every other kind NAME and AGE.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _age(created: str, now: float) -> str:
    try:
        t = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return "<unknown>"
    s = max(0, int(now - t))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _node_cells(o: dict[str, Any], now: float) -> list[Any]:
    ready = "Unknown"
    for c in o.get("status", {}).get("conditions") or []:
        if c.get("type") == "Ready":
            ready = "Ready" if c.get("status") == "True" else "NotReady"
    if o.get("spec", {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    labels = o["metadata"].get("labels") or {}
    roles = ",".join(sorted(k.split("/", 1)[1] for k in labels
                            if k.startswith("node-role.kubernetes.io/"))) or "<none>"
    version = o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
    return [o["metadata"]["name"], ready, roles,
            _age(o["metadata"].get("creationTimestamp", ""), now), version]


def _pod_cells(o: dict[str, Any], now: float) -> list[Any]:
    st = o.get("status") or {}
    cs = st.get("containerStatuses") or []
    total = len(o.get("spec", {}).get("containers") or [])
    ready = sum(1 for c in cs if c.get("ready"))
    phase = st.get("phase", "Pending")
    if "deletionTimestamp" in o["metadata"]:
        phase = "Terminating"
    restarts = sum(int(c.get("restartCount", 0)) for c in cs)
    return [o["metadata"]["name"], f"{ready}/{total}", phase, restarts,
            _age(o["metadata"].get("creationTimestamp", ""), now)]


def _col(name: str, type_: str = "string", fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": "", "priority": 0}


def _workload_cells(o: dict[str, Any], now: float) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    age = _age(o["metadata"].get("creationTimestamp", ""), now)
    if o["kind"] == "DaemonSet":
        return [o["metadata"]["name"], st.get("desiredNumberScheduled", 0),
                st.get("currentNumberScheduled", 0), st.get("numberReady", 0), age]
    if o["kind"] == "PodDisruptionBudget":
        return [o["metadata"]["name"], spec.get("minAvailable", "N/A"),
                spec.get("maxUnavailable", "N/A"), st.get("disruptionsAllowed", 0), age]
    return [o["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            st.get("availableReplicas", 0), age]


COLUMNS = {
    "Deployment": [_col("Name", fmt="name"), _col("Ready"), _col("Available", "integer"),
                   _col("Age")],
    "ReplicaSet": [_col("Name", fmt="name"), _col("Ready"), _col("Available", "integer"),
                   _col("Age")],
    "DaemonSet": [_col("Name", fmt="name"), _col("Desired", "integer"),
                  _col("Current", "integer"), _col("Ready", "integer"), _col("Age")],
    "PodDisruptionBudget": [_col("Name", fmt="name"), _col("Min Available"),
                            _col("Max Unavailable"), _col("Allowed Disruptions", "integer"),
                            _col("Age")],
    "Node": [_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"),
             _col("Version")],
    "Pod": [_col("Name", fmt="name"), _col("Ready"), _col("Status"),
            _col("Restarts", "integer"), _col("Age")],
}


def table(kind: str, objects: list[dict[str, Any]], now: float, rv: str,
          continue_token: str = "") -> dict[str, Any]:
    rows = []
    for o in objects:
        if kind == "Node":
            cells = _node_cells(o, now)
        elif kind == "Pod":
            cells = _pod_cells(o, now)
        elif kind in ("Deployment", "ReplicaSet", "DaemonSet", "PodDisruptionBudget"):
            cells = _workload_cells(o, now)
        else:
            cells = [o["metadata"]["name"], _age(o["metadata"].get("creationTimestamp", ""),
                                                 now)]
        partial = {k: v for k, v in o["metadata"].items() if k != "managedFields"}
        rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata",
                                                "apiVersion": "meta.k8s.io/v1",
                                                "metadata": partial}})
    meta: dict[str, Any] = {"resourceVersion": rv}
    if continue_token:
        meta["continue"] = continue_token
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": COLUMNS.get(kind, [_col("Name", fmt="name"), _col("Age")]),
            "rows": rows}
