"""Label and field selectors, in both the query-string form and the object form.

`?labelSelector=app=web,tier in (a,b),!legacy` and a PodDisruptionBudget's
`{"matchLabels": ..., "matchExpressions": ...}` parse into the same `Selector`, so the
eviction check and a `kubectl get -l` agree on what matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # = != in notin exists !exists gt lt
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        op = self.op
        if op == "=":
            return present and value in self.values
        if op == "!=":
            return not present or value not in self.values
        if op == "in":
            return present and value in self.values
        if op == "notin":
            return not present or value not in self.values
        if op == "exists":
            return present
        if op == "!exists":
            return not present
        if op in ("gt", "lt") and present:
            try:
                have, bound = int(value or ""), int(next(iter(self.values)))
            except (ValueError, StopIteration):
                return False
            return have > bound if op == "gt" else have < bound
        return False


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False  # a nil selector in a PDB selects nothing

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.nothing:
            return False
        return all(r.matches(labels) for r in self.requirements)

    def equalities(self) -> list[tuple[str, str]]:
        """(key, value) pairs every match must carry: lets callers use a label index."""
        return [
            (r.key, next(iter(r.values)))
            for r in self.requirements
            if r.op in ("=", "in") and len(r.values) == 1
        ]


_TERM = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*"
    r"(?:(?P<op>==|=|!=|\s+in\s+|\s+notin\s+)\s*(?P<rest>\([^)]*\)|[A-Za-z0-9._-]*))?\s*"
)


def parse_label_selector(text: str) -> Selector:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`; ValueError naming the bad part."""
    reqs: list[Requirement] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _TERM.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unable to parse label selector {text!r} at {pos}")
        key, op, rest = m.group("key"), (m.group("op") or "").strip(), m.group("rest")
        if m.group("neg"):
            if op:
                raise ValueError(f"unable to parse label selector {text!r}: '!' with operator")
            reqs.append(Requirement(key, "!exists"))
        elif not op:
            reqs.append(Requirement(key, "exists"))
        elif op in ("in", "notin"):
            if not rest or not rest.startswith("("):
                raise ValueError(f"label selector {text!r}: {op} needs a (list)")
            values = frozenset(v.strip() for v in rest[1:-1].split(",") if v.strip())
            reqs.append(Requirement(key, op, values))
        else:
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", frozenset([rest or ""])))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError(f"unable to parse label selector {text!r} at {pos}")
            pos += 1
    return Selector(tuple(reqs))


def selector_from_object(obj: Any, where: str = "selector") -> Selector:
    """A `metav1.LabelSelector`; None selects nothing, {} selects everything."""
    if obj is None:
        return Selector(nothing=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: must be an object")
    reqs = [Requirement(str(k), "=", frozenset([str(v)]))
            for k, v in (obj.get("matchLabels") or {}).items()]
    for i, expr in enumerate(obj.get("matchExpressions") or []):
        op = str(expr.get("operator", ""))
        key = str(expr.get("key", ""))
        values = frozenset(str(v) for v in expr.get("values") or [])
        mapped = {"In": "in", "NotIn": "notin", "Exists": "exists",
                  "DoesNotExist": "!exists", "Gt": "gt", "Lt": "lt"}.get(op)
        if mapped is None or not key:
            raise ValueError(f"{where}.matchExpressions[{i}]: bad operator {op!r} or key")
        reqs.append(Requirement(key, mapped, values))
    return Selector(tuple(reqs))


def parse_field_selector(text: str) -> list[tuple[str, bool, str]]:
    """`spec.nodeName=x,status.phase!=Running` -> [(path, equal?, value)]."""
    out: list[tuple[str, bool, str]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "!=" in part:
            path, value = part.split("!=", 1)
            out.append((path.strip(), False, value.strip()))
        elif "=" in part:
            path, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            out.append((path.strip(), True, value.strip()))
        else:
            raise ValueError(f"invalid field selector {text!r}: {part!r} has no operator")
    return out


SUPPORTED_FIELDS = {"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase",
                    "spec.unschedulable", "involvedObject.name", "involvedObject.kind",
                    "involvedObject.namespace", "regarding.name", "regarding.kind", "type",
                    "reason", "spec.schedulerName", "spec.restartPolicy"}


def field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(obj: Mapping[str, Any], terms: list[tuple[str, bool, str]]) -> bool:
    return all((field_value(obj, p) == v) == eq for p, eq, v in terms)
