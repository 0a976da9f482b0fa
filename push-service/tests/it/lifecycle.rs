//! Data lifecycle: retention deletes what is past its keeping time in bounded
//! batches (and nothing a device may still get), while notifications flow; the
//! master key rotates without a node losing its credentials.

use std::time::Duration;

use push_service::delivery::ProviderKind;
use push_service::ids::{new_id, now_millis};
use push_service::store::{App, AuditEntry, NotificationRow, Store};
use sdk_client::NewRegistration;
use serde_json::json;

use crate::actors::TestNotifier;
use crate::fanout::count;
use crate::helpers::{spawn, Api, Backend, Options, TestApp};
use crate::notify::{send, wait_status};
use crate::providers::{apns_token, register, rig};
use crate::store_contract::registration;

const DAY: i64 = 86_400_000;

fn notification(app_id: &str, created_at: i64, expires_at: i64) -> NotificationRow {
    NotificationRow {
        id: new_id("ntf"),
        app_id: app_id.into(),
        notifier_id: "n".into(),
        idempotency_key: Some(new_id("idem")),
        request_hash: "h".into(),
        targets: r#"{"all":true}"#.into(),
        content: "{}".into(),
        expires_at,
        state: "done".into(),
        created_at,
        response: None,
        expand_cursor: None,
        updated_at: created_at,
    }
}

/// `count` notifications created `age` before `now` and expired a day later, each with
/// one delivery row; returns their ids.
async fn seed_old(
    store: &dyn Store,
    app_id: &str,
    now: i64,
    count: usize,
    age: i64,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let row = notification(app_id, now - age, now - age + DAY);
        store
            .insert_notification(&row, &[new_id("reg")], now - age, None)
            .await
            .expect("old notification");
        ids.push(row.id);
    }
    ids
}

async fn quiet_node(backend: Backend) -> TestApp {
    let mut options = Options::new(backend);
    // This node's own sweep stays out of the way: the test calls the store.
    options.extra = "notification_retention_days = 0\naudit_retention_days = 0\n".into();
    spawn(options).await
}

