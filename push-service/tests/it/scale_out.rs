//! Several nodes on PostgreSQL + Redis: cross-node direct channel, a node killed
//! after accepting, a queue entry lost in Redis.

use std::time::Duration;

use sdk_client::{Client, DeviceKey, NewRegistration, RetryPolicy};
use serde_json::json;

use crate::actors::TestNotifier;
use crate::helpers::{fresh_postgres_database, redis_url, spawn, Api, Backend, Options};
use crate::notify::{next_within, send};
use crate::process::{free_port, start, wait_ready, Server};

const ADMIN: &str = "scale-out-admin-token-0123";

/// Starts a push-service process on PostgreSQL + Redis, sharing `database` and `prefix`.
async fn node(dir: &std::path::Path, database: &str, prefix: &str) -> (Server, Api) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = start(
        dir,
        port,
        &[
            ("PUSH_DATABASE_URL", database.to_owned()),
            ("PUSH_REDIS_URL", redis_url()),
            ("PUSH_REDIS_KEY_PREFIX", prefix.to_owned()),
            ("PUSH_ADMIN_TOKEN", ADMIN.to_owned()),
            ("PUSH_PUBLIC_URL", base.clone()),
            ("PUSH_NOTIFIER_AUDIENCE", "push-test".to_owned()),
            ("PUSH_SWEEP_INTERVAL_SECONDS", "1".to_owned()),
            ("PUSH_QUEUE_VISIBILITY_SECONDS", "2".to_owned()),
            ("PUSH_REDRIVE_AFTER_SECONDS", "3".to_owned()),
            ("PUSH_PROVIDER_TIMEOUT_SECONDS", "1".to_owned()),
            ("PUSH_LOG_LEVEL", "warn".to_owned()),
        ],
    );
    wait_ready(&format!("{base}/readyz"), Duration::from_secs(20)).await;
    (server, Api::new(&base, ADMIN))
}

fn direct_client(api: &Api) -> Client {
    Client::builder(&api.base, DeviceKey::generate_p256())
        .retry(RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        })
        .build()
        .expect("client")
}

#[tokio::test]
async fn notify_on_one_node_reaches_a_stream_on_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = fresh_postgres_database().await;
    let prefix = format!("pushtest:{}:", rand::random::<u64>());
    let (_a, node_a) = node(dir.path(), &database, &prefix).await;
    let (_b, node_b) = node(dir.path(), &database, &prefix).await;
    let app_id = node_a.create_app("Acme").await;
    let notifier = TestNotifier::create(&node_a, &app_id, &["notify"]).await;
    let desktop = direct_client(&node_b);
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register on B");
    let mut listener = desktop.listen(&registration.id);
    // Let the stream open on B before notifying through A.
    assert!(next_within(&mut listener, Duration::from_millis(300))
        .await
        .is_none());
    let answer = send(
        &node_a,
        &notifier,
        json!({"targets": {"registrations": [registration.id]},
        "notification": {"title": "from A"}}),
    )
    .await;
    // A's workers deliver it and publish the event; B's stream reads the
    // store itself only every half minute, so only the message through Redis
    // arrives within these 5 s.
    let event = next_within(&mut listener, Duration::from_secs(5))
        .await
        .expect("received on B through Redis");
    assert_eq!(event.notification["id"], answer["id"]);
}

#[tokio::test]
async fn a_notification_accepted_just_before_kill_9_is_delivered_by_the_survivor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = fresh_postgres_database().await;
    let prefix = format!("pushtest:{}:", rand::random::<u64>());
    let (mut a, node_a) = node(dir.path(), &database, &prefix).await;
    let (_b, node_b) = node(dir.path(), &database, &prefix).await;
    let app_id = node_a.create_app("Acme").await;
    let notifier = TestNotifier::create(&node_a, &app_id, &["notify"]).await;
    let desktop = direct_client(&node_b);
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let mut accepted = Vec::new();
    for i in 0..5 {
        let answer = send(
            &node_a,
            &notifier,
            json!({"targets": {"registrations": [registration.id]},
            "notification": {"title": format!("n{i}")}}),
        )
        .await;
        accepted.push(answer["id"].clone());
    }
    a.0.kill().expect("kill -9 node A");
    a.0.wait().expect("reaped");
    let mut listener = desktop.listen(&registration.id);
    let mut received = Vec::new();
    while received.len() < accepted.len() {
        let event = next_within(&mut listener, Duration::from_secs(30))
            .await
            .expect("every accepted notification arrives");
        received.push(event.notification["id"].clone());
    }
    received.sort_by_key(|v| v.to_string());
    accepted.sort_by_key(|v| v.to_string());
    assert_eq!(received, accepted, "all delivered, none twice");
    assert!(next_within(&mut listener, Duration::from_millis(1500))
        .await
        .is_none());
}

