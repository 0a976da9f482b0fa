//! What a run cost the shared infrastructure: PostgreSQL transactions and
//! statements, Redis commands — counters read before and after, divided by the
//! notifications delivered.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::service::psql;

/// Counters at one moment; `None` where the source is not there (SQLite has no
/// server; `pg_stat_statements` needs `shared_preload_libraries`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counters {
    pub pg_transactions: Option<i64>,
    pub pg_statements: Option<i64>,
    pub redis_commands: Option<i64>,
    /// Bytes the database takes (PostgreSQL: the database; SQLite: its pages).
    #[serde(default)]
    pub store_bytes: Option<i64>,
}

/// Per delivered notification.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Cost {
    pub pg_transactions: Option<f64>,
    pub pg_statements: Option<f64>,
    pub redis_commands: Option<f64>,
    /// Bytes the store grew by (× 1,000,000: bytes per million notifications).
    pub store_bytes: Option<f64>,
}

/// Reads the counters of the database at `database_url` (PostgreSQL only) and of
/// the Redis server at `redis_url` (empty: none).
pub fn read(database_url: &str, redis_url: &str) -> Counters {
    let postgres = database_url.starts_with("postgres");
    let pg = |sql: &str| -> Option<i64> {
        psql(database_url, sql)
            .ok()
            .and_then(|out| out.trim().parse().ok())
    };
    Counters {
        pg_transactions: postgres
            .then(|| {
                pg("SELECT xact_commit + xact_rollback FROM pg_stat_database \
                    WHERE datname = current_database()")
            })
            .flatten(),
        pg_statements: postgres
            .then(|| {
                pg(
                    "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements \
                    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
            })
            .flatten(),
        redis_commands: (!redis_url.is_empty())
            .then(|| redis_commands(redis_url).ok())
            .flatten(),
        store_bytes: if postgres {
            pg("SELECT pg_database_size(current_database())")
        } else {
            sqlite_bytes(database_url)
        },
    }
}

/// Pages × page size of the SQLite file of `url` (WAL content included), by
/// the `sqlite3` tool.
fn sqlite_bytes(url: &str) -> Option<i64> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    let output = std::process::Command::new("sqlite3")
        .arg(path)
        .arg("PRAGMA page_count; PRAGMA page_size;")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text.lines().filter_map(|l| l.trim().parse::<i64>().ok());
    Some(numbers.next()? * numbers.next()?)
}

/// Makes `pg_stat_statements` readable in the database when the server loads it.
pub fn prepare(database_url: &str) {
    if database_url.starts_with("postgres") {
        let _ = psql(
            database_url,
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        );
    }
}

/// PostgreSQL publishes a backend's transaction counters when the backend
/// runs again or exits, not while it sits idle in a pool (PostgreSQL 15 on
/// this machine held a connection's 200 transactions for as long as it stayed
/// idle, 30 s in the test): the counters are read with no connection of the
/// service open. Waits (at most 10 s) until only the reader's own connections
/// are left on the database.
pub async fn quiesce(database_url: &str) {
    if !database_url.starts_with("postgres") {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let others = psql(
            database_url,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .ok()
        .and_then(|out| out.trim().parse::<i64>().ok());
        if others == Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("connections to the database still open after 10 s: the counters may be short");
}

impl Counters {
    /// What happened between `self` and `after`, per notification. The reads
    /// themselves (one psql transaction each, one `INFO`) are taken out.
    pub fn per(&self, after: &Counters, notifications: usize) -> Cost {
        let n = notifications.max(1) as f64;
        let delta = |a: Option<i64>, b: Option<i64>, own: i64| {
            a.zip(b).map(|(a, b)| ((b - a - own).max(0)) as f64 / n)
        };
        Cost {
            pg_transactions: delta(self.pg_transactions, after.pg_transactions, 2),
            pg_statements: delta(self.pg_statements, after.pg_statements, 2),
            redis_commands: delta(self.redis_commands, after.redis_commands, 1),
            store_bytes: self
                .store_bytes
                .zip(after.store_bytes)
                .map(|(a, b)| (b - a) as f64 / n),
        }
    }
}

impl Cost {
    /// `0.21 transactions · 1.0 statements · 2.9 Redis commands` (what is known).
    pub fn line(&self) -> String {
        let show = |v: Option<f64>, what: &str| match v {
            Some(v) => format!("{v:.2} {what}"),
            None => format!("n/a {what}"),
        };
        format!(
            "{} · {} · {} · {}",
            show(self.pg_transactions, "PostgreSQL transactions"),
            show(
                self.pg_statements,
                "statements (pg_stat_statements; n/a when not preloaded)"
            ),
            show(self.redis_commands, "Redis commands"),
            match self.store_bytes {
                Some(b) => format!("{:.0} MB stored per million", b),
                None => "n/a MB stored per million".to_owned(),
            }
        )
    }
}

/// Total calls over `INFO commandstats` of the Redis server at `url`.
fn redis_commands(url: &str) -> anyhow::Result<i64> {
    let parsed = url::Url::parse(url)?;
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    let port = parsed.port().unwrap_or(6379);
    let mut stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    let length: usize = header
        .trim()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected INFO answer: {header}"))?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(sum_calls(&String::from_utf8_lossy(&body)))
}

/// The sum of `calls=` over every `cmdstat_` line of an `INFO commandstats`.
fn sum_calls(info: &str) -> i64 {
    info.lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter_map(|l| {
            l.split_once("calls=")
                .and_then(|(_, rest)| rest.split(',').next())
                .and_then(|n| n.parse::<i64>().ok())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_are_summed_and_costs_divided() {
        let info = "# Commandstats\r\ncmdstat_set:calls=10,usec=5,usec_per_call=0.5\r\n\
                    cmdstat_xadd:calls=32,usec=9\r\nother:calls=99\r\n";
        assert_eq!(sum_calls(info), 42);
        let before = Counters {
            pg_transactions: Some(100),
            pg_statements: None,
            redis_commands: Some(1000),
            store_bytes: Some(1_000_000),
        };
        let after = Counters {
            pg_transactions: Some(302),
            pg_statements: Some(7),
            redis_commands: Some(1301),
            store_bytes: Some(1_050_000),
        };
        let cost = before.per(&after, 100);
        assert_eq!(cost.pg_transactions, Some(2.0));
        assert_eq!(cost.pg_statements, None, "unknown before: unknown");
        assert_eq!(cost.redis_commands, Some(3.0));
        assert_eq!(cost.store_bytes, Some(500.0), "bytes per notification");
        assert!(
            cost.line().contains("500 MB stored per million"),
            "{}",
            cost.line()
        );
    }
}
