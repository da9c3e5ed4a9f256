//! The end-to-end suite: one test binary, so that one local control plane serves the whole run.
mod admission;
mod argocd_confined;
mod chart;
mod cluster_harness;
mod crds_schema;
mod emulator;
mod forge_clients;
mod fork_approval;
mod leader_election;
mod operator_basics;
mod previews;
mod repository_previews;
mod repository_sync;
mod support;
mod tenant_confinement;
mod tenant_outbound;
mod webhook_attacks;
