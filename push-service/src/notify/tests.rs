//! The acceptor without a server: a real SQLite store, the in-process queue,
//! the limiter with the configuration's defaults.

use std::time::Duration;

use serde_json::json;

use super::{AcceptError, AcceptSettings, Acceptor};
use crate::auth::notifier::NotifierAuth;
use crate::delivery::ProviderKind;
use crate::dispatch::{Queue, QueueDepths, Task};
use crate::limits::Limiter;
use crate::testing::{app_with_notifier, core, registration, Core};

fn acceptor(core: &Core, max_queue_depth: u64) -> Acceptor {
    Acceptor {
        store: core.store.clone(),
        queue: core.queue.clone(),
        handoff: core.queue.clone(),
        limiter: Limiter::new(core.config.limits, core.store.clone(), None),
        depths: QueueDepths::default(),
        settings: AcceptSettings {
            redrive_after: core.config.redrive_after,
            max_queue_depth,
            handoff_limit: 0,
            max_content_bytes: core.config.max_content_bytes,
        },
        sealer: core.config.sealer(),
    }
}

/// Every task waiting in the queue.
async fn queued(core: &Core) -> Vec<Task> {
    let mut tasks = Vec::new();
    loop {
        let leased = core
            .queue
            .pop(100, Duration::from_millis(10))
            .await
            .expect("pop");
        if leased.is_empty() {
            return tasks;
        }
        // What a carried task holds beyond the ids is checked where it is used.
        tasks.extend(leased.into_iter().map(|l| l.task.shareable()));
    }
}

#[tokio::test]
async fn a_unicast_is_stored_with_its_deliveries_and_queued() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let apns = registration(core.store.as_ref(), &app, ProviderKind::Apns).await;
    let direct = registration(core.store.as_ref(), &app, ProviderKind::Direct).await;
    let auth = NotifierAuth::verified(notifier, &["notify"]);
    let body = json!({
        "targets": {"registrations": [apns, direct, "reg_unknown"]},
        "notification": {"title": "Sign in?"},
        "ttl_seconds": 60,
    });
    let accepted = acceptor(&core, 0)
        .accept(&auth, None, body)
        .await
        .expect("accepted");
    assert_eq!(accepted.accepted, 2);
    assert_eq!(accepted.rejected.len(), 1);
    assert_eq!(accepted.rejected[0].reason, "unknown");

    let row = core
        .store
        .get_notification(&accepted.id)
        .await
        .expect("read")
        .expect("stored");
    assert!(!row.is_expanding());
    assert!(row.expires_at - row.created_at == 60_000);
    let counts = core
        .store
        .delivery_counts(&accepted.id)
        .await
        .expect("counts");
    assert_eq!(counts, vec![(crate::delivery::DeliveryState::Queued, 2)]);
    match queued(&core).await.as_slice() {
        [Task::Deliver {
            notification,
            registrations,
            due,
        }] => {
            assert_eq!(notification, &accepted.id);
            assert_eq!(registrations.len(), 2);
            assert!(
                due.is_some(),
                "a task carries the version it claims against"
            );
        }
        other => panic!("one deliver task expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_whole_app_send_is_queued_for_expansion() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    for _ in 0..3 {
        registration(core.store.as_ref(), &app, ProviderKind::Direct).await;
    }
    let auth = NotifierAuth::verified(notifier, &["notify"]);
    let body = json!({"targets": {"all": true}, "notification": {"title": "t"}});
    let accepted = acceptor(&core, 0)
        .accept(&auth, None, body)
        .await
        .expect("accepted");
    assert_eq!(accepted.accepted, 3);
    let row = core
        .store
        .get_notification(&accepted.id)
        .await
        .expect("read")
        .expect("stored");
    assert!(row.is_expanding());
    assert!(matches!(
        queued(&core).await.as_slice(),
        [Task::Expand { notification }] if notification == &accepted.id
    ));
}

