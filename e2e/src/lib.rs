//! End-to-end scenarios for a midge cluster as the operator deploys it.
//!
//! The scenarios ([`scenarios`], and [`rotation`] on a cluster of its own) are written once
//! against [`driver::ClusterDriver`] and speak to the servers only as users do: NATS clients
//! (async-nats, with TLS and a token where the cluster asks for them, [`tls`]) on the client
//! port and HTTP GETs on the monitoring port. Two drivers run them:
//!
//! - [`docker::DockerDriver`] runs the real image as containers on a private Docker network,
//!   configured from `midge-operator render` ([`rendered`]) exactly as the StatefulSets'
//!   pods would be: the ConfigMap mounted at the same path, the container's args and
//!   environment, its user, fsGroup, read-only root and emptyDir, the StatefulSet DNS names
//!   (`pod.headless.ns.svc...`) as network aliases, readiness polled on the readiness
//!   probe's HTTP path, and the preStop command exec'd inside the container before it is
//!   stopped with the pod's grace period. Pools whose scheduling asks for ARM nodes run the
//!   arm64 and arm/v7 images under qemu.
//!
//!   It holds the namespace's Secrets as the API server would: those in the deployed
//!   manifest, and those render prints (leaf credentials, route TLS), taken in once and
//!   never rewritten, as the operator creates them only when absent. A Secret volume is a
//!   host directory per Secret (and volume), bind-mounted read-only where the pod mounts it,
//!   with the volume's mode and the pod's fsGroup; it and the ConfigMap volumes are written
//!   as the kubelet's atomic writer does ([`volume`]: a `..data` symlink to a timestamped
//!   directory, each file a symlink through it), so an update is one rename. `secretKeyRef`
//!   variables are read from the held Secret when a container is created. Updating a Secret
//!   ([`driver::ClusterDriver::update_secret`]) swaps its volumes at once and, when a key
//!   a pod's environment reads changed, does what the operator's restart digest (a pod
//!   template annotation) makes the StatefulSet controller do: a rolling update of each
//!   such pool, all pools at once, highest ordinal first, each pod deleted through preStop
//!   and its grace period and created again with the new environment, and Ready before
//!   the next.
//!
//!   What it does not prove: anything the controller does against the API server (server-
//!   side apply, owner references, status, deleting children, leader election, watching
//!   Secrets and digesting them); those are the `tower_test` scenarios in
//!   `crates/operator`. It stands in for the StatefulSet controller and the kubelet:
//!   scaling re-renders the manifest and starts or stops containers itself, highest
//!   ordinal first, as a StatefulSet with `podManagementPolicy: Parallel` does; a pod
//!   template change other than a Secret's digest is refused rather than imitated. Of a
//!   mounted Secret's change it models the volume swap only, not the digest comment the
//!   operator adds to the ConfigMap: servers see a new certificate through their watch on
//!   the certificate files alone (on Kubernetes the ConfigMap may change first and
//!   reload them early; the files' watch is what makes that safe). The kubelet's delay in
//!   syncing a volume is not modelled either (it is immediate), nor optional Secrets,
//!   `subPath`, per-item modes, the image (it comes from the driver's configuration, the
//!   one built for the pod's architecture), Services, the PodDisruptionBudgets, the
//!   NetworkPolicy or probe-driven restarts: clients dial the containers' addresses.
//! - [`kind::KindDriver`] runs them against a kind cluster with the chart and the operator
//!   installed (`e2e/run-kind.sh`), where the controller is real too; there [`kind_only`]
//!   adds what only an API server can show: a deleted StatefulSet and a hand-edited
//!   ConfigMap put back, the operator's leader killed and replaced, the CRD re-applied.
//!   Secrets are applied with server-side apply; an update waits for the StatefulSets
//!   whose pods read a changed key to carry a new restart digest and finish rolling.
//!
//! [`report`] collects what each scenario sent, received and lost, and prints the table the
//! scripts show at the end.

pub mod docker;
pub mod driver;
pub mod http;
pub mod kind;
pub mod kind_only;
pub mod rendered;
pub mod report;
pub mod rotation;
pub mod scenarios;
pub mod tls;
pub mod volume;
