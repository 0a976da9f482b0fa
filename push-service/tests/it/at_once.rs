//! Acceptances built from registrations read by an earlier group: on
//! PostgreSQL a group of acceptances and outcomes goes as one statement that
//! builds from the states it saw before and checks them as it writes. What a
//! notification is built from must still be the registration as it is when
//! it is written: rotated, invalidated or deleted in between, the stale state
//! never reaches a stored notification (nor its carried task), and an
//! outcome written in the same group is written once. Single-use tokens'
//! replay-cache keys go in the same groups (on SQLite in the same hand-off):
//! each key is taken once, by its first write.

use std::sync::{Arc, Mutex};

use push_service::delivery::{DeliveryState, ProviderKind};
use push_service::ids::now_millis;
use push_service::store::{Acceptance, Built, DeliveryUpdate, Store};

use crate::both_backends;
use crate::helpers::TestApp;
use crate::store_contract::{creation_entry, registration, store_with_app, unicast_row};

/// What one build saw of the registration: its token and whether it was
/// active, or `None` when it was not found.
type Seen = Option<(Option<String>, bool)>;

/// A notification to `registration` whose build records what it saw in
/// `seen` (its last call is the one stored) and queues a delivery when the
/// registration is active.
fn acceptance(
    app: &str,
    registration: &str,
    seen: &Arc<Mutex<Vec<Seen>>>,
    now: i64,
) -> (String, Acceptance) {
    let id = push_service::ids::new_timed_id("ntf", now);
    let (app, reg, seen, nid) = (
        app.to_owned(),
        registration.to_owned(),
        seen.clone(),
        id.clone(),
    );
    let far = now + 3_600_000;
    let acceptance = Acceptance {
        registrations: vec![reg.clone()],
        redrive_at: far,
        build: Arc::new(move |found| {
            let state = found.get(&reg);
            seen.lock()
                .expect("seen")
                .push(state.map(|s| (s.token.clone(), s.active())));
            Ok(Built {
                row: unicast_row(&app, "ntr_at_once", nid.clone(), now, far),
                deliveries: state
                    .filter(|s| s.active())
                    .map(|s| s.id.clone())
                    .into_iter()
                    .collect(),
                audit: creation_entry(&app, "ntr_at_once", &nid, now),
            })
        }),
    };
    (id, acceptance)
}

/// The outcome of a first attempt that succeeded.
fn sent(notification: &str, registration: &str, now: i64) -> DeliveryUpdate {
    DeliveryUpdate {
        notification_id: notification.to_owned(),
        registration_id: registration.to_owned(),
        state: DeliveryState::Sent,
        reason: None,
        attempts: 1,
        next_attempt_at: None,
        now,
    }
}

fn last(seen: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    seen.lock().expect("seen").last().cloned().flatten()
}

async fn queued(store: &Arc<dyn Store>, id: &str) -> Vec<(DeliveryState, i64)> {
    store.delivery_counts(id).await.expect("counts")
}

async fn acceptances_are_built_from_the_registration_as_it_is_written(app: TestApp) {
    let (store, a) = store_with_app(&app, "at-once").await;
    let r = registration(&a.id, ProviderKind::Fcm, Some("first"), "k");
    store.create_registration(&r).await.expect("registration");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let now = now_millis();

    // Read in the group's transaction, then (PostgreSQL) built from what was read.
    let (first, acc) = acceptance(&a.id, &r.id, &seen, now);
    store.accept_notification(acc).await.expect("first");
    let (second, acc) = acceptance(&a.id, &r.id, &seen, now);
    store.accept_notification(acc).await.expect("second");
    assert_eq!(last(&seen), Some((Some("first".into()), true)));
    assert_eq!(
        queued(&store, &second).await,
        vec![(DeliveryState::Queued, 1)]
    );

    // A new token: the notification written with it, and an outcome that
    // may share its group written once.
    store
        .rotate_registration_token(&r.id, "second", now)
        .await
        .expect("rotate");
    let (third, acc) = acceptance(&a.id, &r.id, &seen, now);
    let outcome = sent(&first, &r.id, now);
    let (accepted, updated) = tokio::join!(
        store.accept_notification(acc),
        store.update_delivery(outcome)
    );
    accepted.expect("third");
    updated.expect("outcome");
    assert_eq!(
        last(&seen),
        Some((Some("second".into()), true)),
        "stored from the token it had before the rotation"
    );
    assert_eq!(
        queued(&store, &third).await,
        vec![(DeliveryState::Queued, 1)]
    );
    assert_eq!(queued(&store, &first).await, vec![(DeliveryState::Sent, 1)]);

    // Invalidated: found, not active, no delivery.
    store
        .invalidate_registration(&r.id, "Unregistered", now)
        .await
        .expect("invalidate");
    let (fourth, acc) = acceptance(&a.id, &r.id, &seen, now);
    store.accept_notification(acc).await.expect("fourth");
    assert_eq!(last(&seen), Some((Some("second".into()), false)));
    assert!(
        queued(&store, &fourth).await.is_empty(),
        "an invalid registration got a delivery"
    );

    // Deleted: not found.
    assert!(store.delete_registration(&r.id).await.expect("delete"));
    let (fifth, acc) = acceptance(&a.id, &r.id, &seen, now);
    store.accept_notification(acc).await.expect("fifth");
    assert_eq!(seen.lock().expect("seen").last().cloned(), Some(None));
    assert!(
        queued(&store, &fifth).await.is_empty(),
        "a deleted registration got a delivery"
    );

    // Each notification stored once.
    for id in [&first, &second, &third, &fourth, &fifth] {
        let row = store.get_notification(id).await.expect("read");
        assert!(row.is_some(), "{id} was not stored");
    }
}