/// Batches delete at most their limit, oldest first; a notification whose TTL
/// has not ended stays however old it is, and one past its TTL stays until
/// its keeping time ends; deliveries and fan-out chunks go with their
/// notification; expired direct events and old audit entries go in batches too.
async fn batches_are_bounded_and_spare_what_may_still_be_delivered(app: TestApp) {
    let store = push_service::store::connect(&app.database_url, 2, true, None)
        .await
        .expect("store");
    let now = now_millis();
    let a = App {
        id: new_id("app"),
        name: "lifecycle".into(),
        created_at: now,
    };
    store.create_app(&a).await.expect("app");
    let old = seed_old(store.as_ref(), &a.id, now, 250, 40 * DAY).await;
    // Old, but its TTL (set by hand past the 28-day maximum) has not ended.
    let alive = notification(&a.id, now - 40 * DAY, now + DAY);
    store
        .insert_notification(&alive, &[], now, None)
        .await
        .expect("alive");
    // Past its TTL but young.
    let young = notification(&a.id, now - DAY, now - 1000);
    store
        .insert_notification(&young, &[], now, None)
        .await
        .expect("young");
    // An old fan-out with chunks.
    let mut fanout = notification(&a.id, now - 35 * DAY, now - 34 * DAY);
    fanout.state = "expanding".into();
    store
        .insert_notification(&fanout, &[], now, None)
        .await
        .expect("fan-out");
    for _ in 0..3 {
        let r = registration(
            &a.id,
            ProviderKind::Fcm,
            Some(&new_id("tok")),
            &new_id("key"),
        );
        store.create_registration(&r).await.expect("registration");
    }
    let chunks = store
        .expand_page(&fanout, None, 10, 2, now)
        .await
        .expect("chunks");
    assert_eq!(chunks.len(), 2);
    let url = &app.database_url;
    let chunk_rows = "SELECT COUNT(*) FROM fanout_chunks WHERE notification_id = $1";
    assert_eq!(count(url, chunk_rows, &fanout.id).await, 2);

    let before = now - 30 * DAY;
    let stats = store.retention_stats(before, now).await.expect("stats");
    assert_eq!(stats.oldest_created_at, Some(now - 40 * DAY));
    assert_eq!(stats.oldest_due, Some((now - 40 * DAY, now - 39 * DAY)));
    let mut batches = Vec::new();
    loop {
        let deleted = store
            .delete_old_notifications(before, now, 100)
            .await
            .expect("batch");
        batches.push(deleted);
        if deleted == 0 {
            break;
        }
    }
    assert_eq!(
        batches,
        vec![100, 100, 51, 0],
        "250 old ones and the fan-out"
    );
    for id in old.iter().step_by(25).chain([&fanout.id]) {
        assert!(
            store.get_notification(id).await.expect("get").is_none(),
            "{id}"
        );
    }
    for kept in [&alive.id, &young.id] {
        assert!(
            store.get_notification(kept).await.expect("get").is_some(),
            "{kept}"
        );
    }
    let rows =
        "SELECT COUNT(*) FROM deliveries d JOIN notifications n ON n.id = d.notification_id \
                WHERE n.app_id = $1";
    assert_eq!(
        count(url, rows, &a.id).await,
        0,
        "deliveries went with them"
    );
    let all_deliveries = "SELECT COUNT(*) FROM deliveries WHERE notification_id <> $1";
    assert_eq!(count(url, all_deliveries, "").await, 0);
    assert_eq!(count(url, chunk_rows, &fanout.id).await, 0, "chunks too");
    let stats = store.retention_stats(before, now).await.expect("stats");
    assert_eq!(stats.oldest_due, None);
    assert_eq!(
        stats.oldest_created_at,
        Some(now - 40 * DAY),
        "the live one"
    );

    // Audit entries and expired direct events, in batches as well.
    for at in [now - 100 * DAY, now - 99 * DAY, now - 98 * DAY, now] {
        store
            .audit(&AuditEntry {
                seq: 0,
                at,
                actor: "operator".into(),
                action: "app.create".into(),
                app_id: Some(a.id.clone()),
                target: None,
                source: None,
                details: None,
            })
            .await
            .expect("audit");
    }
    let cut = now - 90 * DAY;
    assert_eq!(
        store
            .delete_audit_before(cut, 2)
            .await
            .expect("audit batch"),
        2
    );
    assert_eq!(
        store
            .delete_audit_before(cut, 2)
            .await
            .expect("audit batch"),
        1
    );
    assert_eq!(
        store
            .delete_audit_before(cut, 2)
            .await
            .expect("audit batch"),
        0
    );
    let audit_left = "SELECT COUNT(*) FROM audit_log WHERE app_id = $1";
    assert_eq!(count(url, audit_left, &a.id).await, 1);

    let sizes = store.storage_bytes().await.expect("sizes");
    assert!(!sizes.is_empty());
    assert!(sizes.iter().all(|(_, bytes)| *bytes >= 0), "{sizes:?}");
    let total: i64 = sizes
        .iter()
        .filter(|(t, _)| t != "free")
        .map(|(_, b)| b)
        .sum();
    assert!(total > 0, "{sizes:?}");
    store.compact(100).await.expect("compact");
}

#[tokio::test]
async fn retention_batches_sqlite() {
    batches_are_bounded_and_spare_what_may_still_be_delivered(quiet_node(Backend::Sqlite).await)
        .await;
}

#[tokio::test]
async fn retention_batches_postgres() {
    batches_are_bounded_and_spare_what_may_still_be_delivered(quiet_node(Backend::Postgres).await)
        .await;
}

/// Sends `n` notifications to `device` through `api`, one every 50 ms, and
/// waits until each was sent.
pub async fn send_paced(api: &Api, notifier: &TestNotifier, device: &str, n: usize) {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let answer = send(
            api,
            notifier,
            json!({"targets": {"registrations": [device]},
                   "notification": {"title": format!("n{i}")}, "ttl_seconds": 60}),
        )
        .await;
        ids.push(answer["id"].as_str().expect("id").to_owned());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &ids {
        wait_status(api, notifier, id, |s| s["counts"]["sent"] == 1).await;
    }
}

