"""A pre-loaded parent that forks daemon processes on request: restarts in milliseconds.

The crash suite starts the daemon hundreds of times; a fresh interpreter spends most of a
second importing kubernetes-asyncio, aiohttp and our packages. This process imports all of it
once and then, for each request, forks a child that runs the real command line
(`tests.crash.crashing_daemon.main(argv)`: `vpsie-rebalancer run`, with crash injection) with
the environment, stdout and stderr it was given. Protocol, one JSON object per line: the
caller writes `{"argv": [...], "env": {...}, "stdout": path, "stderr": path}`; the zygote
answers `{"pid": N}` when the child started and `{"pid": N, "returncode": R}` when it ended
(R < 0: killed by signal -R, as subprocess reports it). One child at a time; no event loop and
no thread ever runs in this parent, so forking is safe.

Run as `python -m tests.crash.zygote` from the repository root.
"""

from __future__ import annotations

import json
import os
import sys


def _preload() -> None:
    import daemon.service.lifecycle  # noqa: F401  # the heavy imports happen here, once
    import tests.crash.crashing_daemon  # noqa: F401


def _child(request: dict[str, object]) -> None:
    import tests.crash.crashing_daemon

    env = request.get("env")
    if isinstance(env, dict):
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, key in ((1, "stdout"), (2, "stderr")):
        target = os.open(str(request[key]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    code = 1
    try:
        argv = request["argv"]
        assert isinstance(argv, list)
        code = tests.crash.crashing_daemon.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> int:
    _preload()
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
