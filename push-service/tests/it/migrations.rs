//! A fresh PostgreSQL database is made in one transaction from the schema
//! written out whole (`migrations/fresh/postgres.sql`, `store/postgres.rs`
//! `create_fresh`); an existing one is migrated step by step. Both must end
//! with the same schema and the same record of applied migrations, and nodes
//! starting together on a fresh database must not race.

use crate::helpers::{fresh_postgres_database, output_of, Backend};
use crate::partitions::migrate_up_to;

/// The schema as `pg_dump` prints it, with what differs between two
/// databases made on the same day by design left out: the comments naming
/// the dump and the date of the copy partition (`_before_YYYYMMDD`, made by
/// migration 10 for "tomorrow", which changes at midnight).
async fn schema(url: &str) -> String {
    let mut command = std::process::Command::new("pg_dump");
    command
        .arg("--schema-only")
        .arg("--no-owner")
        .arg(url)
        .stdin(std::process::Stdio::null());
    let output = output_of(command).await.expect("pg_dump is installed");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter(|line| !line.starts_with("--") && !line.starts_with('\\'))
        .map(|line| digits_after(&digits_after(line, "_before_"), "TO ('"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `line` with the digits that follow each `marker` replaced by `N`.
fn digits_after(line: &str, marker: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(marker) {
        let (head, tail) = rest.split_at(at + marker.len());
        out.push_str(head);
        out.push('N');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// What the migrator's table records: version, description, success, checksum.
async fn applied(url: &str) -> Vec<(i64, String, bool, Vec<u8>)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("postgres");
    sqlx::query_as(
        "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .expect("the migrator's table")
}

async fn migrate(url: &str) -> Result<(), String> {
    let store = push_service::store::connect(url, 2, true, None)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_fresh_database_made_at_once_equals_one_migrated_step_by_step() {
    let (at_once, step_by_step) = (
        fresh_postgres_database().await,
        fresh_postgres_database().await,
    );
    migrate(&at_once).await.expect("a fresh database");
    // The migrator alone, one migration after the other (the path an
    // existing database takes).
    migrate_up_to(Backend::Postgres, &step_by_step, i64::MAX).await;

    let made = schema(&at_once).await;
    assert!(
        made.contains("CREATE TABLE public.notifications") && made.contains("PARTITION BY RANGE"),
        "the fresh database has no partitioned notifications:\n{made}"
    );
    assert_eq!(made, schema(&step_by_step).await);
    let recorded = applied(&at_once).await;
    assert!(
        recorded.len() >= 11,
        "{} migrations recorded",
        recorded.len()
    );
    assert_eq!(recorded, applied(&step_by_step).await);

    // Started again on either, a node finds nothing to do; nothing changes.
    migrate(&at_once).await.expect("a second start");
    migrate(&step_by_step).await.expect("the migrated database");
    assert_eq!(schema(&at_once).await, made);
    assert_eq!(schema(&step_by_step).await, made);
}

#[tokio::test]
async fn nodes_starting_together_on_a_fresh_database_make_it_once() {
    let url = fresh_postgres_database().await;
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { migrate(&url).await })
        })
        .collect();
    for start in starts {
        start.await.expect("the start").expect("every node starts");
    }
    let recorded = applied(&url).await;
    let versions: Vec<i64> = recorded.iter().map(|r| r.0).collect();
    let mut unique = versions.clone();
    unique.dedup();
    assert_eq!(versions, unique);
    assert!(
        recorded.iter().all(|r| r.2),
        "a migration recorded as failed"
    );
}
