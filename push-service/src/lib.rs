//! push-service: a self-hostable push notification service.
//!
//! The binary is thin; [`run`] starts the whole service on a listener, which is
//! what tests call with a `127.0.0.1:0` listener.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod delivery;
pub mod dispatch;
pub mod egress;
pub mod ids;
pub mod inbox;
pub mod keys;
pub mod limits;
pub mod maintenance;
pub mod net;
pub mod notification;
pub mod notify;
pub mod outbound;
pub mod providers;
pub mod registrations;
pub mod secret;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod tokens;

pub use api::server::{run, serve};
pub use config::Config;

/// How the shared Redis connection comes back after Redis restarts. redis-rs'
/// defaults wait 1 s, then about 100 s, between reconnection attempts (its factor
/// multiplies each delay), and while it waits every command waits: requests hung
/// for two minutes after a Redis restart in the fault harness. Here: an attempt
/// times out after 2 s, at most two retries 1 s apart, then commands fail (503)
/// and the next one starts a new attempt.
pub fn redis_manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_factor(2)
        .set_max_delay(1000)
        .set_number_of_retries(2)
        .set_connection_timeout(std::time::Duration::from_secs(2))
        .set_response_timeout(std::time::Duration::from_secs(5))
}

/// Timeouts for Redis connections made outside the manager (the queue's blocking
/// reads, the readiness probe): a dead server is noticed, never waited on.
pub fn redis_connection_config(response: std::time::Duration) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(std::time::Duration::from_secs(2))
        .set_response_timeout(response)
}
