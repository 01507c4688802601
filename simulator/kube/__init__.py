"""A simulated Kubernetes API server, good enough for our adapter and for real kubectl.

`KubeWorld` is the cluster (objects, controllers, scheduler, kubelets on a `SimClock`);
`make_kube_app` serves it over HTTP. See docs/simulator-kube.md.
"""

from simulator.kube.api import make_kube_app
from simulator.kube.world import KubeWorld

__all__ = ["KubeWorld", "make_kube_app"]
