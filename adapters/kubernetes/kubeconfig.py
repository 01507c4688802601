"""What a kubeconfig file holds that must never be written anywhere: its credentials.

`kubeconfig_secrets(path)` reads the file as the client will (YAML) and returns every
credential in it (tokens, passwords, client keys, auth-provider and exec tokens), so that the
daemon registers them with its log redactor before anything can log them. A file that is not
readable, not UTF-8 or not YAML is one `PermanentError` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from adapters.errors import PermanentError

SERVICE = "kubernetes"
# Keys whose values are credentials, wherever they appear under `users[].user`.
_SECRET_KEYS = frozenset(
    {
        "token",
        "password",
        "client-key-data",
        "access-token",
        "refresh-token",
        "id-token",
        "client-secret",
    }
)


def read_kubeconfig(path: str) -> dict[str, Any]:
    """The parsed file; PermanentError (one line naming the file) when it cannot be."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except OSError as exc:
        raise PermanentError(
            f"cannot load {path}: {exc.strerror or exc}", service=SERVICE
        ) from None
    except UnicodeDecodeError:
        raise PermanentError(f"cannot load {path}: not a text file (not UTF-8)",
                             service=SERVICE) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PermanentError(f"cannot load {path}: not YAML{where}", service=SERVICE) from None
    if not isinstance(data, dict):
        raise PermanentError(f"cannot load {path}: not a kubeconfig (expected a mapping)",
                             service=SERVICE)
    return data


def kubeconfig_secrets(path: str) -> list[str]:
    """Every credential in the kubeconfig at `path` (empty for none)."""
    found: list[str] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and key in _SECRET_KEYS and value:
            found.append(value)

    for user in read_kubeconfig(path).get("users") or []:
        if isinstance(user, dict):
            walk(user.get("user"))
    return found
