//! The store's contract, run on both backends through the same traits: what
//! the service relies on of every aggregate (apps and credentials,
//! registrations, notifications and deliveries, the direct channel, the
//! audit log, the replay cache). The node of the test runs beside it; the
//! rows written here are its own app's and are never due for its sweep.

use std::sync::Arc;

use push_service::delivery::{DeliveryState, ProviderKind};
use push_service::ids::{new_id, now_millis};
use push_service::store::batch::{DeliveryClaim, RegistrationGuard};
use push_service::store::{
    App, AuditEntry, AuditFilter, CredentialRecord, DeliveryUpdate, DirectHold, NotificationRow,
    Registration, Store, StoreError,
};

use crate::both_backends;
use crate::helpers::TestApp;

pub fn registration(
    app: &str,
    provider: ProviderKind,
    token: Option<&str>,
    key: &str,
) -> Registration {
    let now = now_millis();
    Registration {
        id: new_id("reg"),
        app_id: app.into(),
        provider: provider.as_str().into(),
        token: token.map(str::to_owned),
        environment: None,
        platform: "android".into(),
        key_thumbprint: key.into(),
        encryption_jwk: None,
        status: "active".into(),
        invalid_reason: None,
        invalidated_at: None,
        created_at: now,
        updated_at: now,
        attested: false,
    }
}

/// A notification of notifier `notifier` of app `app` to registrations by
/// id, made at `now`, expiring at `expires_at`, as the store's tests write it.
pub(crate) fn unicast_row(
    app: &str,
    notifier: &str,
    id: String,
    now: i64,
    expires_at: i64,
) -> NotificationRow {
    NotificationRow {
        id,
        app_id: app.into(),
        notifier_id: notifier.into(),
        idempotency_key: None,
        request_hash: "h".into(),
        targets: "{}".into(),
        content: "{}".into(),
        expires_at,
        state: "dispatching".into(),
        created_at: now,
        response: None,
        expand_cursor: None,
        updated_at: now,
    }
}

/// The audit entry of notification `target`'s creation.
pub(crate) fn creation_entry(app: &str, notifier: &str, target: &str, now: i64) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: now,
        actor: format!("notifier:{notifier}"),
        action: "notification.create".into(),
        app_id: Some(app.into()),
        target: Some(target.into()),
        source: None,
        details: None,
    }
}

/// A store on the test node's database, with an app of its own named `name`.
pub(crate) async fn store_with_app(app: &TestApp, name: &str) -> (Arc<dyn Store>, App) {
    let store = push_service::store::connect(&app.database_url, 2, true, None)
        .await
        .expect("store");
    let a = App {
        id: new_id("app"),
        name: name.into(),
        created_at: now_millis(),
    };
    store.create_app(&a).await.expect("app");
    (store, a)
}