both_backends!(
    built_as_written,
    super::acceptances_are_built_from_the_registration_as_it_is_written
);

/// Replay-cache keys written together with acceptances: a key twice in
/// the writes taken by one of them only, a key stored and not expired
/// refused, one stored and expired taken again.
async fn replay_keys_beside_acceptances_are_taken_once(app: TestApp) {
    let (store, a) = store_with_app(&app, "at-once-keys").await;
    let r = registration(&a.id, ProviderKind::Apns, Some("token"), "k");
    store.create_registration(&r).await.expect("registration");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let now = now_millis();
    let far = now + 3_600_000;
    // Its state read once, so later groups may be written at once.
    let (_, acc) = acceptance(&a.id, &r.id, &seen, now);
    store.accept_notification(acc).await.expect("first");

    let held = push_service::ids::new_id("jti");
    let expired = push_service::ids::new_id("jti");
    assert!(store.remember_once(&held, far, now).await.expect("held"));
    assert!(store
        .remember_once(&expired, now - 1_000, now - 2_000)
        .await
        .expect("expired"));

    for round in 0..5 {
        let twice = push_service::ids::new_id("jti");
        let (id, acc) = acceptance(&a.id, &r.id, &seen, now);
        let (accepted, first, second, again, renewed) = tokio::join!(
            store.accept_notification(acc),
            store.remember_once(&twice, far, now),
            store.remember_once(&twice, far, now),
            store.remember_once(&held, far, now),
            store.remember_once(&expired, far, now),
        );
        accepted.expect("accept");
        let (first, second) = (first.expect("first"), second.expect("second"));
        assert!(
            first ^ second,
            "round {round}: a key written twice was taken {first} and {second}"
        );
        assert!(
            !again.expect("held"),
            "round {round}: a key held was taken again"
        );
        assert_eq!(
            renewed.expect("expired"),
            round == 0,
            "round {round}: an expired key is taken again once, then held"
        );
        assert!(store.get_notification(&id).await.expect("read").is_some());
    }
}

both_backends!(
    keys_beside_acceptances,
    super::replay_keys_beside_acceptances_are_taken_once
);

/// More rows than a group's small texts hold: on SQLite its lists go as
/// JSON arrays, not as parameters. Forty registrations read by a first
/// group, then forty acceptances and forty outcomes together: every row
/// written, every outcome applied.
async fn a_large_group_is_written_whole(app: TestApp) {
    use futures_util::future::join_all;
    const N: usize = 40;
    let (store, a) = store_with_app(&app, "at-once-large").await;
    let mut registrations = Vec::new();
    for i in 0..N {
        let r = registration(&a.id, ProviderKind::Fcm, Some(&format!("t{i}")), "k");
        store.create_registration(&r).await.expect("registration");
        registrations.push(r.id);
    }
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let now = now_millis();
    let (first, accepts): (Vec<String>, Vec<Acceptance>) = registrations
        .iter()
        .map(|r| acceptance(&a.id, r, &seen, now))
        .unzip();
    for accepted in join_all(
        accepts
            .into_iter()
            .map(|acc| store.accept_notification(acc)),
    )
    .await
    {
        accepted.expect("first");
    }

    // The test's runtime has one thread: every write below is waiting
    // before the writer takes them, so they go as one group.
    let (second, accepts): (Vec<String>, Vec<Acceptance>) = registrations
        .iter()
        .map(|r| acceptance(&a.id, r, &seen, now))
        .unzip();
    let outcomes = first
        .iter()
        .zip(&registrations)
        .map(|(n, r)| sent(n, r, now));
    let (accepted, updated) = tokio::join!(
        join_all(
            accepts
                .into_iter()
                .map(|acc| store.accept_notification(acc))
        ),
        join_all(outcomes.map(|u| store.update_delivery(u))),
    );
    accepted.into_iter().for_each(|a| a.expect("second"));
    updated.into_iter().for_each(|u| u.expect("outcome"));
    for id in &first {
        assert_eq!(queued(&store, id).await, vec![(DeliveryState::Sent, 1)]);
    }
    for id in &second {
        assert!(
            store.get_notification(id).await.expect("read").is_some(),
            "{id} was not stored"
        );
        assert_eq!(queued(&store, id).await, vec![(DeliveryState::Queued, 1)]);
    }
}

both_backends!(large_group, super::a_large_group_is_written_whole);
