//! Where a run's CPU goes, by component, from a profile of the run itself
//! (`--profile SECONDS`): once a quarter of the notifications have been
//! delivered, `perf record` samples the service's nodes, PostgreSQL's
//! backends of the run's database and its writers, and push-bench (the load
//! generator and the simulators) with their call stacks for the given seconds, while `/proc` and the simulators'
//! receipts say what each process spent and how many notifications were
//! delivered in the same window. After the run each sample goes to the
//! component of the innermost frame that names one (a TLS record written
//! for an APNs request is the provider request's; one written for
//! PostgreSQL is the store's), and a component's share of its process's
//! samples times the process's µs a notification in the window is its µs a
//! notification.
//!
//! Needs `perf` (Debian's `linux-perf`) and the right to sample these
//! processes; where either is missing the run says so and goes on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::service::{cpu_seconds, Service};

/// A process's components, each a name and the texts that mark its frames.
/// Checked in order for each frame, innermost first; the generic ones
/// (`runtime`, memory) only where no frame names another.
type Rules = &'static [(&'static str, &'static [&'static str])];

#[rustfmt::skip]
const SERVICE: Rules = &[
    ("JWT verification", &["push_jose", "p256::", "ecdsa::", "ring::", "ring_core", "sha2::", "auth::cache"]),
    ("JSON", &["serde_json", "serde_core::de", "serde::de"]),
    ("store", &["sqlx", "sqlite3", "push_service::store"]),
    ("Redis (replay cache, streams)", &["redis::"]),
    ("queue", &["push_service::dispatch::queue", "push_service::dispatch::redis_queue",
        "push_service::dispatch::born", "push_service::dispatch::wake"]),
    ("provider request", &["h2::", "push_service::providers", "push_service::outbound", "hyper::client",
        "hyper_util::client"]),
    ("outcome and retry", &["push_service::dispatch", "push_service::delivery"]),
    ("acceptance", &["push_service::notify", "push_service::auth", "push_service::limits",
        "push_service::api::notifications", "push_service::api::extract", "push_service::api::auth"]),
    ("HTTP", &["hyper::", "axum", "tower", "push_service::api", "httparse", "push_service::telemetry"]),
    ("logging", &["tracing"]),
];

#[rustfmt::skip]
const POSTGRES: Rules = &[
    ("WAL flush", &["XLogFlush", "issue_xlog_fsync", "XLogWrite"]),
    ("WAL records", &["XLogInsert"]),
    ("TLS", &["SSL_", "ssl3_", "tls1", "EVP_", "aesni", "gcm", "be_tls", "ossl"]),
    ("ON CONFLICT checks", &["ExecCheckIndexConstraints"]),
    ("index entries", &["btinsert", "index_insert", "ExecInsertIndexTuples"]),
    ("index lookups", &["index_getnext", "index_fetch", "IndexNext"]),
    ("heap rows", &["heap_insert", "heap_update", "heap_multi_insert", "RelationGetBufferForTuple"]),
    ("locks", &["LockAcquire", "LockRelease", "AcquireExecutorLocks", "LockRelationOid"]),
    ("executor start and end", &["ExecInit", "ExecutorStart", "ExecEndPlan", "ExecutorEnd", "InitPlan"]),
    ("bind and plan", &["exec_bind_message", "GetCachedPlan", "BuildCachedPlan", "planner", "exec_parse_message"]),
    ("executor, the rest", &["ExecModifyTable", "ExecScan", "ExecProcNode", "ExecutePlan", "ExecutorRun",
        "ExecutorFinish", "ExecUpdate", "ExecInsert"]),
    ("commit", &["CommitTransaction", "finish_xact", "StartTransaction", "RecordTransactionCommit"]),
];

#[rustfmt::skip]
const BENCH: Rules = &[
    ("simulators", &["loadtest::apns", "loadtest::fcm", "h2::server", "hyper::server", "h2::"]),
    ("load generator", &["reqwest", "hyper::client", "hyper_util::client", "loadtest::bench", "serde_json",
        "hyper::"]),
];

/// Generic components, for samples no frame of which names another.
#[rustfmt::skip]
const GENERIC: Rules = &[
    ("runtime (scheduling, parking, timers)", &["tokio::", "mio::", "parking_lot", "std::thread"]),
    ("memory", &["mi_", "malloc", "free", "realloc", "memcpy", "memmove"]),
];

/// Which rules a process's samples are read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Service,
    Postgres,
    Bench,
}

