//! Simulators of APNs and FCM that behave like the real services (see
//! `shared/reference/push-protocols.md`), for tests and benchmarks, and the load generator.

pub mod apns;
pub mod bench;
pub mod fcm;
pub mod jws;
pub mod tls;

/// Waits for SIGINT or SIGTERM: a simulator in a container is PID 1, which the
/// kernel never stops on a signal it does not handle.
pub async fn until_stopped() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}
