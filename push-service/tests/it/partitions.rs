//! Partitions and the upgrade to them: on PostgreSQL notifications,
//! deliveries and chunks are partitioned by day, made a week ahead and dropped
//! whole past retention while notifications flow; a database from before (on
//! either backend) keeps its queued deliveries and idempotency keys through
//! the migration.

use std::time::Duration;

use base64::Engine;
use push_service::ids::{new_id, now_millis};
use push_service::store::Store;
use reqwest::StatusCode;
use sdk_client::NewRegistration;
use serde_json::json;
use sqlx::Connection;

use crate::fanout::count;
use crate::helpers::{fresh_postgres_database, spawn, Backend, Options, TestApp};
use crate::lifecycle::send_paced;
use crate::notify::{send, wait_status};
use crate::providers::{apns_token, register, rig_with, Rig};

const DAY: i64 = 86_400_000;

fn master_key_line() -> String {
    let key: [u8; 32] = rand::random();
    format!(
        "master_key = {:?}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// Another node on `database_url` with the rig's simulators and `extra` lines.
async fn node_on(rig: &Rig, database_url: &str, extra: &str) -> TestApp {
    let mut options = Options::new(rig.app.backend);
    options.join = Some((
        database_url.to_owned(),
        format!("pushtest:{}:", rand::random::<u64>()),
    ));
    options.extra = format!("{}{extra}", rig.provider_lines());
    spawn(options).await
}

/// The partitions of `table`, by name.
async fn partitions(url: &str, table: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("postgres");
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::TEXT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::regclass",
    )
    .bind(table)
    .fetch_all(&mut conn)
    .await
    .expect("partitions");
    names.sort();
    names
}

fn day_name(millis: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(millis / 1000)
        .expect("time")
        .date();
    format!(
        "{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// `count` notifications created at `at` (expired a day later), each with a
/// delivery row.
async fn seed(store: &dyn Store, app_id: &str, at: i64, count: usize) {
    for _ in 0..count {
        let row = push_service::store::NotificationRow {
            id: push_service::ids::new_timed_id("ntf", at),
            app_id: app_id.into(),
            notifier_id: "n".into(),
            idempotency_key: Some(new_id("idem")),
            request_hash: "h".into(),
            targets: r#"{"registrations":["r"]}"#.into(),
            content: "{}".into(),
            expires_at: at + DAY,
            state: "dispatching".into(),
            created_at: at,
            response: None,
            expand_cursor: None,
            updated_at: at,
        };
        store
            .insert_notification(&row, &[new_id("reg")], at, None)
            .await
            .expect("seeded");
    }
}

/// A database made 45 days ago (everything before then in one partition) and
/// days of notifications 40 and 35 days old in their own partitions, 15 days
/// old as well: a node with 30 days of retention drops the old days whole,
/// the copy too, while 60 notifications flow and are delivered; the 15-day-old
/// ones stay, and the week ahead exists for all three tables.
#[tokio::test]
async fn partitions_are_made_ahead_and_dropped_past_retention_while_notifications_flow() {
    let key = master_key_line();
    // The first node keeps everything (retention off): it only makes days ahead.
    // Two nodes: each keeps its own APNs provider token (`cluster`).
    let rig = rig_with(
        Backend::Postgres,
        3599,
        &format!("{key}notification_retention_days = 0\n"),
        true,
    )
    .await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let device = register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await;
    let url = rig.app.database_url.clone();
    let store = push_service::store::connect(&url, 2, true, None)
        .await
        .expect("store");
    let now = now_millis();
    let day_start = |t: i64| t.div_euclid(DAY) * DAY;

    // As if the database had been partitioned 45 days ago.
    let copy_end = day_start(now - 45 * DAY);
    {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("postgres");
        for table in ["notifications", "deliveries", "fanout_chunks"] {
            for name in partitions(&url, table).await {
                if name.contains("_before_") {
                    sqlx::query(&format!("DROP TABLE \"{name}\""))
                        .execute(&mut conn)
                        .await
                        .expect("drop the copy");
                }
            }
            sqlx::query(&format!(
                "CREATE TABLE \"{table}_before_{}\" PARTITION OF {table} \
                 FOR VALUES FROM (MINVALUE) TO ({copy_end})",
                day_name(copy_end)
            ))
            .execute(&mut conn)
            .await
            .expect("an older copy");
        }
    }
    // The days the sweep made back then, and today's week.
    for then in [now - 40 * DAY, now - 20 * DAY, now] {
        store
            .maintain_partitions(then, None)
            .await
            .expect("partitions");
    }
    for (age, n) in [(44, 20), (40, 30), (35, 30), (15, 25)] {
        seed(store.as_ref(), &app_id, now - age * DAY, n).await;
    }
    let rows_older_than = |days: i64| {
        format!(
            "SELECT COUNT(*) FROM notifications WHERE app_id = $1 AND created_at < {}",
            now - days * DAY
        )
    };
    assert_eq!(count(&url, &rows_older_than(30), &app_id).await, 80);
    let old_day = format!("notifications_d{}", day_name(now - 40 * DAY));
    assert!(partitions(&url, "notifications").await.contains(&old_day));

    // A node with 30 days of retention joins; notifications flow through it.
    let node = node_on(
        &rig,
        &url,
        &format!("{key}notification_retention_days = 30\nretention_batch = 100\n"),
    )
    .await;
    send_paced(&node.api, &notifier, &device, 60).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while partitions(&url, "notifications").await.contains(&old_day) {
        assert!(std::time::Instant::now() < deadline, "the old day stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rig.apns.receipt_count(), 60);

    let cutoff = now - 30 * DAY;
    for table in ["notifications", "deliveries", "fanout_chunks"] {
        let names = partitions(&url, table).await;
        // Nothing left whose day ended before the cutoff, the copy included.
        for name in &names {
            let suffix = name.rsplit('_').next().unwrap_or_default();
            if let Some(day) = suffix.strip_prefix('d') {
                assert!(day >= day_name(cutoff).as_str(), "{name} stayed: {names:?}");
            }
            assert!(!name.contains("_before_"), "{name} stayed");
        }
        // The days of the 15-day-old ones, and today to a week ahead.
        for i in (-20..=-13).chain(0..=7) {
            let day = format!("{table}_d{}", day_name(now + i * DAY));
            assert!(names.contains(&day), "{day} missing: {names:?}");
        }
        assert!(names.contains(&format!("{table}_default")));
    }
    assert_eq!(count(&url, &rows_older_than(30), &app_id).await, 0);
    let kept = "SELECT COUNT(*) FROM notifications WHERE app_id = $1";
    assert_eq!(
        count(&url, kept, &app_id).await,
        25 + 60,
        "15-day-old and new"
    );
    let orphans = "SELECT COUNT(*) FROM deliveries d WHERE NOT EXISTS \
                   (SELECT 1 FROM notifications n WHERE n.id = d.notification_id) AND $1 = $1";
    assert_eq!(count(&url, orphans, "").await, 0);
    let stray = "SELECT COUNT(*) FROM notifications_default WHERE $1 = $1";
    assert_eq!(
        count(&url, stray, "").await,
        0,
        "nothing went to the default"
    );
}

/// A migrator of the migrations up to `version` only: a database as the
/// builds before partitioning left it.
pub(crate) async fn migrate_up_to(backend: Backend, url: &str, version: i64) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        });
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.expect("migrations");
    let older: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect();
    migrator.migrations = older.into();
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
                .await
                .expect("sqlite");
            migrator.run(&mut conn).await.expect("older migrations");
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("postgres");
            migrator.run(&mut conn).await.expect("older migrations");
        }
    }
}

