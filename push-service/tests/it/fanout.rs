//! Fan-outs in chunks: a success is counted per chunk, not written per
//! target; a failure, a retry or a hold gets its delivery row; a chunk is run
//! by one claimant, and re-driven when its run did not finish.

use push_service::delivery::{DeliveryState, ProviderKind};
use push_service::ids::{new_id, new_timed_id, now_millis};
use push_service::store::{ChunkClaim, ChunkDone, DeliveryUpdate, NotificationRow, Registration};
use sdk_client::NewRegistration;
use serde_json::json;

use crate::both_backends;
use crate::helpers::TestApp;
use crate::notify::{send, wait_status};
use crate::providers::{apns_token, fcm_token, register, rig};

/// Rows in the database of `url` that `sql` (one `$1` parameter) counts.
pub async fn count(url: &str, sql: &str, param: &str) -> i64 {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::query_scalar(sql)
            .bind(param)
            .fetch_one(&mut conn)
            .await
            .expect("count")
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("postgres");
        sqlx::query_scalar(sql)
            .bind(param)
            .fetch_one(&mut conn)
            .await
            .expect("count")
    }
}

/// A whole-app send (3 s TTL) to healthy APNs and FCM devices, a dead token,
/// one the provider keeps refusing with 429 (retried until the TTL), and two
/// direct devices that are not listening (held until the TTL): the counts add
/// up, the targets listed are the four not sent, and those four are the
/// notification's only delivery rows.
async fn successes_are_counted_and_the_rest_keep_rows(app: TestApp) {
    let backend = app.backend;
    drop(app);
    let rig = rig(backend, 3599, "").await;
    let (app_id, notifier) = rig.tenant(&rig.p8).await;
    for _ in 0..6 {
        register(&rig, &app_id, NewRegistration::apns(&apns_token(""), "ios")).await;
        let fcm = NewRegistration::fcm(&fcm_token("android"), "android");
        register(&rig, &app_id, fcm).await;
    }
    let dead = register(
        &rig,
        &app_id,
        NewRegistration::apns(&apns_token("4100"), "ios"),
    )
    .await;
    let busy = register(
        &rig,
        &app_id,
        NewRegistration::apns(&apns_token("4290"), "ios"),
    )
    .await;
    let mut direct = Vec::new();
    for _ in 0..2 {
        direct.push(register(&rig, &app_id, NewRegistration::direct("linux")).await);
    }
    let answer = send(
        &rig.app,
        &notifier,
        json!({"targets": {"all": true}, "notification": {"title": "everyone"},
            "ttl_seconds": 3}),
    )
    .await;
    assert_eq!(answer["accepted"], 16);
    let id = answer["id"].as_str().expect("id");
    let status = wait_status(&rig.app, &notifier, id, |s| {
        s["expanded"] == true && s["counts"]["queued"] == 0
    })
    .await;
    assert_eq!(
        status["counts"],
        json!({"queued": 0, "sent": 12, "failed": 0, "expired": 3, "invalid": 1}),
        "{status}"
    );
    let mut listed: Vec<(String, String)> = status["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| {
            let registration = t["registration"].as_str().expect("id").to_owned();
            (registration, t["state"].as_str().expect("state").to_owned())
        })
        .collect();
    listed.sort();
    let mut expected = vec![
        (dead, "invalid".to_owned()),
        (busy, "expired".to_owned()),
        (direct[0].clone(), "expired".to_owned()),
        (direct[1].clone(), "expired".to_owned()),
    ];
    expected.sort();
    assert_eq!(listed, expected);
    let rows = count(
        &rig.app.database_url,
        "SELECT COUNT(*) FROM deliveries WHERE notification_id = $1",
        id,
    )
    .await;
    assert_eq!(rows, 4, "a row only for each target not sent");
    let chunks = count(
        &rig.app.database_url,
        "SELECT COUNT(*) FROM fanout_chunks WHERE notification_id = $1 AND state = 'done'",
        id,
    )
    .await;
    assert_eq!(chunks, 1, "16 registrations are one chunk, run once");
}
both_backends!(
    successes_are_counted_and_the_rest_keep_rows,
    super::successes_are_counted_and_the_rest_keep_rows
);

fn registration(app: &str, token: &str) -> Registration {
    let now = now_millis();
    Registration {
        id: new_id("reg"),
        app_id: app.into(),
        provider: ProviderKind::Fcm.as_str().into(),
        token: Some(token.into()),
        environment: None,
        platform: "android".into(),
        key_thumbprint: new_id("key"),
        encryption_jwk: None,
        status: "active".into(),
        invalid_reason: None,
        invalidated_at: None,
        created_at: now,
        updated_at: now,
        attested: false,
    }
}

