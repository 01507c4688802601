"""What the world looked like: the read-only model of a cluster and of VPSie's offer.

These frozen dataclasses are the shared vocabulary between the layers. The adapters translate
what kubernetes-asyncio and the VPSie API return into them at the boundary (so nothing above
the adapters sees a library object); the planner takes a `ClusterSnapshot` in and returns a plan
out; the events carry summaries of them so a plan can be explained from the log alone.

Units are fixed here, once: CPU in millicores, memory in bytes, disk in GB, money in `Decimal`
US dollars per month (VPSie's monthly `price`; one formula for cost everywhere).
Mappings are plain dicts; treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

MANAGED_LABEL = "autoscaler.vpsie.com/managed"
NODEGROUP_LABEL = "autoscaler.vpsie.com/nodegroup"
VPSIE_NODE_LABEL = "autoscaler.vpsie.com/vpsienode"
DATACENTER_LABEL = "autoscaler.vpsie.com/datacenter"
PROTECTED_ANNOTATION = "autoscaler.vpsie.com/protected"
SCALE_DOWN_DISABLED_LABEL = "autoscaler.vpsie.com/scale-down-disabled"
KARPENTER_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
SAFE_TO_EVICT_ANNOTATION = "cluster-autoscaler.kubernetes.io/safe-to-evict"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# Set by the rebalancer on a node it cordoned, so that a restart (or a person) can tell its
# cordons from anyone else's.
CORDONED_BY_ANNOTATION = "rebalancer.vpsie.com/cordoned-by-plan"
# Written by the rebalancer on every Node it creates: the VPSie size (KubeSizeID) and node group
# id of its worker, since VPSie's node listing names no group.
SIZE_LABEL = "rebalancer.vpsie.com/size-id"
VPSIE_GROUP_LABEL = "rebalancer.vpsie.com/vpsie-group-id"
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """An amount of schedulable resources."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    pods: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            cpu_millis=self.cpu_millis + other.cpu_millis,
            memory_bytes=self.memory_bytes + other.memory_bytes,
            pods=self.pods + other.pods,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            cpu_millis=self.cpu_millis - other.cpu_millis,
            memory_bytes=self.memory_bytes - other.memory_bytes,
            pods=self.pods - other.pods,
        )

    def fits_in(self, other: Resources) -> bool:
        return (
            self.cpu_millis <= other.cpu_millis
            and self.memory_bytes <= other.memory_bytes
            and self.pods <= other.pods
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"  # NoSchedule | PreferNoSchedule | NoExecute


@dataclass(frozen=True, slots=True, kw_only=True)
class Toleration:
    key: str = ""  # empty key with operator Exists tolerates everything
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str = ""  # empty matches every effect


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelRequirement:
    """One `matchExpressions` entry (label selectors) or node selector requirement."""

    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist (| Gt | Lt for node selectors)
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSelector:
    """A Kubernetes label selector. An empty selector matches everything."""

    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelRequirement, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCondition:
    """One entry of a Node's `status.conditions`: `status` is "True", "False" or "Unknown";
    `last_transition` is RFC 3339 as the API gave it ("" when absent)."""

    type: str
    status: str
    last_transition: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SpreadConstraint:
    """A topologySpreadConstraint with whenUnsatisfiable DoNotSchedule: among the nodes that
    carry `topology_key` (and pass the node inclusion policies below), the number of pods
    `selector` matches (in the pod's namespace) per value of the key may differ by at most
    `max_skew` after the pod is placed."""

    max_skew: int
    topology_key: str
    selector: LabelSelector = LabelSelector()
    # Fewer eligible domains than this: the global minimum counts as 0 (1: no effect).
    min_domains: int = 1
    # The pod's own values of these label keys are ANDed into `selector` (a key the pod does
    # not carry is ignored), e.g. pod-template-hash: only one ReplicaSet revision counts.
    match_label_keys: tuple[str, ...] = ()
    # Which nodes count as domains: "Honor" (only those passing the pod's nodeSelector and
    # required node affinity; the default) or "Ignore" (all) ...
    node_affinity_policy: str = "Honor"
    # ... and "Ignore" (tainted nodes too; the default) or "Honor" (only nodes whose
    # NoSchedule/NoExecute taints the pod tolerates).
    node_taints_policy: str = "Ignore"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    capacity: Resources = Resources()
    allocatable: Resources = Resources()
    ready: bool = False
    unschedulable: bool = False
    taints: tuple[Taint, ...] = ()
    # InternalIP and ExternalIP addresses, in the order the API gave them.
    addresses: tuple[str, ...] = ()
    created_at: str = ""  # RFC 3339, as the API gave it
    resource_version: str = ""
    uid: str = ""  # metadata.uid: tells this Node from a later one of the same name
    # Every condition the API listed (Ready and, e.g., node-problem-detector's), for repair.
    conditions: tuple[NodeCondition, ...] = ()

    def condition(self, type_: str) -> NodeCondition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class PodInfo:
    namespace: str
    name: str
    node_name: str = ""
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    # Kind and name of the controlling owner reference ("" when the pod has no controller).
    owner_kind: str = ""
    owner_name: str = ""
    phase: str = "Pending"  # Pending | Running | Succeeded | Failed | Unknown
    ready: bool = False
    # Effective requests as the scheduler counts them: max(sum(containers), max(init
    # containers)) + pod overhead; `pods` is always 1.
    requests: Resources = Resources(pods=1)
    tolerations: tuple[Toleration, ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    # requiredDuringSchedulingIgnoredDuringExecution: the node must match at least one term;
    # each term is a conjunction of requirements.
    required_node_affinity: tuple[tuple[LabelRequirement, ...], ...] = ()
    # requiredDuringScheduling pod anti-affinity with topologyKey kubernetes.io/hostname:
    # the pod may not share a node with a pod (of the same namespace) that one selector matches.
    anti_affinity_hostname: tuple[LabelSelector, ...] = ()
    # emptyDir not backed by memory, hostPath, or a PVC bound to a local PV.
    uses_local_storage: bool = False
    is_daemonset: bool = False
    is_mirror: bool = False
    deleting: bool = False  # metadata.deletionTimestamp is set
    # topologySpreadConstraints with whenUnsatisfiable DoNotSchedule (ScheduleAnyway ones are
    # preferences and are not kept).
    topology_spread: tuple[SpreadConstraint, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PdbInfo:
    namespace: str
    name: str
    selector: LabelSelector = LabelSelector()
    disruptions_allowed: int = 0
    current_healthy: int = 0
    desired_healthy: int = 0
    expected_pods: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeGroupSpec:
    """A `autoscaler.vpsie.com/v1alpha1` NodeGroup custom resource, the fields we read."""

    name: str
    namespace: str = ""
    min_nodes: int | None = None
    max_nodes: int | None = None
    kube_size_id: int | None = None
    datacenter_id: str = ""
    vpsie_group_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeOffer:
    """A VPSie Kubernetes worker size in one datacenter, with its price."""

    id: int
    name: str
    cpu: int  # vCPUs
    ram_mb: int
    disk_gb: int
    monthly_price: Decimal
    hourly_price: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Datacenter:
    identifier: str
    name: str = ""
    country: str = ""
    active: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class VpsieCluster:
    identifier: str
    name: str = ""
    kube_version: str = ""
    # Not on cluster rows as the public clients show them: from the node groups or the config.
    datacenter_identifier: str = ""
    worker_count: int = 0
    # `lock` and `upgrade_version` of the cluster row (meaning undocumented): a locked cluster,
    # or one being upgraded, is no time to replace nodes.
    locked: bool = False
    upgrade_version: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VpsieNodeGroup:
    id: int
    identifier: str = ""
    name: str = ""
    size_id: int = 0
    datacenter_identifier: str = ""
    nodes_count: int = 0
    cpu: int = 0
    ram_mb: int = 0
    disk_gb: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class VpsieWorker:
    """A worker VM of a managed cluster, as VPSie lists it.

    The public clients read two shapes: vpsie-k8s-autoscaler's `{identifier, hostname, ip,
    status, role, cpu, ram, disk}` and govpsie's `{id, hostname, default_ip, private_ip,
    node_type, node_id, ...}` (integers, no identifier, no status). Neither names the worker's
    node group. Only a worker with an `identifier` and a known worker role can be deleted: an
    integer `node_id` is never a delete identifier (`deletable`)."""

    identifier: str  # "" when the API gives none (govpsie's shape)
    hostname: str = ""  # as VPSie lists it; its case may differ from the Node's name
    ip: str = ""
    private_ip: str = ""
    status: str = ""
    node_id: int | None = None  # govpsie's integer `node_id`: for reading only
    role: str = "worker"  # or "" when the API's role field cannot be read as one
    cpu: int = 0  # vCPUs, 0 when not listed
    ram_mb: int = 0
    disk_gb: int = 0
    created_on: str = ""

    @property
    def key(self) -> str:
        """A stable name for the row, also when it has no identifier."""
        if self.identifier:
            return self.identifier
        if self.node_id is not None:
            return f"node_id:{self.node_id}"
        return f"hostname:{self.hostname.lower()}"

    @property
    def deletable(self) -> bool:
        return bool(self.identifier) and self.role == "worker"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSnapshot:
    """Everything the planner reads, taken at one moment (`taken_at`, RFC 3339 UTC)."""

    taken_at: str
    nodes: tuple[NodeInfo, ...] = ()
    pods: tuple[PodInfo, ...] = ()
    pdbs: tuple[PdbInfo, ...] = ()
    node_groups: tuple[NodeGroupSpec, ...] = ()
    vpsie_groups: tuple[VpsieNodeGroup, ...] = ()
    workers: tuple[VpsieWorker, ...] = ()
    offers: tuple[SizeOffer, ...] = ()
    api_reachable: bool = True
    # What the daemon's own log recorded for workers it added: identifier -> size id. The first
    # source of a worker's size (then SIZE_LABEL on its Node, then a unique cpu/ram/disk match).
    logged_sizes: dict[str, int] = field(default_factory=dict)
    # The VPSie cluster row's `lock` and `upgrade_version`: no time to replace nodes.
    cluster_locked: bool = False
    cluster_upgrade_version: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseInfo:
    """A coordination.k8s.io/v1 Lease, the fields leader election reads and writes."""

    namespace: str
    name: str
    holder: str = ""
    duration_s: int = 15
    acquire_time: str = ""  # RFC 3339 with microseconds, as the API wants MicroTime
    renew_time: str = ""
    transitions: int = 0
    resource_version: str = ""