#[tokio::test]
async fn a_queue_entry_lost_in_redis_is_redriven_by_the_sweep() {
    // Node A only serves the API: its queue entry sits in Redis until we drop it.
    let mut api_only = Options::new(Backend::Postgres);
    api_only.workers = 0;
    let a = spawn(api_only).await;
    let app_id = a.create_app("Acme").await;
    let notifier = TestNotifier::create(&a, &app_id, &["notify"]).await;
    let desktop = Client::builder(&a.base, DeviceKey::generate_p256())
        .build()
        .expect("client");
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let answer = send(
        &a,
        &notifier,
        json!({"targets": {"registrations": [registration.id]},
        "notification": {"title": "lost and found"}}),
    )
    .await;

    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let stream = format!("{}{{queue}}:stream", a.prefix);
    let length: i64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .expect("xlen");
    assert_eq!(length, 1, "the task waits in Redis");
    let _: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .expect("del");

    // Node B joins with workers; only the sweep can find the notification now.
    let mut worker = Options::new(Backend::Postgres);
    worker.join = Some((a.database_url.clone(), a.prefix.clone()));
    let b = spawn(worker).await;
    let mut listener = desktop.listen(&registration.id);
    let event = next_within(&mut listener, Duration::from_secs(30))
        .await
        .expect("re-driven and delivered");
    assert_eq!(event.notification["id"], answer["id"]);
    let metrics = b
        .client
        .get(b.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let redriven = metrics
        .lines()
        .find(|l| l.starts_with("push_sweep_redriven_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(redriven >= 1.0, "the sweep re-drove it: {redriven}");
}

/// Entries ever added to the shared queue's stream (Redis 7 `entries-added`).
async fn stream_entries_added(prefix: &str) -> i64 {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let info: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(format!("{prefix}{{queue}}:stream"))
        .query_async(&mut conn)
        .await
        .expect("xinfo");
    let mut fields = info.into_iter();
    while let Some(name) = fields.next() {
        let value = fields.next();
        if let (redis::Value::BulkString(name), Some(redis::Value::Int(n))) = (name, value) {
            if name == b"entries-added" {
                return n;
            }
        }
    }
    panic!("no entries-added in XINFO STREAM");
}

#[tokio::test]
async fn a_node_with_workers_delivers_what_it_accepted_without_the_shared_queue() {
    let a = spawn(Options::new(Backend::Postgres)).await;
    let app_id = a.create_app("Acme").await;
    let notifier = TestNotifier::create(&a, &app_id, &["notify"]).await;
    let desktop = direct_client(&a);
    let registration = desktop
        .register(&app_id, &NewRegistration::direct("linux"))
        .await
        .expect("register");
    let mut listener = desktop.listen(&registration.id);
    assert!(next_within(&mut listener, Duration::from_millis(300))
        .await
        .is_none());
    for i in 0..3 {
        let answer = send(
            &a,
            &notifier,
            json!({"targets": {"registrations": [registration.id]},
            "notification": {"title": format!("local {i}")}}),
        )
        .await;
        let event = next_within(&mut listener, Duration::from_secs(20))
            .await
            .expect("delivered");
        assert_eq!(event.notification["id"], answer["id"]);
    }
    assert_eq!(
        stream_entries_added(&a.prefix).await,
        0,
        "unicasts went from the accepting node's memory to its workers"
    );
    // A whole-app send is expanded by whichever node takes it from the shared queue.
    send(
        &a,
        &notifier,
        json!({"targets": {"all": true}, "notification": {"title": "everyone"}}),
    )
    .await;
    next_within(&mut listener, Duration::from_secs(20))
        .await
        .expect("delivered");
    assert!(stream_entries_added(&a.prefix).await >= 1);
}
