"""What the simulated scheduler checks before binding a pod to a node.

The real scheduler's filters that matter for draining, reduced to plain functions over the
stored dicts: resource requests (max of the containers' sum and any init container, plus
overhead), NoSchedule/NoExecute taints against tolerations, nodeSelector, required node
affinity, required pod anti-affinity on `kubernetes.io/hostname`, and topologySpreadConstraints
with whenUnsatisfiable DoNotSchedule (domains counted over the nodes the node inclusion
policies let in: by default those passing the pod's node selection, taints ignored; with
minDomains, and matchLabelKeys ANDed into the selector).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from simulator.kube.quantities import cpu_millis, mem_bytes
from simulator.kube.selectors import Requirement, Selector, selector_from_object

HOSTNAME = "kubernetes.io/hostname"


def pod_requests(spec: Mapping[str, Any]) -> tuple[int, int]:
    """(cpu millicores, memory bytes) the scheduler reserves for a pod."""

    def req(c: Mapping[str, Any]) -> tuple[int, int]:
        r = (c.get("resources") or {}).get("requests") or {}
        return cpu_millis(r.get("cpu", 0)), mem_bytes(r.get("memory", 0))

    cpu = mem = 0
    for c in spec.get("containers") or []:
        a, b = req(c)
        cpu, mem = cpu + a, mem + b
    for c in spec.get("initContainers") or []:
        a, b = req(c)
        cpu, mem = max(cpu, a), max(mem, b)
    over = spec.get("overhead") or {}
    return cpu + cpu_millis(over.get("cpu", 0)), mem + mem_bytes(over.get("memory", 0))


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        effect = t.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        key = t.get("key") or ""
        if op == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def taints_tolerated(node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> bool:
    tolerations = pod_spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(
            tolerations, taint
        ):
            return False
    return True


def _node_term_matches(term: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    exprs = term.get("matchExpressions") or []
    if not exprs:
        return False
    mapped = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists",
              "Gt": "gt", "Lt": "lt"}
    for e in exprs:
        op = mapped.get(e.get("operator", ""))
        if op is None:
            return False
        r = Requirement(e.get("key", ""), op, frozenset(str(v) for v in e.get("values") or []))
        if not r.matches(labels):
            return False
    return True


def node_affinity_ok(node_labels: Mapping[str, str], pod_spec: Mapping[str, Any]) -> bool:
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if node_labels.get(k) != v:
            return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(_node_term_matches(t, node_labels) for t in terms)


def anti_affinity_terms(pod: Mapping[str, Any]) -> list[tuple[Selector, frozenset[str]]]:
    """Required anti-affinity on hostname: (selector, namespaces) pairs."""
    anti = ((pod.get("spec") or {}).get("affinity") or {}).get("podAntiAffinity") or {}
    out = []
    ns = pod["metadata"].get("namespace", "default")
    for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
        if term.get("topologyKey") != HOSTNAME:
            continue
        namespaces = frozenset(term.get("namespaces") or [ns])
        out.append((selector_from_object(term.get("labelSelector")), namespaces))
    return out


@dataclass(frozen=True, slots=True)
class Spread:
    """One hard topology spread constraint, as the scheduler reads it."""

    max_skew: int
    key: str
    selector: Selector  # matchLabelKeys already ANDed in
    min_domains: int = 1
    honor_affinity: bool = True  # nodeAffinityPolicy Honor (the default)
    honor_taints: bool = False  # nodeTaintsPolicy Honor (the default is Ignore)

    def counts(self, node: Mapping[str, Any], pod_spec: Mapping[str, Any]) -> bool:
        """Whether the node's domain counts, by the node inclusion policies."""
        labels = node["metadata"].get("labels") or {}
        if self.honor_affinity and not node_affinity_ok(labels, pod_spec):
            return False
        return not self.honor_taints or taints_tolerated(node, pod_spec)


def spread_constraints(pod: Mapping[str, Any]) -> list[Spread]:
    """Hard topology spread: each DoNotSchedule constraint (the default); a constraint without
    a labelSelector counts no pod and is left out. The pod's own values of `matchLabelKeys`
    are ANDed into the selector (a key the pod lacks is ignored); minDomains below 1 or not
    an integer counts as 1 (the API server would refuse it; this one does not validate)."""
    out = []
    own = (pod.get("metadata") or {}).get("labels") or {}
    for c in (pod.get("spec") or {}).get("topologySpreadConstraints") or []:
        if (c.get("whenUnsatisfiable") or "DoNotSchedule") != "DoNotSchedule":
            continue
        if c.get("labelSelector") is None:
            continue
        selector = selector_from_object(c.get("labelSelector"))
        keys = c.get("matchLabelKeys") or []
        extra = tuple(Requirement(str(k), "in", frozenset({own[k]}))
                      for k in keys if isinstance(k, str) and k in own)
        if extra:
            selector = Selector(selector.requirements + extra, selector.nothing)
        min_domains = c.get("minDomains")
        out.append(Spread(
            max_skew=int(c.get("maxSkew") or 1), key=str(c.get("topologyKey") or ""),
            selector=selector,
            min_domains=min_domains if isinstance(min_domains, int) and min_domains > 0 else 1,
            honor_affinity=c.get("nodeAffinityPolicy") != "Ignore",
            honor_taints=c.get("nodeTaintsPolicy") == "Honor"))
    return out
