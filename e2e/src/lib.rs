//! End-to-end scenarios for a midge cluster as the operator deploys it.
//!
//! The scenarios ([`scenarios`]) are written once against [`driver::ClusterDriver`] and
//! speak to the servers only as users do: NATS clients (async-nats) on the client port and
//! HTTP GETs on the monitoring port. Two drivers run them:
//!
//! - [`docker::DockerDriver`] runs the real image as containers on a private Docker network,
//!   configured from `midge-operator render` ([`rendered`]) exactly as the StatefulSets'
//!   pods would be: the ConfigMap mounted at the same path (updated the way the kubelet
//!   does, by swapping a `..data` symlink), the container's args and environment, its user,
//!   read-only root and emptyDir, the StatefulSet DNS names (`pod.headless.ns.svc...`) as
//!   network aliases, readiness polled on the readiness probe's HTTP path, and the preStop
//!   command exec'd inside the container before it is stopped with the pod's grace period.
//!   Pools whose scheduling asks for ARM nodes run the arm64 and arm/v7 images under qemu.
//!
//!   What it does not prove: anything the controller does against the API server (server-
//!   side apply, owner references, status, deleting children, leader election); those are
//!   the `tower_test` scenarios in `crates/operator`. It also stands in for the StatefulSet
//!   controller and the kubelet: scaling re-renders the manifest and starts or stops
//!   containers itself, highest ordinal first, as a StatefulSet with
//!   `podManagementPolicy: Parallel` does; a change that would roll the pods is refused
//!   rather than imitated. The image comes from the driver's configuration (the one built
//!   for the pod's architecture), not from the StatefulSet. Secrets are not modelled (a
//!   sample that mounts one is refused), nor are Services, the PodDisruptionBudgets, the
//!   NetworkPolicy or probe-driven restarts: clients dial the containers' addresses.
//! - [`kind::KindDriver`] runs them against a kind cluster with the chart and the operator
//!   installed (`e2e/run-kind.sh`), where the controller is real too; there [`kind_only`]
//!   adds what only an API server can show: a deleted StatefulSet and a hand-edited
//!   ConfigMap put back, the operator's leader killed and replaced, the CRD re-applied.
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