async fn contract(app: TestApp) {
    let store = push_service::store::connect(&app.database_url, 2, true, None)
        .await
        .expect("store");
    let now = now_millis();
    let far = now + 3_600_000;

    // Apps and credentials.
    let a = App {
        id: new_id("app"),
        name: "contract".into(),
        created_at: now,
    };
    store.create_app(&a).await.expect("app");
    assert_eq!(
        store.get_app(&a.id).await.expect("get").map(|x| x.name),
        Some("contract".into())
    );
    let record = CredentialRecord {
        app_id: a.id.clone(),
        provider: "fcm".into(),
        metadata: "{}".into(),
        sealed: vec![1, 2, 3],
        expires_at: None,
        updated_at: now,
        last_error: None,
        last_error_at: None,
    };
    store.put_credential(&record).await.expect("credential");
    assert!(store
        .get_credential(&a.id, ProviderKind::Apns)
        .await
        .expect("get")
        .is_none());
    store
        .set_credential_error(&a.id, ProviderKind::Fcm, Some("refused"), now)
        .await
        .expect("error");
    let read = store
        .get_credential(&a.id, ProviderKind::Fcm)
        .await
        .expect("get")
        .expect("fcm");
    assert_eq!(
        (read.sealed, read.last_error.as_deref()),
        (vec![1, 2, 3], Some("refused"))
    );

    // Registrations: a token held twice is taken from the first holder.
    let first = registration(&a.id, ProviderKind::Fcm, Some("token-1"), "key-a");
    assert!(store
        .create_registration(&first)
        .await
        .expect("first")
        .is_empty());
    let second = registration(&a.id, ProviderKind::Fcm, Some("token-1"), "key-b");
    assert_eq!(
        store.create_registration(&second).await.expect("second"),
        vec![first.id.clone()]
    );
    let mut states = store
        .registration_states(&[first.id.clone(), second.id.clone(), "reg_none".into()])
        .await
        .expect("states");
    states.sort_by_key(|s| s.id != first.id);
    let seen: Vec<_> = states
        .iter()
        .map(|s| {
            (
                s.id.clone(),
                s.app_id.clone(),
                s.active(),
                s.provider.clone(),
                s.token.clone(),
            )
        })
        .collect();
    let fcm = Some("fcm".to_owned());
    let token = Some("token-1".to_owned());
    assert_eq!(
        seen,
        vec![
            (
                first.id.clone(),
                a.id.clone(),
                false,
                fcm.clone(),
                token.clone()
            ),
            (second.id.clone(), a.id.clone(), true, fcm, token)
        ]
    );
    let pending = states[1].pending();
    assert_eq!(
        (pending.attempts, pending.registration_status.as_deref()),
        (0, Some("active"))
    );
    assert_eq!(
        store
            .count_registrations_by_key("key-b")
            .await
            .expect("count"),
        1
    );
    store
        .set_aliases(&a.id, &second.id, &["b".into(), "a".into()])
        .await
        .expect("aliases");
    assert_eq!(
        store.list_aliases(&second.id).await.expect("list"),
        vec!["a", "b"]
    );
    let direct = registration(&a.id, ProviderKind::Direct, None, "key-c");
    store.create_registration(&direct).await.expect("direct");

    // Notifications and deliveries.
    let row = NotificationRow {
        id: new_id("ntf"),
        app_id: a.id.clone(),
        notifier_id: "ntr_contract".into(),
        idempotency_key: Some("k".into()),
        request_hash: "h".into(),
        targets: "{}".into(),
        content: "{}".into(),
        expires_at: far,
        state: "dispatching".into(),
        created_at: now,
        response: None,
        expand_cursor: None,
        updated_at: now,
    };
    let targets = [second.id.clone(), direct.id.clone()];
    store
        .insert_notification(&row, &targets, far, None)
        .await
        .expect("insert");
    let mut again = row.clone();
    again.id = new_id("ntf");
    assert!(
        matches!(
            store.insert_notification(&again, &targets, far, None).await,
            Err(StoreError::Conflict(_))
        ),
        "the same idempotency key is a conflict"
    );
    let found = store
        .find_idempotent(&a.id, "ntr_contract", "k")
        .await
        .expect("find");
    assert_eq!(found.map(|n| n.id), Some(row.id.clone()));
    let (read, pending) = store
        .task_deliveries(&row.id, &targets)
        .await
        .expect("task")
        .expect("queued");
    assert_eq!((read.id.as_str(), pending.len()), (row.id.as_str(), 2));
    let claim = |due| DeliveryClaim {
        notification_id: row.id.clone(),
        registration_id: second.id.clone(),
        attempts: 0,
        due,
        lease: far + 1,
        unchanged: None,
    };
    let guarded = |registration: &str, token: Option<&str>| DeliveryClaim {
        registration_id: registration.to_owned(),
        unchanged: Some(RegistrationGuard {
            token: token.map(str::to_owned),
        }),
        ..claim(Some(far))
    };
    assert!(
        !store.claim_delivery(claim(Some(now))).await.expect("stale"),
        "another version"
    );
    assert!(
        !store
            .claim_delivery(guarded(&second.id, Some("token-0")))
            .await
            .expect("guarded"),
        "the registration's token is no longer the one read"
    );
    assert!(
        store
            .claim_delivery(guarded(&second.id, Some("token-1")))
            .await
            .expect("claim"),
        "still active with the token read"
    );
    assert!(
        store
            .claim_delivery(guarded(&direct.id, None))
            .await
            .expect("claim"),
        "a registration without a token"
    );
    assert!(
        !store.claim_delivery(claim(Some(far))).await.expect("twice"),
        "taken once"
    );
    store
        .update_delivery(DeliveryUpdate {
            notification_id: row.id.clone(),
            registration_id: second.id.clone(),
            state: DeliveryState::Sent,
            reason: None,
            attempts: 1,
            next_attempt_at: None,
            now,
        })
        .await
        .expect("outcome");
    let mut counts = store.delivery_counts(&row.id).await.expect("counts");
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(
        counts,
        vec![(DeliveryState::Queued, 1), (DeliveryState::Sent, 1)]
    );
    let unsent = store
        .delivery_page(&row.id, "", 10, true)
        .await
        .expect("page");
    assert_eq!(
        unsent
            .iter()
            .map(|d| d.registration_id.as_str())
            .collect::<Vec<_>>(),
        vec![direct.id.as_str()]
    );

    // The direct channel: one event per notification and device (two holds
    // racing in one group: one gets the number), a cursor that only moves on.
    let hold = DirectHold {
        registration_id: direct.id.clone(),
        notification_id: row.id.clone(),
        payload: "{}".into(),
        expires_at: far,
        attempts: 1,
        now,
    };
    let (one, other) = tokio::join!(
        store.insert_direct_event(hold.clone()),
        store.insert_direct_event(hold.clone())
    );
    let (one, other) = (one.expect("event"), other.expect("again"));
    let seq = one.or(other).expect("one of them is new");
    assert!(
        one.is_none() || other.is_none(),
        "held twice: {one:?} {other:?}"
    );
    assert!(store
        .insert_direct_event(hold)
        .await
        .expect("again")
        .is_none());
    let events = store
        .direct_events_after(&direct.id, 0, now, 10)
        .await
        .expect("events");
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![seq]);
    store
        .streamed(&[(direct.id.clone(), row.id.clone(), seq)], now)
        .await
        .expect("streamed");
    store
        .streamed(&[(direct.id.clone(), row.id.clone(), seq - 1)], now)
        .await
        .expect("an older one");
    assert_eq!(store.direct_cursor(&direct.id).await.expect("cursor"), seq);
    let unsent = store
        .delivery_page(&row.id, "", 10, true)
        .await
        .expect("page");
    assert!(
        unsent.iter().all(|d| d.registration_id != direct.id),
        "a streamed delivery is sent"
    );

    // The audit log and the replay cache.
    let entry = AuditEntry {
        seq: 0,
        at: now,
        actor: "operator".into(),
        action: "contract.check".into(),
        app_id: Some(a.id.clone()),
        target: None,
        source: None,
        details: None,
    };
    store.audit(&entry).await.expect("audit");
    let listed = store
        .list_audit(&AuditFilter {
            app_id: Some(a.id.clone()),
            action: Some("contract.check".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    let key = new_id("jti");
    assert!(store
        .remember_once(&key, far, now)
        .await
        .expect("first use"));
    assert!(!store.remember_once(&key, far, now).await.expect("reuse"));

    // Deleting the app takes what it owns: its notifications and their
    // deliveries too (on PostgreSQL by the store itself: no foreign key).
    assert!(store.delete_app(&a.id).await.expect("delete"));
    assert!(store
        .get_registration(&second.id)
        .await
        .expect("get")
        .is_none());
    assert!(
        store
            .get_notification(&row.id)
            .await
            .expect("get")
            .is_none(),
        "the app's notification is deleted with it"
    );
    assert!(
        store
            .task_deliveries(&row.id, &targets)
            .await
            .expect("task")
            .is_none(),
        "and its deliveries"
    );
}
both_backends!(store_contract, super::contract);

/// A notification's counts and its page of deliveries come from one snapshot:
/// while its deliveries are marked sent one by one (each its own commit), no
/// read counts a state differently from the rows it lists.
async fn status_reads_are_one_snapshot(app: TestApp) {
    let (store, a) = store_with_app(&app, "snapshot").await;
    let now = now_millis();
    let far = now + 3_600_000;
    let mut targets = Vec::new();
    for i in 0..60 {
        let r = registration(&a.id, ProviderKind::Fcm, Some(&format!("t-{i}")), "k");
        store.create_registration(&r).await.expect("registration");
        targets.push(r.id);
    }
    let id = push_service::ids::new_timed_id("ntf", now);
    let row = unicast_row(&a.id, "ntr_snapshot", id.clone(), now, far);
    store
        .insert_notification(&row, &targets, far, None)
        .await
        .expect("notification");
    let writer = {
        let (store, id, targets) = (store.clone(), id.clone(), targets.clone());
        tokio::spawn(async move {
            for registration_id in targets {
                store
                    .update_delivery(DeliveryUpdate {
                        notification_id: id.clone(),
                        registration_id,
                        state: DeliveryState::Sent,
                        reason: None,
                        attempts: 1,
                        next_attempt_at: None,
                        now: now_millis(),
                    })
                    .await
                    .expect("outcome");
            }
        })
    };
    let (mut reads, mut during) = (0, 0);
    loop {
        let (counts, page) = store
            .delivery_status(&id, "", 100, false)
            .await
            .expect("status");
        reads += 1;
        let counted = |state: DeliveryState| {
            counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n)
        };
        let listed = |state: &str| page.iter().filter(|d| d.state == state).count() as i64;
        let sent = counted(DeliveryState::Sent);
        assert_eq!(page.len(), 60);
        assert_eq!(sent, listed("sent"), "read {reads}: {counts:?}");
        assert_eq!(
            counted(DeliveryState::Queued),
            listed("queued"),
            "read {reads}: {counts:?}"
        );
        if sent == 60 {
            break;
        }
        if sent > 0 {
            during += 1;
        }
        assert!(reads < 100_000, "the writer never finished");
    }
    writer.await.expect("writer");
    assert!(
        during >= 10,
        "only {during} of {reads} reads saw the writes in progress"
    );
}

both_backends!(
    a_status_is_read_in_one_snapshot,
    super::status_reads_are_one_snapshot
);

/// Registration lookups asked at once (grouped into shared statements) each
/// get the states of their own ids and only those: overlapping asks, an
/// unknown id, an empty ask, another app's registration.
async fn concurrent_lookups_get_their_own_answers(app: TestApp) {
    let (store, a) = store_with_app(&app, "lookups").await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let provider = if i % 2 == 0 {
            ProviderKind::Apns
        } else {
            ProviderKind::Fcm
        };
        let token = format!("tok-{i}");
        let mut r = registration(&a.id, provider, Some(&token), &new_id("key"));
        if i % 5 == 0 {
            r.status = "invalid".into();
        }
        store.create_registration(&r).await.expect("registration");
        ids.push(r.id);
    }
    // 64 asks at once: a window of five ids each, overlapping the next, one
    // unknown id in every fourth, every eighth empty.
    let asks: Vec<Vec<String>> = (0..64)
        .map(|k| match k % 8 {
            0 => Vec::new(),
            _ => {
                let mut ask: Vec<String> =
                    (0..5).map(|j| ids[(k + j) % ids.len()].clone()).collect();
                if k % 4 == 1 {
                    ask.push(new_id("reg"));
                }
                ask
            }
        })
        .collect();
    let answers =
        futures_util::future::join_all(asks.iter().map(|ask| store.registration_states(ask))).await;
    for (ask, answer) in asks.iter().zip(answers) {
        let answer = answer.expect("lookup");
        let mut got: Vec<&str> = answer.iter().map(|s| s.id.as_str()).collect();
        got.sort_unstable();
        let mut known: Vec<&str> = ask
            .iter()
            .filter(|id| ids.contains(id))
            .map(String::as_str)
            .collect();
        known.sort_unstable();
        assert_eq!(got, known, "ask {ask:?}");
        for state in &answer {
            let i = ids.iter().position(|id| *id == state.id).expect("ours");
            assert_eq!(state.app_id, a.id);
            assert_eq!(state.token.as_deref(), Some(format!("tok-{i}").as_str()));
            assert_eq!(state.active(), i % 5 != 0, "{i}");
        }
    }
}

