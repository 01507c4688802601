"""What the control API's server and its command-line client agree on.

The address (`http://HOST:PORT`, `HOST:PORT`, `[V6]:PORT` or `unix:/path/to.sock`), the bearer
token file (one token, no spaces, at least 16 characters; the server refuses one others can
read), the plan-id pattern, the actions and the longest reason. The server
(`daemon.control`) and the client (`cli.control_client`) both import them from here.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from dataclasses import dataclass
from pathlib import Path

ACTIONS = ("approve", "reject", "pause", "resume", "cancel")
PLAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_REASON = 1000


@dataclass(frozen=True, slots=True)
class Address:
    """Where the control API listens: TCP host and port, or a Unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: str = ""

    @property
    def private(self) -> bool:
        """A Unix socket, or TCP on the loopback interface: only this host can connect."""
        if self.unix_path:
            return True
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a name other than localhost may resolve to anything

    def __str__(self) -> str:
        if self.unix_path:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_address(text: str) -> Address:
    """`unix:/path`, `http://host:port`, `host:port` or `[v6]:port`; ValueError names the text."""
    raw = text.strip()
    if raw.startswith("unix:"):
        path = raw[len("unix:") :]
        if not path.startswith("/"):
            raise ValueError(f"control address {text!r}: a Unix socket path must be absolute")
        return Address(unix_path=path)
    rest = raw.removeprefix("http://")
    if "/" in rest:
        raise ValueError(
            f"control address {text!r}: expected host:port, http://host:port or unix:/path"
        )
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", rest)
    if not m:
        raise ValueError(
            f"control address {text!r}: expected host:port, http://host:port or unix:/path"
        )
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ValueError(f"control address {text!r}: port {port} is out of range")
    return Address(host=host, port=port)


def read_token_file(path: str | Path, *, strict_mode: bool = False) -> str:
    """The token in `path`, stripped. With `strict_mode`, refuse a file others can read."""
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"token file {p}: does not exist") from None
    except PermissionError:
        raise ValueError(f"token file {p}: permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"token file {p}: cannot be read ({type(exc).__name__})") from None
    if strict_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(st.st_mode)
        raise ValueError(
            f"token file {p}: mode {mode:04o} lets others read it; chmod 600 it "
            "(or load it with systemd's LoadCredential=)"
        )
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"token file {p}: must hold one token with no spaces")
    if len(text) < 16:
        raise ValueError(f"token file {p}: the token is shorter than 16 characters")
    return text
