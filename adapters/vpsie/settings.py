"""Where VPSie is and how to log in, read from one JSON file that holds the secrets.

The secrets never travel through argv or the environment: the daemon reads this file (a
systemd credential in production, `state_dir/vpsie.json` from the simulator), and the file must
not be readable by other users. Shape:

    {"base_url": "https://api.vpsie.com", "prefix": "/apps/v2",
     "auth": "token", "token": "..."}
    {"base_url": "...", "prefix": "/apps/v2",
     "auth": "client_credentials", "client_id": "...", "client_secret": "..."}

Optional keys: `auth_path` (default `/auth/from/api`, under the prefix) and
`cluster_identifier` (informational: the simulator writes the cluster it serves).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

AUTH_MODES = ("token", "client_credentials")
_KNOWN = {
    "base_url",
    "prefix",
    "auth",
    "token",
    "client_id",
    "client_secret",
    "auth_path",
    "cluster_identifier",
}


class SettingsError(ValueError):
    """The credentials file is missing, unreadable or malformed; the message names file and key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VpsieSettings:
    base_url: str
    prefix: str = "/apps/v2"
    auth: str = "token"
    token: str = ""
    client_id: str = ""
    client_secret: str = ""
    auth_path: str = "/auth/from/api"
    cluster_identifier: str = ""

    def __repr__(self) -> str:
        return (
            f"VpsieSettings(base_url={self.base_url!r}, prefix={self.prefix!r}, "
            f"auth={self.auth!r}, cluster_identifier={self.cluster_identifier!r})"
        )

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.token, self.client_secret) if s)

    @classmethod
    def from_mapping(cls, data: Any, where: str) -> VpsieSettings:
        if not isinstance(data, dict):
            raise SettingsError(f"{where}: expected a JSON object")
        unknown = sorted(set(data) - _KNOWN)
        if unknown:
            raise SettingsError(f"{where}: unknown key {unknown[0]!r}")
        for key, value in data.items():
            if not isinstance(value, str):
                raise SettingsError(f"{where}: key {key!r} must be a string")
        base_url = data.get("base_url", "")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(f"{where}: key 'base_url' must be an http(s) URL")
        auth = data.get("auth", "token")
        if auth not in AUTH_MODES:
            raise SettingsError(f"{where}: key 'auth' must be one of {AUTH_MODES}")
        if auth == "token" and not data.get("token"):
            raise SettingsError(f"{where}: key 'token' is required when auth is 'token'")
        if auth == "client_credentials":
            for key in ("client_id", "client_secret"):
                if not data.get(key):
                    raise SettingsError(
                        f"{where}: key {key!r} is required when auth is 'client_credentials'"
                    )
        prefix = data.get("prefix", "/apps/v2").strip("/")
        auth_path = data.get("auth_path", "/auth/from/api").strip("/")
        return cls(
            base_url=base_url.rstrip("/"),
            prefix=f"/{prefix}" if prefix else "",
            auth=auth,
            token=data.get("token", ""),
            client_id=data.get("client_id", ""),
            client_secret=data.get("client_secret", ""),
            auth_path=f"/{auth_path}",
            cluster_identifier=data.get("cluster_identifier", ""),
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> VpsieSettings:
        file = Path(path)
        try:
            mode = file.stat().st_mode
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"{file}: cannot read: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SettingsError(
                f"{file}: holds secrets but is accessible to other users "
                f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{file}: not valid JSON (line {exc.lineno})") from None
        return cls.from_mapping(data, str(file))