both_backends!(
    grouped_lookups,
    super::concurrent_lookups_get_their_own_answers
);

/// Notifications inserted at once share group commits (on PostgreSQL each
/// day's go with their deliveries and audit entries as one statement): each
/// gets its own deliveries and audit entry, and one whose id is taken already
/// gets neither (a `Conflict`), while the others are stored.
async fn concurrent_inserts_get_their_own_rows(app: TestApp) {
    let (store, a) = store_with_app(&app, "inserts").await;
    let now = now_millis();
    let far = now + 3_600_000;
    let mut registrations = Vec::new();
    for i in 0..3 {
        let r = registration(&a.id, ProviderKind::Fcm, Some(&format!("t-{i}")), "k");
        store.create_registration(&r).await.expect("registration");
        registrations.push(r.id);
    }
    let row = |id: String| unicast_row(&a.id, "ntr_inserts", id, now, far);
    let audit = |target: &str| creation_entry(&a.id, "ntr_inserts", target, now);
    let taken = push_service::ids::new_timed_id("ntf", now);
    store
        .insert_notification(
            &row(taken.clone()),
            &registrations[..1],
            far,
            Some(&audit(&taken)),
        )
        .await
        .expect("first");
    // Twelve at once, each to a different number of the registrations; the
    // seventh reuses the id taken above, with all three registrations.
    let ids: Vec<String> = (0..12)
        .map(|k| match k {
            6 => taken.clone(),
            _ => push_service::ids::new_timed_id("ntf", now),
        })
        .collect();
    let targets = |k: usize| {
        if k == 6 {
            registrations.clone()
        } else {
            registrations[..1 + k % 3].to_vec()
        }
    };
    let rows: Vec<NotificationRow> = ids.iter().map(|id| row(id.clone())).collect();
    let entries: Vec<AuditEntry> = ids.iter().map(|id| audit(id)).collect();
    let all_targets: Vec<Vec<String>> = (0..12).map(targets).collect();
    let answers = futures_util::future::join_all(
        (0..12)
            .map(|k| store.insert_notification(&rows[k], &all_targets[k], far, Some(&entries[k]))),
    )
    .await;
    for (k, answer) in answers.into_iter().enumerate() {
        match k {
            6 => assert!(
                matches!(answer, Err(StoreError::Conflict(_))),
                "a taken id: {answer:?}"
            ),
            _ => answer.expect("stored"),
        }
    }
    for (k, id) in ids.iter().enumerate() {
        let (_, pending) = store
            .task_deliveries(id, &registrations)
            .await
            .expect("task")
            .expect("queued");
        let mut got: Vec<String> = pending.into_iter().map(|p| p.registration_id).collect();
        got.sort_unstable();
        let mut expected = if k == 6 {
            registrations[..1].to_vec()
        } else {
            targets(k)
        };
        expected.sort_unstable();
        assert_eq!(got, expected, "notification {k}");
    }
    let logged = store
        .list_audit(&AuditFilter {
            after: 0,
            app_id: Some(a.id.clone()),
            actor: None,
            action: Some("notification.create".into()),
            limit: 100,
        })
        .await
        .expect("audit");
    let mut targets_logged: Vec<String> = logged.into_iter().filter_map(|e| e.target).collect();
    targets_logged.sort_unstable();
    let mut expected: Vec<String> = ids.clone();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(
        targets_logged, expected,
        "one entry per stored notification, none for the taken id's second insert"
    );
}