#[tokio::test]
async fn an_idempotency_key_answers_the_same_request_once_and_refuses_another() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let device = registration(core.store.as_ref(), &app, ProviderKind::Direct).await;
    let auth = NotifierAuth::verified(notifier, &["notify"]);
    let acceptor = acceptor(&core, 0);
    let body = json!({"targets": {"registrations": [device]}, "notification": {"title": "t"}});
    let first = acceptor
        .accept(&auth, Some("k-1"), body.clone())
        .await
        .expect("first");
    let again = acceptor
        .accept(&auth, Some("k-1"), body)
        .await
        .expect("retry");
    assert_eq!(first.id, again.id, "a retry gets the first answer");
    assert_eq!(queued(&core).await.len(), 1, "and queues nothing more");
    let other = json!({"targets": {"registrations": [device]}, "notification": {"title": "u"}});
    assert!(matches!(
        acceptor.accept(&auth, Some("k-1"), other).await,
        Err(AcceptError::KeyReused)
    ));
}

#[tokio::test]
async fn refusals_name_their_cause_and_store_nothing() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let device = registration(core.store.as_ref(), &app, ProviderKind::Apns).await;
    let auth = NotifierAuth::verified(notifier, &["notify"]);
    let cases = [
        (
            json!({"targets": {"registrations": [device]}, "notification": {"title": "t"}, "ttl_seconds": 2419201}),
            "ttl_seconds",
        ),
        (
            json!({"targets": {"registrations": [device], "all": true}}),
            "targets",
        ),
        (
            json!({"targets": {"registrations": [device]}, "data": {"from": "x"}}),
            "from",
        ),
        (json!({"targets": {"aliases": [""]}}), "targets.aliases"),
        (
            json!({"targets": {"registrations": [device]}, "colour": 1}),
            "colour",
        ),
    ];
    let acceptor = acceptor(&core, 0);
    for (body, field) in cases {
        match acceptor.accept(&auth, None, body.clone()).await {
            Err(AcceptError::Invalid(why)) => assert!(why.contains(field), "{body}: {why}"),
            other => panic!("{body}: expected a refusal naming `{field}`, got {other:?}"),
        }
    }
    assert!(queued(&core).await.is_empty());
}

#[tokio::test]
async fn a_backlog_over_max_queue_depth_is_refused_until_it_drains() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let device = registration(core.store.as_ref(), &app, ProviderKind::Direct).await;
    let auth = NotifierAuth::verified(notifier, &["notify"]);
    let acceptor = acceptor(&core, 2);
    let body = json!({"targets": {"registrations": [device]}, "notification": {"title": "t"}});
    let depths = acceptor.depths.clone();
    depths.set(3, Default::default());
    assert!(matches!(
        acceptor.accept(&auth, None, body.clone()).await,
        Err(AcceptError::Behind(why)) if why.contains("max_queue_depth = 2")
    ));
    depths.set(0, [(app.clone(), 3)].into());
    assert!(
        matches!(acceptor.accept(&auth, None, body.clone()).await, Err(AcceptError::Behind(why)) if why.contains("this app")),
        "an app's own backlog refuses it alone"
    );
    depths.set(0, Default::default());
    acceptor
        .accept(&auth, None, body)
        .await
        .expect("accepted once the queue drained");
}

#[tokio::test]
async fn a_caller_gone_during_the_commit_still_gets_its_notification_queued() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let device = registration(core.store.as_ref(), &app, ProviderKind::Direct).await;
    let auth = NotifierAuth::verified(notifier, &["notify"]);
    let acceptor = acceptor(&core, 0);
    let body = json!({"targets": {"registrations": [device]}, "notification": {"title": "t"}});
    // The caller goes away after 0, 50, 100, … µs: some requests end before
    // anything is written, some while their write is being committed, some
    // after their answer. Whatever was committed must have its task queued.
    for step in 0..200u64 {
        let accept = acceptor.accept(&auth, None, body.clone());
        let _ = tokio::time::timeout(Duration::from_micros(step * 50), accept).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued_tasks: usize = queued(&core)
        .await
        .iter()
        .map(|task| match task {
            Task::Deliver { registrations, .. } => registrations.len(),
            Task::Expand { .. } | Task::Chunk { .. } | Task::Carried(_) => 0,
        })
        .sum();
    let (apps, _) = core.store.queue_stats(i64::MAX).await.expect("stats");
    let committed: i64 = apps.iter().map(|(_, queued, _)| queued).sum();
    assert!(committed > 0, "some requests were committed");
    assert_eq!(
        queued_tasks as i64, committed,
        "every committed notification has its task, caller or not"
    );
}

