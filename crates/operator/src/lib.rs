//! midge-operator: reconciles `NatsCluster` resources into running midge clusters.
//!
//! The reconcile is a pipeline with one module per step, so that most of the logic is
//! pure and tested without a Kubernetes API server:
//!
//! - [`crd`]: the custom resource types; the CRD YAML is generated from them.
//! - [`validate`]: spec -> [`validate::ClusterPlan`] (pure), or every problem with its field path.
//! - [`broker_config`]: the rendered broker config checked by the broker's own loader,
//!   and the restart hash from the broker's own start-up options.
//! - [`build`]: plan -> the Kubernetes objects to apply (pure, deterministic), including
//!   the broker config file.
//! - [`jetstream`]: `spec.jetstream` per pool, the broker's `jetstream {}` options, the
//!   file store's volume claim template and the check that a StatefulSet can take it.
//! - [`leaf_auth`]: the credentials leaf pools log in to the core pools with (generated
//!   or the user's Secret).
//! - [`secrets`]: digests of the referenced Secrets, placed where a change reaches the
//!   servers (config reload or pod roll), and the Secret-to-cluster watch mapping.
//! - [`controller`]: apply with server-side apply, delete what is no longer produced,
//!   write the status; error back-off and metrics.
//! - [`render`]: the same validate + build for manifests on disk (`midge-operator render`).
//! - [`http`]: the operator's `/healthz` and `/metrics`.
//! - [`local`]: the same rendered broker config run as in-process servers on loopback
//!   (`midge-operator local`).
//! - [`leader`]: leader election through a Lease, so that several replicas can run.

pub mod broker_config;
pub mod build;
pub mod controller;
pub mod crd;
pub mod http;
pub mod jetstream;
pub mod leader;
pub mod leaf_auth;
pub mod local;
pub mod render;
pub mod route_tls;
pub mod secrets;
pub mod validate;