both_backends!(
    grouped_inserts,
    super::concurrent_inserts_get_their_own_rows
);

/// Acceptances written at once are built from the registrations their
/// group's transaction reads (one statement for the group): each gets the
/// deliveries its build chose from what it found (an invalid registration
/// found but not active, an unknown one absent), and one whose build fails
/// fails alone while the others are stored.
async fn concurrent_acceptances_are_built_from_what_their_write_reads(app: TestApp) {
    use push_service::store::{Acceptance, Built};
    use std::collections::HashMap;
    let (store, a) = store_with_app(&app, "acceptances").await;
    let now = now_millis();
    let far = now + 3_600_000;
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut r = registration(&a.id, ProviderKind::Fcm, Some(&format!("a-{i}")), "k");
        if i == 3 {
            r.status = "invalid".into();
        }
        store.create_registration(&r).await.expect("registration");
        ids.push(r.id);
    }
    let targets = |k: usize| -> Vec<String> {
        let mut t = ids[..1 + k % 4].to_vec();
        t.push("reg_none".into());
        t
    };
    // What each build saw: the ids found, and which of them were active.
    type Seen = Arc<std::sync::Mutex<HashMap<usize, Vec<(String, bool)>>>>;
    let seen: Seen = Arc::default();
    let acceptance = |k: usize| {
        let (seen, app_id) = (seen.clone(), a.id.clone());
        let id = push_service::ids::new_timed_id("ntf", now);
        let named = targets(k);
        Acceptance {
            registrations: named.clone(),
            redrive_at: far,
            build: Arc::new(move |found| {
                if k == 5 {
                    return Err(StoreError::Other(anyhow::anyhow!("this build fails")));
                }
                let mut view: Vec<(String, bool)> = named
                    .iter()
                    .filter_map(|r| found.get(r).map(|s| (s.id.clone(), s.active())))
                    .collect();
                view.sort();
                let deliveries = view
                    .iter()
                    .filter(|(_, active)| *active)
                    .map(|(r, _)| r.clone())
                    .collect();
                seen.lock().expect("seen").insert(k, view);
                Ok(Built {
                    row: unicast_row(&app_id, "ntr_acceptances", id.clone(), now, far),
                    deliveries,
                    audit: creation_entry(&app_id, "ntr_acceptances", &id, now),
                })
            }),
        }
    };
    let acceptances: Vec<Acceptance> = (0..16).map(acceptance).collect();
    let answers = futures_util::future::join_all(
        acceptances
            .iter()
            .map(|acceptance| store.accept_notification(acceptance.clone())),
    )
    .await;
    let seen = seen.lock().expect("seen").clone();
    for (k, answer) in answers.into_iter().enumerate() {
        if k == 5 {
            assert!(answer.is_err(), "the failing build was stored");
            assert!(!seen.contains_key(&5));
            continue;
        }
        answer.expect("stored");
        let found = &seen[&k];
        let named = targets(k);
        let expected: Vec<(String, bool)> = {
            let mut e: Vec<(String, bool)> = named
                .iter()
                .filter(|r| *r != "reg_none")
                .map(|r| (r.clone(), *r != ids[3]))
                .collect();
            e.sort();
            e
        };
        assert_eq!(found, &expected, "what build {k} found");
    }
    // Each stored notification holds the deliveries its build chose.
    let logged = store
        .list_audit(&AuditFilter {
            after: 0,
            app_id: Some(a.id.clone()),
            actor: None,
            action: Some("notification.create".into()),
            limit: 100,
        })
        .await
        .expect("audit");
    assert_eq!(logged.len(), 15, "one entry per stored notification");
    for entry in logged {
        let id = entry.target.expect("target");
        let (_, pending) = store
            .task_deliveries(&id, &ids)
            .await
            .expect("task")
            .expect("queued");
        let mut got: Vec<String> = pending.into_iter().map(|p| p.registration_id).collect();
        got.sort_unstable();
        assert!(
            !got.contains(&ids[3]),
            "an invalid registration got a delivery"
        );
        assert!(!got.is_empty());
    }
}