#[tokio::test]
async fn a_batch_answers_each_notification_in_order_and_stores_only_the_good_ones() {
    let core = core("").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let device = registration(core.store.as_ref(), &app, ProviderKind::Apns).await;
    let other = registration(core.store.as_ref(), &app, ProviderKind::Fcm).await;
    let auth = NotifierAuth::verified(notifier, &["notify"]);
    let acceptor = acceptor(&core, 0);
    let good = |title: &str, to: &str| json!({"targets": {"registrations": [to]}, "notification": {"title": title}});
    let first = acceptor
        .accept(&auth, Some("k-first"), good("one", &device))
        .await
        .expect("accepted alone");
    let submission = |key: Option<&str>, body: serde_json::Value| super::Submission::Json {
        idempotency_key: key.map(str::to_owned),
        body,
    };
    let answers = acceptor
        .accept_batch(
            &auth,
            vec![
                submission(None, good("two", &device)),
                // A replay of an earlier request answers its first response.
                submission(Some("k-first"), good("one", &device)),
                // Refused as a provider would: an APNs alert needs something to show.
                submission(
                    None,
                    json!({"targets": {"registrations": [device]}, "push_type": "alert"}),
                ),
                submission(Some("k-first"), good("changed", &device)),
                submission(Some("k-new"), good("three", &other)),
                submission(None, json!({"targets": {"all": true}, "data": {"k": "v"}})),
            ],
        )
        .await
        .expect("the batch as a whole is accepted");
    assert_eq!(answers.len(), 6, "one answer per submission");
    let ids: Vec<Option<String>> = answers
        .iter()
        .map(|a| a.as_ref().ok().map(|a| a.id.clone()))
        .collect();
    assert!(ids[0].is_some());
    assert_eq!(ids[1].as_deref(), Some(first.id.as_str()), "replayed");
    assert!(matches!(answers[2], Err(AcceptError::Invalid(_))));
    assert!(matches!(answers[3], Err(AcceptError::KeyReused)));
    assert!(ids[4].is_some());
    assert_eq!(answers[5].as_ref().map(|a| a.accepted).ok(), Some(2));
    for id in [&ids[0], &ids[4], &ids[5]].into_iter().flatten() {
        assert!(
            core.store
                .get_notification(id)
                .await
                .expect("read")
                .is_some(),
            "{id} is stored"
        );
    }
    // first (alone) + two unicasts queued for delivery, the whole-app one for expansion.
    let tasks = queued(&core).await;
    let delivers = tasks
        .iter()
        .filter(|t| matches!(t, Task::Deliver { .. }))
        .count();
    let expands = tasks
        .iter()
        .filter(|t| matches!(t, Task::Expand { .. }))
        .count();
    assert_eq!((delivers, expands), (3, 1));
    // The new key is now known: the same batch item again is a replay.
    let again = acceptor
        .accept(&auth, Some("k-new"), good("three", &other))
        .await
        .expect("replayed");
    assert_eq!(Some(again.id), ids[4].clone());
}

#[tokio::test]
async fn a_batch_over_the_rate_limit_is_refused_whole_with_nothing_stored() {
    let core = core("rate_limit_notifier_notifications_per_second = 2\n").await;
    let (app, notifier) = app_with_notifier(core.store.as_ref(), "notify").await;
    let device = registration(core.store.as_ref(), &app, ProviderKind::Apns).await;
    let auth = NotifierAuth::verified(notifier, &["notify"]);
    let body = json!({"targets": {"registrations": [device]}, "notification": {"title": "t"}});
    let batch: Vec<_> = (0..50)
        .map(|_| super::Submission::Json {
            idempotency_key: None,
            body: body.clone(),
        })
        .collect();
    let refused = acceptor(&core, 0).accept_batch(&auth, batch).await;
    assert!(
        matches!(refused, Err(AcceptError::Limit(_))),
        "refused whole"
    );
    assert!(queued(&core).await.is_empty(), "nothing queued");
    let (apps, _) = core.store.queue_stats(i64::MAX).await.expect("stats");
    assert!(apps.is_empty(), "nothing stored");
}