/// The store's side, on both backends: expansion pages into chunks, one of
/// two racing claims wins, a run whose claim was taken over cannot close the
/// chunk, an unfinished chunk is re-driven and runs once at a time whichever
/// copy of its task comes first, and the counts follow.
async fn chunks_are_claimed_once_and_redriven(app: TestApp) {
    let store = push_service::store::connect(&app.database_url, 2, true, None)
        .await
        .expect("store");
    let now = now_millis();
    // Re-drive times far ahead: the node's own sweep never takes these chunks.
    let far = now + 3_600_000;
    let a = push_service::store::App {
        id: new_id("app"),
        name: "chunks".into(),
        created_at: now,
    };
    store.create_app(&a).await.expect("app");
    let mut regs = Vec::new();
    for i in 0..5 {
        let r = registration(&a.id, &format!("token-{i}"));
        store.create_registration(&r).await.expect("registration");
        regs.push((r.id, r.token));
    }
    regs.sort();
    let ids: Vec<String> = regs.iter().map(|(id, _)| id.clone()).collect();
    // Today's partitions known, as the node's sweep makes them: on PostgreSQL
    // a chunk's targets are then read in one statement naming its day.
    store
        .maintain_partitions(now, None)
        .await
        .expect("partitions");
    let row = NotificationRow {
        id: new_timed_id("ntf", now),
        app_id: a.id.clone(),
        notifier_id: "n".into(),
        idempotency_key: None,
        request_hash: "h".into(),
        targets: r#"{"all":true}"#.into(),
        content: "{}".into(),
        expires_at: far + 3_600_000,
        state: "expanding".into(),
        created_at: now,
        response: None,
        expand_cursor: None,
        updated_at: now,
    };
    store
        .insert_notification(&row, &[], far, None)
        .await
        .expect("notification");
    let chunks = store
        .expand_page(&row, None, 4, 2, far)
        .await
        .expect("page");
    assert_eq!(chunks, vec![ids[0..2].to_vec(), ids[2..4].to_vec()]);
    let mut row = store
        .get_notification(&row.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.expand_cursor.as_deref(), Some(ids[3].as_str()));
    let rest = store
        .expand_page(&row, None, 4, 2, far)
        .await
        .expect("rest");
    assert_eq!(rest, vec![vec![ids[4].clone()]]);
    row.expand_cursor = Some(ids[4].clone());
    assert!(store
        .expand_page(&row, None, 4, 2, far)
        .await
        .expect("end")
        .is_empty());

    let claim = |first: &str, now: i64, lease: i64| ChunkClaim {
        notification_id: row.id.clone(),
        first_registration: first.into(),
        now,
        lease,
    };
    // Two copies of the first chunk's task: one runs it.
    let (one, other) = tokio::join!(
        store.claim_chunk(claim(&ids[0], far, far + 10)),
        store.claim_chunk(claim(&ids[0], far, far + 11))
    );
    let (one, other) = (one.expect("claim"), other.expect("claim"));
    assert!(one ^ other, "exactly one claim wins: {one} {other}");
    let lease = if one { far + 10 } else { far + 11 };
    let pending = store
        .chunk_deliveries(&row, &chunks[0])
        .await
        .expect("read");
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].registration_id, ids[0]);
    assert_eq!(pending[0].token, regs[0].1, "what the first attempt needs");
    // The second target's first attempt failed: its row; the first was sent.
    store
        .record_first_outcome(DeliveryUpdate {
            notification_id: row.id.clone(),
            registration_id: ids[1].clone(),
            state: DeliveryState::Invalid,
            reason: Some("gone".into()),
            attempts: 1,
            next_attempt_at: None,
            now,
        })
        .await
        .expect("outcome");
    // A stale run (an older lease) cannot close it; the holder can.
    let done = |lease: i64| ChunkDone {
        notification_id: row.id.clone(),
        first_registration: ids[0].clone(),
        lease,
        sent: 1,
        now,
    };
    store.finish_chunk(done(lease - 100)).await.expect("stale");
    let counts = |c: Vec<(DeliveryState, i64)>| {
        let get = |s| c.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
        (
            get(DeliveryState::Sent),
            get(DeliveryState::Queued),
            get(DeliveryState::Invalid),
        )
    };
    let read = store.delivery_counts(&row.id).await.expect("counts");
    assert_eq!(
        counts(read),
        (0, 4, 1),
        "running chunk: its row counted once"
    );
    store.finish_chunk(done(lease)).await.expect("finish");
    let read = store.delivery_counts(&row.id).await.expect("counts");
    assert_eq!(counts(read), (1, 3, 1));
    // A re-run sees only the target without a row.
    let again = store
        .chunk_deliveries(&row, &chunks[0])
        .await
        .expect("read");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].registration_id, ids[0]);
    // A registration deleted since the expansion comes without provider,
    // token and status (its attempt records it gone); the others as they are.
    assert!(store.delete_registration(&ids[2]).await.expect("delete"));
    let second = store
        .chunk_deliveries(&row, &chunks[1])
        .await
        .expect("read");
    let got: Vec<_> = second
        .iter()
        .map(|p| {
            (
                p.registration_id.as_str(),
                p.provider.as_deref(),
                p.token.clone(),
                p.registration_status.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[2].as_str(), None, None, None),
            (
                ids[3].as_str(),
                Some("fcm"),
                regs[3].1.clone(),
                Some("active")
            ),
        ]
    );

    // The second chunk's task was lost: once its re-drive time passes the
    // sweep takes it (once); then one copy at a time runs it, another again
    // only when that one's lease is over.
    let overdue = store
        .claim_overdue_chunks(far + 1, far + 500, 100)
        .await
        .expect("overdue");
    let mut mine: Vec<_> = overdue.into_iter().filter(|(n, _)| *n == row.id).collect();
    mine.sort();
    assert_eq!(
        mine,
        vec![
            (row.id.clone(), chunks[1].clone()),
            (row.id.clone(), rest[0].clone())
        ]
    );
    assert!(store
        .claim_chunk(claim(&ids[2], far + 1, far + 600))
        .await
        .expect("first copy"));
    assert!(!store
        .claim_chunk(claim(&ids[2], far + 2, far + 700))
        .await
        .expect("second copy"));
    assert!(store
        .claim_chunk(claim(&ids[2], far + 601, far + 1200))
        .await
        .expect("after the lease"));
    let again = store
        .claim_overdue_chunks(far + 1, far + 700, 100)
        .await
        .expect("none due");
    assert!(again.iter().all(|(n, _)| *n != row.id));
}
both_backends!(
    chunks_are_claimed_once_and_redriven,
    super::chunks_are_claimed_once_and_redriven
);