both_backends!(
    grouped_acceptances,
    super::concurrent_acceptances_are_built_from_what_their_write_reads
);

/// Waking deliveries after an outage never waits for a row another
/// transaction holds: it takes the others and leaves that one. Waiting, the
/// wakes of three nodes and their writers' outcomes deadlocked after an
/// APNs outage, PostgreSQL failed the wake a second later, and the deliveries
/// waited out their backoff (RELIABILITY.md, "Re-run with ids in time order").
/// PostgreSQL only: SQLite has one writer, and no row locks to skip.
#[tokio::test]
async fn waking_after_an_outage_skips_deliveries_another_transaction_holds() {
    use sqlx::Connection;
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await;
    let (store, a) = store_with_app(&app, "wake").await;
    let now = now_millis();
    let later = now + 3_600_000;
    let mut deliveries = Vec::new();
    for i in 0..2 {
        let r = registration(&a.id, ProviderKind::Fcm, Some(&format!("w-{i}")), "k");
        store.create_registration(&r).await.expect("registration");
        let id = push_service::ids::new_timed_id("ntf", now + i);
        let row = unicast_row(&a.id, "ntr_wake", id.clone(), now, later);
        // Queued, its next attempt an hour away: waiting for a retry.
        store
            .insert_notification(&row, std::slice::from_ref(&r.id), later, None)
            .await
            .expect("notification");
        deliveries.push((id, r.id));
    }
    let (held, free) = (deliveries[0].clone(), deliveries[1].clone());

    let mut other = sqlx::PgConnection::connect(&app.database_url)
        .await
        .expect("postgres");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query(
        "SELECT 1 FROM deliveries WHERE notification_id = $1 AND registration_id = $2 FOR UPDATE",
    )
    .bind(&held.0)
    .bind(&held.1)
    .execute(&mut *tx)
    .await
    .expect("the row held");

    let wake = store.wake_waiting(&a.id, ProviderKind::Fcm, now + 60_000, now, 10);
    let woken = tokio::time::timeout(std::time::Duration::from_secs(5), wake)
        .await
        .expect("the wake waited for a row another transaction holds")
        .expect("wake");
    assert_eq!(woken, vec![free]);

    tx.rollback().await.expect("released");
    let woken = store
        .wake_waiting(&a.id, ProviderKind::Fcm, now + 60_000, now, 10)
        .await
        .expect("wake");
    assert_eq!(woken, vec![held], "the row is woken once it is free");
}
