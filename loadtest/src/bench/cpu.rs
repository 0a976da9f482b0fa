//! CPU time on this machine by who spent it — the PostgreSQL server's
//! processes, the Redis server's, this process (the load generator and the
//! simulators) and the machine as a whole — read from `/proc` before and after
//! a run. Everything shares the same cores, so a notification's cost is what
//! all of them spent on it, not the service's time alone.

/// User + system seconds at one moment; `None` where nothing was found (a
/// server on another machine, or not Linux).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuTimes {
    /// Every `postgres` process, with what the finished ones left to the
    /// process that reaped them (a pooled connection's backend exits when
    /// the node stops; the postmaster keeps its time).
    pub postgres: Option<f64>,
    /// Every `redis-server` process.
    pub redis: Option<f64>,
    /// This process: the load generator and the simulators (not its children:
    /// the service's nodes are counted on their own).
    pub bench: Option<f64>,
    /// All CPUs, busy (everything but idle and waiting for I/O).
    pub machine: Option<f64>,
}

/// Clock ticks a second in `/proc` (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// Reads the times now.
pub fn read() -> CpuTimes {
    let mut postgres = None;
    let mut redis = None;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(times) = process_times(&stat) else {
                continue;
            };
            let slot = match times.command.as_str() {
                "postgres" => &mut postgres,
                "redis-server" => &mut redis,
                _ => continue,
            };
            *slot = Some(slot.unwrap_or(0.0) + times.own + times.reaped);
        }
    }
    CpuTimes {
        postgres,
        redis,
        bench: std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| process_times(&s))
            .map(|t| t.own),
        machine: std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| busy_seconds(&s)),
    }
}

/// One process's line of `/proc/<pid>/stat`, read.
#[derive(Debug, PartialEq)]
pub struct ProcessTimes {
    pub command: String,
    /// Its own user + system seconds.
    pub own: f64,
    /// The user + system seconds of the children it waited for.
    pub reaped: f64,
}

/// Reads a `/proc/<pid>/stat` line: the command sits in parentheses and may
/// itself hold spaces and parentheses, so the fields are counted from the
/// last `)`.
pub fn process_times(stat: &str) -> Option<ProcessTimes> {
    let open = stat.find('(')?;
    let (head, rest) = stat.rsplit_once(')')?;
    let command = head.get(open + 1..)?.to_owned();
    let fields: Vec<f64> = rest
        .split_whitespace()
        .skip(1) // the state letter
        .take(14)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // After the state: ppid pgrp session tty tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime.
    let at = |i: usize| fields.get(i - 1).copied();
    Some(ProcessTimes {
        command,
        own: (at(11)? + at(12)?) / TICKS,
        reaped: (at(13)? + at(14)?) / TICKS,
    })
}

/// Busy seconds of all CPUs from the `cpu` line of `/proc/stat`: every
/// column but idle (4th) and iowait (5th); guest time is already in user.
fn busy_seconds(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let columns: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|c| c.parse().unwrap_or(0.0))
        .collect();
    if columns.len() < 5 {
        return None;
    }
    let busy: f64 = columns
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, c)| c)
        .sum();
    Some(busy / TICKS)
}

/// Microseconds per notification between two readings.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuPer {
    pub postgres_us: Option<f64>,
    pub redis_us: Option<f64>,
    pub bench_us: Option<f64>,
    pub machine_us: Option<f64>,
}

impl CpuTimes {
    /// What was spent between `self` and `after`, per notification.
    pub fn per(&self, after: &CpuTimes, notifications: usize) -> CpuPer {
        let n = notifications.max(1) as f64;
        let us = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (b - a).max(0.0) * 1e6 / n);
        CpuPer {
            postgres_us: us(self.postgres, after.postgres),
            redis_us: us(self.redis, after.redis),
            bench_us: us(self.bench, after.bench),
            machine_us: us(self.machine, after.machine),
        }
    }
}

impl CpuPer {
    /// `PostgreSQL 310 µs · Redis 4 µs · push-bench 150 µs · machine busy 700 µs`.
    pub fn line(&self) -> String {
        let show = |v: Option<f64>, what: &str| match v {
            Some(v) => format!("{what} {v:.0} µs"),
            None => format!("{what} n/a"),
        };
        format!(
            "{} · {} · {} · {}",
            show(self.postgres_us, "PostgreSQL"),
            show(self.redis_us, "Redis"),
            show(self.bench_us, "push-bench (load and simulators)"),
            show(self.machine_us, "the machine, busy"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_from_the_last_parenthesis() {
        // (line, command, own seconds, reaped seconds)
        let cases = [
            (
                "812 (postgres) S 1 812 812 0 -1 4194560 900 20 0 0 150 50 300 100 20 0 1 0 99 1 1",
                "postgres",
                2.0,
                4.0,
            ),
            (
                "77 (tokio-rt (x) y) R 5 77 77 0 -1 0 0 0 0 0 7 3 0 0 20 0 9",
                "tokio-rt (x) y",
                0.1,
                0.0,
            ),
        ];
        for (line, command, own, reaped) in cases {
            let t = process_times(line).expect(line);
            assert_eq!(t.command, command);
            assert!((t.own - own).abs() < 1e-9, "{line}: {}", t.own);
            assert!((t.reaped - reaped).abs() < 1e-9, "{line}: {}", t.reaped);
        }
        assert_eq!(process_times("12 (short) S 1 2"), None, "too few fields");
        assert_eq!(process_times("no parenthesis"), None);
    }

    #[test]
    fn busy_time_leaves_out_idle_and_io_wait() {
        let stat = "cpu  100 5 40 9000 300 2 3 0 0 0\ncpu0 50 2 20 4500 150 1 1 0 0 0\n";
        assert_eq!(busy_seconds(stat), Some(1.5));
        assert_eq!(busy_seconds("intr 1 2 3\n"), None);
    }

    #[test]
    fn costs_are_divided_per_notification() {
        let before = CpuTimes {
            postgres: Some(10.0),
            redis: None,
            bench: Some(1.0),
            machine: Some(100.0),
        };
        let after = CpuTimes {
            postgres: Some(13.0),
            redis: Some(5.0),
            bench: Some(2.0),
            machine: Some(110.0),
        };
        let per = before.per(&after, 10_000);
        assert_eq!(per.postgres_us, Some(300.0));
        assert_eq!(per.redis_us, None, "unknown before: unknown");
        assert_eq!(per.bench_us, Some(100.0));
        assert_eq!(per.machine_us, Some(1000.0));
        assert!(per.line().contains("PostgreSQL 300 µs"), "{}", per.line());
        assert!(per.line().contains("Redis n/a"), "{}", per.line());
    }
}
