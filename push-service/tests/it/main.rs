//! Integration tests: the real server on port 0, on SQLite and on PostgreSQL + Redis.

mod actors;
mod fixtures;
mod helpers;

mod apps;
mod attestation;
mod auth_server;
mod batch;
mod connections;
mod credentials;
mod dashboards;
mod docs;
mod fanout;
mod inbox;
mod key_rotation;
mod layers;
mod lifecycle;
mod limits;
mod migrations;
mod notifiers;
mod notify;
mod operations;
mod ops;
mod outbound;
mod partitions;
mod pinning;
mod process;
mod provider_semantics;
mod providers;
mod registrations;
mod scale_out;
mod security;
mod signer;
mod store_contract;
mod tls;
mod token_reuse;