impl Role {
    fn rules(self) -> Rules {
        match self {
            Role::Service => SERVICE,
            Role::Postgres => POSTGRES,
            Role::Bench => BENCH,
        }
    }
}

/// The component of one sample's stack, innermost frame first.
pub fn component(role: Role, frames: &[&str]) -> &'static str {
    for rules in [role.rules(), GENERIC] {
        for frame in frames {
            for (name, marks) in rules {
                if marks.iter().any(|m| frame.contains(m)) {
                    return name;
                }
            }
        }
    }
    "other"
}

/// Samples by role and component, read from `perf script -F pid,ip,sym`:
/// a line per sample (`pid[/tid]`, right-aligned: it may start with spaces)
/// then its frames (a tab, `address symbol`), samples apart by a blank line.
pub fn count(
    script: &str,
    roles: &BTreeMap<u32, Role>,
) -> BTreeMap<Role, BTreeMap<&'static str, u64>> {
    let mut counts: BTreeMap<Role, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let mut role: Option<Role> = None;
    let mut frames: Vec<&str> = Vec::new();
    let mut flush = |role: &mut Option<Role>, frames: &mut Vec<&str>| {
        if let Some(r) = role.take() {
            *counts
                .entry(r)
                .or_default()
                .entry(component(r, frames))
                .or_default() += 1;
        }
        frames.clear();
    };
    for line in script.lines() {
        if line.trim().is_empty() {
            flush(&mut role, &mut frames);
        } else if !line.starts_with('\t') {
            flush(&mut role, &mut frames);
            role = line
                .split_whitespace()
                .find_map(|word| word.split('/').next()?.parse::<u32>().ok())
                .and_then(|pid| roles.get(&pid).copied());
        } else {
            let frame = line.trim();
            frames.push(frame.split_once(' ').map_or(frame, |(_, symbol)| symbol));
        }
    }
    flush(&mut role, &mut frames);
    counts
}

/// One process's components, in µs a notification delivered in the window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Process {
    pub process: Role,
    pub samples: u64,
    /// What the process spent in the window over the notifications delivered in it.
    pub us: f64,
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Component {
    pub component: &'static str,
    pub share: f64,
    pub us: f64,
}

/// What a run's profile found, or why there is none.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Profile {
    pub seconds: f64,
    /// Notifications delivered while `perf` sampled.
    pub delivered: usize,
    pub delivered_per_second: f64,
    pub processes: Vec<Process>,
}

/// The window a profile was recorded in, to be read after the run.
pub struct Window {
    file: PathBuf,
    roles: BTreeMap<u32, Role>,
    seconds: f64,
    delivered: usize,
    /// CPU seconds each role spent in the window.
    spent: BTreeMap<Role, f64>,
}

/// CPU seconds now of each role's processes. PostgreSQL's are read all
/// together, as `cpu::read` does: a backend that ends leaves its time to the
/// postmaster.
fn spent(roles: &BTreeMap<u32, Role>) -> BTreeMap<Role, f64> {
    let mut spent = BTreeMap::new();
    for (pid, role) in roles.iter().filter(|(_, r)| **r != Role::Postgres) {
        *spent.entry(*role).or_insert(0.0) += cpu_seconds(*pid);
    }
    if let Some(postgres) = super::cpu::read().postgres {
        spent.insert(Role::Postgres, postgres);
    }
    spent
}

/// The PostgreSQL processes that work for the run: the backends connected to
/// `database` and the server's own writers (WAL, checkpoints, dirty pages).
/// Not the short-lived ones (autovacuum workers): `perf` refuses a process
/// list holding one that is gone by the time it starts.
fn postgres_pids(database: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let works = |title: &str| {
        (!database.is_empty() && title.contains(database))
            || ["walwriter", "checkpointer", "background writer"]
                .iter()
                .any(|w| title.contains(w))
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|t| works(&String::from_utf8_lossy(&t)))
        })
        .collect()
}

/// The database's name in a PostgreSQL URL (`…/name?options`); empty for
/// SQLite, whose store is inside the service.
fn database_name(url: &str) -> &str {
    if !url.starts_with("postgres") {
        return "";
    }
    let path = url.split('?').next().unwrap_or("");
    path.rsplit_once('/').map_or("", |(_, name)| name)
}

