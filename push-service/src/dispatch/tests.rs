//! The dispatcher without a server: a real SQLite store and queue, the real
//! providers (the direct channel writes to the store; APNs and FCM answer from
//! their credentials, here absent), tasks taken from the queue and worked.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{work, DispatchSettings, Dispatcher, QueueDepths, Task};
use crate::auth::notifier::NotifierAuth;
use crate::delivery::{DeliveryState, ProviderKind};
use crate::limits::Limiter;
use crate::notify::{AcceptSettings, Acceptor};
use crate::providers::{apns, direct, fcm, http::CredentialSource, Providers};
use crate::store::Notifier;
use crate::testing::{app_with_notifier, core, registration, Core};

fn dispatcher(core: &Core) -> Dispatcher {
    let source = CredentialSource {
        store: core.store.clone(),
        sealer: core.config.sealer(),
    };
    let settings = core.config.providers.clone();
    Dispatcher {
        store: core.store.clone(),
        queue: core.queue.clone(),
        local: None,
        providers: Providers {
            apns: Arc::new(apns::ApnsProvider::new(settings.clone(), source.clone())),
            fcm: Arc::new(fcm::FcmProvider::new(settings, source)),
            direct: Arc::new(direct::DirectProvider {
                store: core.store.clone(),
                hub: direct::DirectHub::new(None),
            }),
        },
        circuits: Arc::default(),
        settings: Arc::new(DispatchSettings::from_config(&core.config)),
        depths: QueueDepths::default(),
        invalidated: Arc::default(),
        fanouts: Arc::default(),
    }
}

/// Accepts a notification to `targets` (as the API would) and returns its id.
async fn notify(core: &Core, notifier: &Notifier, targets: &[&str], ttl: u64) -> String {
    let acceptor = Acceptor {
        store: core.store.clone(),
        queue: core.queue.clone(),
        handoff: core.queue.clone(),
        limiter: Limiter::new(core.config.limits, core.store.clone(), None),
        depths: QueueDepths::default(),
        settings: AcceptSettings {
            redrive_after: core.config.redrive_after,
            max_queue_depth: 0,
            handoff_limit: 0,
            max_content_bytes: core.config.max_content_bytes,
        },
        sealer: core.config.sealer(),
    };
    let auth = NotifierAuth::verified(notifier.clone(), &["notify"]);
    let body = json!({
        "targets": {"registrations": targets},
        "notification": {"title": "Approve the payment?"},
        "ttl_seconds": ttl,
    });
    acceptor
        .accept(&auth, None, body)
        .await
        .expect("accepted")
        .id
}

/// Works every task waiting in the queue once; returns how many there were.
async fn work_queue(dispatcher: &Dispatcher) -> usize {
    let leased = dispatcher
        .queue
        .pop(100, Duration::from_millis(10))
        .await
        .expect("pop");
    let n = leased.len();
    for task in leased {
        work(dispatcher, task, &dispatcher.queue).await;
    }
    n
}

/// (state, reason, attempts) of the one delivery of `notification`.
async fn delivery(core: &Core, notification: &str) -> (String, Option<String>, i32) {
    let rows = core
        .store
        .delivery_page(notification, "", 10, false)
        .await
        .expect("page");
    assert_eq!(rows.len(), 1, "one target");
    let row = &rows[0];
    (row.state.clone(), row.reason.clone(), row.attempts)
}

