"""The Kubernetes adapter: `KubeClient` implements `daemon.ports.Cluster` over kubernetes-asyncio.

See `client.py` for the boundary and `translate.py` for what is read from each object.
"""

from adapters.kubernetes.client import KubeClient

__all__ = ["KubeClient"]
