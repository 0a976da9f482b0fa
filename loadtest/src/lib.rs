//! Simulators of APNs and FCM that behave like the real services (see
//! `shared/reference/push-protocols.md`), for tests and benchmarks, and the load generator.

pub mod apns;
pub mod bench;
pub mod fcm;
pub mod jws;
pub mod tls;