#[tokio::test]
async fn a_direct_delivery_is_held_for_the_device_once_even_when_its_task_runs_twice() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let device = registration(core.store.as_ref(), &app, ProviderKind::Direct).await;
    let dispatcher = dispatcher(&core);
    let id = notify(&core, &notifier, &[&device], 60).await;
    let task = dispatcher
        .queue
        .pop(1, Duration::from_millis(10))
        .await
        .expect("pop")
        .remove(0);
    assert!(
        matches!(&task.task, Task::Carried(c) if c.notification.id == id && c.deliveries.len() == 1),
        "acceptance hands its own workers the notification and its delivery"
    );
    // Copies of the same task (the sweep's re-drive racing the original), as
    // carried and as ids another node would read back.
    let copy = crate::dispatch::Leased {
        task: task.task.clone(),
        receipt: String::new(),
    };
    let shared = crate::dispatch::Leased {
        task: task.task.clone().shareable(),
        receipt: String::new(),
    };
    work(&dispatcher, task, &dispatcher.queue).await;
    work(&dispatcher, copy, &dispatcher.queue).await;
    work(&dispatcher, shared, &dispatcher.queue).await;
    assert_eq!(delivery(&core, &id).await, ("held".into(), None, 1));
    let events = core
        .store
        .direct_events_after(&device, 0, crate::ids::now_millis(), 10)
        .await
        .expect("events");
    assert_eq!(events.len(), 1, "one event for the device");
    assert_eq!(events[0].notification_id, id);
}

#[tokio::test]
async fn without_a_credential_the_delivery_waits_behind_an_open_circuit() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let phone = registration(core.store.as_ref(), &app, ProviderKind::Apns).await;
    let dispatcher = dispatcher(&core);
    let id = notify(&core, &notifier, &[&phone], 600).await;
    assert_eq!(work_queue(&dispatcher).await, 1);
    let (state, reason, attempts) = delivery(&core, &id).await;
    // A credential error is the app's, not the device's: the attempt is given back.
    assert_eq!((state.as_str(), attempts), ("queued", 0));
    let reason = reason.unwrap_or_default();
    assert!(reason.contains("no APNs credential"), "{reason}");
    let now = crate::ids::now_millis();
    assert!(
        dispatcher
            .circuits
            .open_until(&app, ProviderKind::Apns, now)
            .is_some(),
        "the app's APNs circuit is open"
    );
    // Another notification meets the open circuit before sending: deferred, no attempt spent.
    let second = notify(&core, &notifier, &[&phone], 600).await;
    assert_eq!(work_queue(&dispatcher).await, 1);
    let (state, reason, attempts) = delivery(&core, &second).await;
    assert_eq!((state.as_str(), attempts), ("queued", 0));
    assert!(
        reason.unwrap_or_default().starts_with("circuit open"),
        "deferred by the circuit"
    );
}

#[tokio::test]
async fn invalid_deleted_and_expired_targets_finish_before_any_send() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let dispatcher = dispatcher(&core);
    let store = core.store.as_ref();

    let invalid = registration(store, &app, ProviderKind::Fcm).await;
    let to_invalid = notify(&core, &notifier, &[&invalid], 600).await;
    store
        .invalidate_registration(&invalid, "unregistered", crate::ids::now_millis())
        .await
        .expect("invalidate");

    let deleted = registration(store, &app, ProviderKind::Apns).await;
    let to_deleted = notify(&core, &notifier, &[&deleted], 600).await;
    assert!(store.delete_registration(&deleted).await.expect("delete"));

    let late = registration(store, &app, ProviderKind::Direct).await;
    let to_late = notify(&core, &notifier, &[&late], 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    assert_eq!(work_queue(&dispatcher).await, 3);
    let table = [
        (to_invalid, "invalid", "registration-invalid"),
        (to_deleted, "invalid", "registration-deleted"),
        (to_late, "expired", "ttl"),
    ];
    for (id, state, reason) in table {
        let (got, why, _) = delivery(&core, &id).await;
        assert_eq!(
            (got.as_str(), why.as_deref()),
            (state, Some(reason)),
            "{id}"
        );
        let counts = store.delivery_counts(&id).await.expect("counts");
        assert_eq!(counts.len(), 1);
        assert_eq!(DeliveryState::parse(state), Some(counts[0].0));
    }
    let events = store
        .direct_events_after(&late, 0, 0, 10)
        .await
        .expect("events");
    assert!(
        events.is_empty(),
        "an expired notification is not held for the device"
    );
}
