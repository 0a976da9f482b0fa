//! The load generator behind `push-bench`: a service under test with the simulators
//! behind it, set up through the real API, driven by scenarios, measured and reported.

pub mod chaos;
pub mod cost;
pub mod cpu;
pub mod profile;
pub mod report;
pub mod scenarios;
pub mod service;

use std::time::Duration;

/// Latency percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut sample: Vec<Duration>) -> Self {
        sample.sort();
        let at = |p: f64| {
            if sample.is_empty() {
                0.0
            } else {
                sample[((sample.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
            }
        };
        Latency {
            count: sample.len(),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: sample
                .last()
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0),
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// A one-line progress indicator on stderr.
pub fn progress(label: &str, done: usize, total: usize) {
    use std::io::Write;
    let width = 30;
    let filled = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    eprint!(
        "\r{label:>12} [{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    if done >= total {
        eprintln!();
    }
    let _ = std::io::stderr().flush();
}
