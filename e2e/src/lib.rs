//! Test support for Pullwarden: a real local Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok, built from the Kubernetes Go modules) and a
//! forge emulator standing in for GitHub, GitLab and Gitea, and a real Gitea server.
pub mod bench;
pub mod cluster;
pub mod emulator;
pub mod fixtures;
pub mod gitea;
pub mod operator;
pub mod process;