/// A node's own sweep deletes 1,000 notifications past retention, 100 a
/// statement, while they are being seeded and 60 new ones are sent: every new
/// one is delivered, every old one is gone.
async fn the_sweep_deletes_while_notifications_flow(backend: Backend) {
    let rig = rig(
        backend,
        3599,
        "notification_retention_days = 30\nretention_batch = 100\n",
    )
    .await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    let device = register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await;
    let store = push_service::store::connect(&rig.app.database_url, 2, true, None)
        .await
        .expect("store");
    seed_old(store.as_ref(), &app_id, now_millis(), 1000, 31 * DAY).await;
    let url = rig.app.database_url.clone();
    let old_left = format!(
        "SELECT COUNT(*) FROM notifications WHERE app_id = $1 AND created_at < {}",
        now_millis() - 30 * DAY
    );
    send_paced(&rig.app, &notifier, &device, 60).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(&url, &old_left, &app_id).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rig.apns.receipt_count(), 60);
    let kept = "SELECT COUNT(*) FROM notifications WHERE app_id = $1";
    assert_eq!(count(&url, kept, &app_id).await, 60);
}

#[tokio::test]
async fn retention_under_load_sqlite() {
    the_sweep_deletes_while_notifications_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn retention_under_load_postgres() {
    the_sweep_deletes_while_notifications_flow(Backend::Postgres).await;
}

/// A database that a newer build migrated further (a migration this build
/// does not carry) is accepted, so a rolled-back node starts.
async fn a_database_migrated_further_is_accepted(backend: Backend) {
    use sqlx::Connection;
    let app = quiet_node(backend).await;
    let sql =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
               VALUES (99990101, 'from a newer build', TRUE, $1, 0)";
    let checksum = vec![0u8; 48];
    if app.database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .expect("sqlite");
        sqlx::query(sql)
            .bind(checksum)
            .execute(&mut conn)
            .await
            .expect("insert");
    } else {
        let mut conn = sqlx::PgConnection::connect(&app.database_url)
            .await
            .expect("postgres");
        sqlx::query(sql)
            .bind(checksum)
            .execute(&mut conn)
            .await
            .expect("insert");
    }
    let store = push_service::store::connect(&app.database_url, 2, true, None)
        .await
        .expect("store");
    store.migrate().await.expect("a newer schema is accepted");
    let applied = "SELECT COUNT(*) FROM _sqlx_migrations WHERE description <> $1";
    assert!(count(&app.database_url, applied, "").await >= 9);
}

#[tokio::test]
async fn newer_schema_sqlite() {
    a_database_migrated_further_is_accepted(Backend::Sqlite).await;
}

#[tokio::test]
async fn newer_schema_postgres() {
    a_database_migrated_further_is_accepted(Backend::Postgres).await;
}

/// A SQLite connection the pool opens while another connection holds the
/// write lock answers at once: the file's own settings (the WAL journal,
/// incremental auto-vacuum) are made once at start, not set again by every
/// new connection, which would wait for the lock (and fail after the busy
/// timeout while it is held). Under a steady write load that wait held one
/// request for up to 4 s.
#[tokio::test]
async fn sqlite_connections_opened_under_a_held_write_lock_answer() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("push.db").display());
    let store = push_service::store::connect(&url, 8, true, None)
        .await
        .expect("store");
    store.migrate().await.expect("migrated");
    let mut holder = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("own connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .expect("write lock held");
    // Eight reads at once: the pool opens connections for them.
    let filter = push_service::store::AuditFilter {
        limit: 1,
        ..Default::default()
    };
    let reads = futures_util::future::join_all((0..8).map(|_| store.list_audit(&filter))).await;
    for read in reads {
        read.expect("answered while the write lock is held");
    }
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("released");
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut holder)
        .await
        .expect("journal mode");
    let vacuum: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&mut holder)
        .await
        .expect("auto-vacuum");
    assert_eq!(
        (journal.as_str(), vacuum),
        ("wal", 2),
        "the file's settings"
    );
}
