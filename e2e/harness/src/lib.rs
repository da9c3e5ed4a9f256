//! Test harness for Pullwarden: a real local Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok, built from the Kubernetes Go modules), the
//! operator binary as a process, a real Gitea server, the HTTP/TCP/gRPC/DNS servers HealthCheck
//! probes hit (`probe_targets`), a real Argo CD (application controller +
//! repo-server), and the supervision that stops every server a test starts. The forge emulator is
//! its own crate (`pullwarden-emulator`).
pub mod argocd;
pub mod cluster;
pub mod fixtures;
pub mod gitea;
pub mod operator;
pub mod probe_targets;
pub mod process;
