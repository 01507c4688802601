"""The Kubernetes adapter: `KubeClient` implements `daemon.ports.Cluster` over kubernetes-asyncio.

See `client.py` for the boundary and `translate.py` for what is read from each object.
"""

from adapters.kubernetes.client import KubeClient
from adapters.kubernetes.kubeconfig import kubeconfig_secrets

__all__ = ["KubeClient", "kubeconfig_secrets"]