/// Runs `sql` (statements separated by `;`) on `url`.
async fn execute(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("postgres");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
    }
}

const COPIED: [&str; 6] = [
    "apps",
    "credentials",
    "notifiers",
    "registrations",
    "aliases",
    "app_limits",
];

/// The tenant, its credentials and devices of `from` (a current database)
/// copied into `to` (one at migration 9).
async fn copy_tenants(backend: Backend, from: &str, to: &str) {
    match backend {
        Backend::Sqlite => {
            let path = from.trim_start_matches("sqlite://");
            let mut sql = format!("ATTACH DATABASE '{path}' AS src;");
            for table in COPIED {
                sql.push_str(&format!(
                    "INSERT INTO main.{table} SELECT * FROM src.{table};"
                ));
            }
            execute(to, &sql).await;
        }
        Backend::Postgres => {
            let mut dump = std::process::Command::new("pg_dump");
            dump.args(["--data-only", "--no-owner", "--dbname", from]);
            for table in COPIED {
                dump.args(["--table", table]);
            }
            let out = crate::helpers::output_of(dump).await.expect("pg_dump runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut load = std::process::Command::new("psql")
                .args(["--quiet", "-v", "ON_ERROR_STOP=1", "--dbname", to])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("psql runs");
            use std::io::Write;
            load.stdin
                .take()
                .expect("stdin")
                .write_all(&out.stdout)
                .expect("load");
            assert!(load.wait().expect("psql").success());
        }
    }
}

/// A notification accepted with an idempotency key by a build before
/// partitioning (its id without a time in it), whose delivery is still queued,
/// survives the migration: the upgraded node delivers it, a retry with its key
/// gets the stored answer, and another request with the key is refused.
async fn an_upgrade_keeps_queued_deliveries_and_keys(backend: Backend) {
    let key = master_key_line();
    let rig = rig_with(backend, 3599, &key, true).await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let device = register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await;
    let body = json!({"targets": {"registrations": [device]},
                      "notification": {"title": "before the upgrade"}, "ttl_seconds": 3600});
    let path = format!("/v1/apps/{app_id}/notifications");
    let post = |api: &crate::helpers::Api, body: serde_json::Value| {
        let request = api
            .client
            .post(api.url(&path))
            .bearer_auth(notifier.jwt("notify"))
            .header("idempotency-key", "upgrade-1")
            .json(&body)
            .send();
        async move { crate::helpers::read(request.await.expect("sent")).await }
    };
    let (status, first) = post(&rig.app.api, body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let current_id = first["id"].as_str().expect("id").to_owned();
    wait_status(&rig.app.api, &notifier, &current_id, |s| {
        s["counts"]["sent"] == 1
    })
    .await;

    // The old database: migrations up to 9, the same tenant, and that
    // notification as the old build stored it, its delivery queued and due.
    let dir = tempfile::tempdir().expect("tempdir");
    let old_url = match backend {
        Backend::Postgres => fresh_postgres_database().await,
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("push.db").display()),
    };
    migrate_up_to(backend, &old_url, 9).await;
    copy_tenants(backend, &rig.app.database_url, &old_url).await;
    let current = push_service::store::connect(&rig.app.database_url, 2, true, None)
        .await
        .expect("store");
    let row = current
        .get_notification(&current_id)
        .await
        .expect("read")
        .expect("stored");
    let legacy_id = new_id("ntf");
    let now = now_millis();
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    execute(
        &old_url,
        &format!(
            "INSERT INTO notifications (id, app_id, notifier_id, idempotency_key, request_hash, \
             targets, content, expires_at, state, created_at, response, updated_at) VALUES \
             ({}, {}, {}, 'upgrade-1', {}, {}, {}, {}, 'dispatching', {}, {}, {});
             INSERT INTO deliveries (notification_id, registration_id, state, attempts, \
             next_attempt_at, updated_at) VALUES ({}, {}, 'queued', 0, {}, {});",
            quote(&legacy_id),
            quote(&row.app_id),
            quote(&row.notifier_id),
            quote(&row.request_hash),
            quote(&row.targets),
            quote(&row.content),
            now + 3_600_000,
            now - 60_000,
            quote(
                &row.response
                    .clone()
                    .unwrap_or_default()
                    .replace(&current_id, &legacy_id)
            ),
            now - 60_000,
            quote(&legacy_id),
            quote(&device),
            now - 1_000,
            now - 60_000,
        ),
    )
    .await;

    // The new build on it: migrates, then the sweep finds the queued delivery.
    let node = node_on(&rig, &old_url, &key).await;
    let status = wait_status(&node.api, &notifier, &legacy_id, |s| {
        s["counts"]["sent"] == 1
    })
    .await;
    assert_eq!(status["counts"]["sent"], 1, "{status}");
    assert_eq!(
        rig.apns.receipt_count(),
        2,
        "the copy was delivered once more"
    );
    let (status, again) = post(&node.api, body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["id"], json!(legacy_id), "the stored answer");
    let (status, problem) = post(
        &node.api,
        json!({"targets": {"registrations": [device]}, "notification": {"title": "other"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(
        problem["type"],
        json!("urn:push-service:problem:idempotency-key-reused")
    );
    // New notifications on the upgraded database get ids with their time.
    let fresh = send(
        &node.api,
        &notifier,
        json!({"targets": {"registrations": [device]}, "notification": {"title": "after"}}),
    )
    .await;
    let fresh_id = fresh["id"].as_str().expect("id");
    assert!(
        push_service::ids::created_of(fresh_id).is_some(),
        "{fresh_id}"
    );
    wait_status(&node.api, &notifier, fresh_id, |s| s["counts"]["sent"] == 1).await;
}

#[tokio::test]
async fn upgrade_keeps_queued_deliveries_sqlite() {
    an_upgrade_keeps_queued_deliveries_and_keys(Backend::Sqlite).await;
}

#[tokio::test]
async fn upgrade_keeps_queued_deliveries_postgres() {
    an_upgrade_keeps_queued_deliveries_and_keys(Backend::Postgres).await;
}