/// Waits until `start_after` more notifications have been delivered, then
/// records `seconds` of samples into `out/profile.perf`. `Err` says why
/// there is no profile (no `perf`, no right to sample, the load too short).
pub async fn record(
    service: &Service,
    start_after: usize,
    seconds: f64,
    out: &Path,
) -> Result<Window, String> {
    let first = service.receipts();
    let waiting = Instant::now();
    while service.receipts() < first + start_after {
        if waiting.elapsed() > Duration::from_secs(300) {
            return Err("the load did not reach a quarter of its deliveries in 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut roles: BTreeMap<u32, Role> = service
        .pids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|pid| (*pid, Role::Service))
        .collect();
    roles.insert(std::process::id(), Role::Bench);
    let database = database_name(&service.database_url);
    roles.extend(
        postgres_pids(database)
            .into_iter()
            .map(|pid| (pid, Role::Postgres)),
    );
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let file = out.join("profile.perf");
    let pids: Vec<String> = roles.keys().map(u32::to_string).collect();
    let before = (spent(&roles), service.receipts(), Instant::now());
    let recorded = tokio::process::Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "499",
            "--call-graph",
            "dwarf,16384",
            "-p",
        ])
        .arg(pids.join(","))
        .arg("-o")
        .arg(&file)
        .args(["--", "sleep", &format!("{seconds}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("perf could not be started: {e}"))?;
    let after = (spent(&roles), service.receipts(), before.2.elapsed());
    if !recorded.status.success() || !file.exists() {
        return Err(format!(
            "perf record failed ({}): {}",
            recorded.status,
            String::from_utf8_lossy(&recorded.stderr).trim()
        ));
    }
    let spent = after
        .0
        .iter()
        .map(|(role, s)| (*role, s - before.0.get(role).copied().unwrap_or(*s)))
        .collect();
    Ok(Window {
        file,
        roles,
        seconds: after.2.as_secs_f64(),
        delivered: after.1.saturating_sub(before.1),
        spent,
    })
}

impl Window {
    /// Reads the samples (`perf script`, which unwinds the stacks: about ten
    /// seconds a second of samples on this machine) and removes the file.
    pub async fn read(self) -> Result<Profile, String> {
        let output = tokio::process::Command::new("perf")
            .args(["script", "-F", "pid,ip,sym", "-i"])
            .arg(&self.file)
            .output()
            .await
            .map_err(|e| format!("perf script: {e}"));
        let _ = std::fs::remove_file(&self.file);
        let output = output?;
        let script = String::from_utf8_lossy(&output.stdout);
        let counts = count(&script, &self.roles);
        if counts.is_empty() {
            return Err(format!(
                "perf recorded no samples of these processes ({})",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let n = self.delivered.max(1) as f64;
        let processes = counts
            .into_iter()
            .map(|(role, components)| {
                let samples: u64 = components.values().sum();
                let us = self.spent.get(&role).copied().unwrap_or(0.0) * 1e6 / n;
                let mut components: Vec<Component> = components
                    .into_iter()
                    .map(|(component, k)| {
                        let share = k as f64 / samples.max(1) as f64;
                        Component {
                            component,
                            share,
                            us: share * us,
                        }
                    })
                    .collect();
                components.sort_by(|a, b| b.share.total_cmp(&a.share));
                Process {
                    process: role,
                    samples,
                    us,
                    components,
                }
            })
            .collect();
        Ok(Profile {
            seconds: self.seconds,
            delivered: self.delivered,
            delivered_per_second: self.delivered as f64 / self.seconds.max(1e-9),
            processes,
        })
    }
}

impl Profile {
    /// A markdown table: a row per component of each process.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "\n#### Where a notification's CPU went ({:.1} s profiled, {} delivered in it, {:.0}/s)\n\n\
             | process (µs a notification) | component | share of its samples | µs |\n|---|---|---|---|\n",
            self.seconds, self.delivered, self.delivered_per_second
        );
        for p in &self.processes {
            for (i, c) in p.components.iter().enumerate() {
                let head = if i == 0 {
                    format!("{:?} ({:.0}, {} samples)", p.process, p.us, p.samples)
                } else {
                    String::new()
                };
                md.push_str(&format!(
                    "| {head} | {} | {:.1} % | {:.1} |\n",
                    c.component,
                    c.share * 100.0,
                    c.us
                ));
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_goes_to_the_innermost_frame_that_names_a_component() {
        #[rustfmt::skip]
        let cases: &[(Role, &[&str], &str)] = &[
            // TLS written for an APNs request: the provider request's.
            (Role::Service, &["aes_gcm_enc", "rustls::conn::ConnectionCommon::write",
                "<h2::proto::connection::Connection>::poll", "tokio::runtime::task::raw::poll"], "provider request"),
            // TLS written for PostgreSQL: the store's.
            (Role::Service, &["aes_gcm_enc", "rustls::conn::ConnectionCommon::write",
                "sqlx_postgres::connection::PgConnection::run", "push_service::store::group::GroupWriter::write"],
                "store"),
            // JSON inside the acceptance: JSON.
            (Role::Service, &["serde_json::de::Deserializer::parse_str",
                "push_service::notify::accept::Acceptor::accept", "hyper::proto::h1::dispatch"], "JSON"),
            (Role::Service, &["sha2::sha256::compress", "push_service::auth::cache::TokenCache::get"],
                "JWT verification"),
            (Role::Service, &["push_service::dispatch::attempt::Attempt::finish", "tokio::runtime::task::raw::poll"],
                "outcome and retry"),
            (Role::Service, &["httparse::parse_headers", "hyper::proto::h1::role::Server::parse"], "HTTP"),
            // A single-use token's `jti` kept in Redis: Redis, not the acceptance.
            (Role::Service, &["redis::aio::multiplexed_connection::Pipeline::send",
                "push_service::auth::replay::RedisReplay::remember", "push_service::notify::accept"],
                "Redis (replay cache, streams)"),
            // Nothing but the runtime: the runtime's.
            (Role::Service, &["syscall", "tokio::runtime::scheduler::multi_thread::worker::Context::park_internal"],
                "runtime (scheduling, parking, timers)"),
            (Role::Service, &["_mi_page_malloc_zero"], "memory"),
            (Role::Service, &["[unknown]"], "other"),
            (Role::Postgres, &["fdatasync", "issue_xlog_fsync", "XLogFlush", "RecordTransactionCommit",
                "CommitTransaction"], "WAL flush"),
            // A B-tree descent is an insert's or a lookup's, by who asked.
            (Role::Postgres, &["_bt_search", "_bt_doinsert", "btinsert", "ExecInsertIndexTuples", "ExecInsert"],
                "index entries"),
            (Role::Postgres, &["_bt_search", "_bt_first", "btgettuple", "index_getnext_tid", "IndexNext"],
                "index lookups"),
            (Role::Postgres, &["epoll_wait", "WaitEventSetWait", "secure_read", "pq_recvbuf"], "other"),
            (Role::Bench, &["h2::server::Connection::poll", "loadtest::apns::ApnsSimulator::serve"], "simulators"),
            (Role::Bench, &["reqwest::async_impl::client::Client::execute"], "load generator"),
        ];
        for (role, frames, expected) in cases {
            assert_eq!(component(*role, frames), *expected, "{role:?} {frames:?}");
        }
    }

    #[test]
    fn the_database_is_named_by_the_url_path() {
        for (url, name) in [
            (
                "postgres://postgres@127.0.0.1:5432/pushbench_1a2b",
                "pushbench_1a2b",
            ),
            ("postgresql://u@h/db?sslmode=disable", "db"),
            ("sqlite:///tmp/x/push.db?mode=rwc", ""),
        ] {
            assert_eq!(database_name(url), name, "{url}");
        }
    }

    #[test]
    fn perf_script_is_read_sample_by_sample_and_unknown_processes_left_out() {
        // As perf prints it: the process ids right-aligned, the frames after a tab.
        let script = [
            " 1200/1201 ",
            "\t  55aa serde_json::de::from_slice",
            "\t  55ab push_service::notify::accept",
            "",
            " 1200/1202 ",
            "\t  66aa tokio::runtime::park",
            "",
            "   77/77 ",
            "\t  10 XLogFlush",
            "",
            "  999/999 ",
            "\t  10 anything",
            "",
            "12000/12001 ",
            "\t  55aa h2::codec::framed_write",
        ]
        .join("\n");
        let roles = BTreeMap::from([
            (1200, Role::Service),
            (12000, Role::Service),
            (77, Role::Postgres),
        ]);
        let counts = count(&script, &roles);
        let service = &counts[&Role::Service];
        assert_eq!(service.get("JSON"), Some(&1));
        assert_eq!(service.get("provider request"), Some(&1));
        assert_eq!(
            service.get("runtime (scheduling, parking, timers)"),
            Some(&1)
        );
        assert_eq!(counts[&Role::Postgres].get("WAL flush"), Some(&1));
        assert_eq!(counts.len(), 2);
    }
}
