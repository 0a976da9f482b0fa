//! The pure part of acceptance: what a validated submission becomes — its
//! row, deliveries, audit entry and answer — given the registrations found.
//! The same functions run in the handler (fan-outs, inbox content) and in
//! the store's write (`Acceptor::deferred`), so both make the same rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::commit::Made;
use super::{AcceptError, Accepted, Rejected};
use crate::auth::notifier::NotifierAuth;
use crate::delivery::NotificationPhase;
use crate::notification::{Content, TargetSpec};
use crate::store::{AuditEntry, InboxItem, NotificationRow, PendingDelivery, RegistrationState};

/// A submission that passed validation and is not a replay.
pub(super) struct Draft {
    pub key: Option<String>,
    pub request_hash: String,
    pub targets: TargetSpec,
    pub targets_json: String,
    pub content: Content,
    /// `content` as the row stores it.
    pub content_json: String,
    pub ttl: u64,
    /// Content for the targets' inboxes, checked, not yet sealed.
    pub plan: Option<crate::inbox::Plan>,
}

/// What one draft becomes: its stored row and its deliveries.
pub(super) struct Prepared {
    pub row: NotificationRow,
    /// The row's content, parsed: what a carried task hands the worker.
    pub content: Content,
    pub deliveries: Vec<PendingDelivery>,
    pub inbox: Vec<InboxItem>,
    pub audit: AuditEntry,
    pub answer: Accepted,
}

/// Who a notification is from, as its rows name it.
pub(super) struct Who {
    pub app_id: String,
    pub notifier_id: String,
    pub source: Option<String>,
}

impl Who {
    pub(super) fn of(auth: &NotifierAuth) -> Who {
        Who {
            app_id: auth.app_id.clone(),
            notifier_id: auth.notifier.id.clone(),
            source: auth.source.clone(),
        }
    }
}

/// The deliveries, count and refusals of a send to registrations `ids` of
/// `app_id`, from the registrations found.
pub(super) fn unicast(
    app_id: &str,
    ids: &[String],
    states: &HashMap<String, RegistrationState>,
) -> (Vec<PendingDelivery>, i64, Vec<Rejected>) {
    let mut ok = Vec::with_capacity(ids.len());
    let mut rejected = Vec::new();
    for rid in ids {
        let reason = match states.get(rid) {
            Some(r) if r.app_id == app_id && r.active() => {
                ok.push(r.pending());
                continue;
            }
            Some(r) if r.app_id == app_id => "invalid",
            _ => "unknown",
        };
        rejected.push(Rejected {
            registration: rid.clone(),
            reason: reason.into(),
        });
    }
    let count = ok.len() as i64;
    (ok, count, rejected)
}

/// The row, audit entry and answer of notification `id` made at `now`.
pub(super) fn finish(
    who: &Who,
    draft: &Draft,
    (id, now): (String, i64),
    (deliveries, accepted, rejected): (Vec<PendingDelivery>, i64, Vec<Rejected>),
    inbox: Vec<InboxItem>,
) -> Result<Prepared, AcceptError> {
    let expires_at = now + (draft.ttl as i64) * 1000;
    let answer = Accepted {
        id: id.clone(),
        accepted,
        rejected,
    };
    let row = NotificationRow {
        id: id.clone(),
        app_id: who.app_id.clone(),
        notifier_id: who.notifier_id.clone(),
        idempotency_key: draft.key.clone(),
        request_hash: draft.request_hash.clone(),
        targets: draft.targets_json.clone(),
        content: draft.content_json.clone(),
        expires_at,
        state: match draft.targets {
            TargetSpec::Registrations(_) => NotificationPhase::Dispatching,
            _ => NotificationPhase::Expanding,
        }
        .as_str()
        .into(),
        created_at: now,
        // Read back only to answer a retry under the same key.
        response: match draft.key {
            Some(_) => Some(serde_json::to_string(&answer)?),
            None => None,
        },
        expand_cursor: None,
        updated_at: now,
    };
    let audit = AuditEntry {
        seq: 0,
        at: now,
        actor: format!("notifier:{}", who.notifier_id),
        action: "notification.create".into(),
        app_id: Some(who.app_id.clone()),
        target: Some(id),
        source: who.source.clone(),
        details: Some(format!("{{\"accepted\":{accepted}}}")),
    };
    Ok(Prepared {
        row,
        content: draft.content.clone(),
        deliveries,
        inbox,
        audit,
        answer,
    })
}

/// Whether the store builds a draft in its write (see `Acceptor::deferred`).
pub(super) fn folds(draft: &Draft) -> bool {
    matches!(draft.targets, TargetSpec::Registrations(_)) && draft.plan.is_none()
}

/// A draft's answer: known before the write, or made by the store's build.
pub(super) enum Answer {
    Ready(Accepted),
    Made(Arc<Mutex<Option<Made>>>),
}

impl Answer {
    pub(super) fn get(self) -> Option<Accepted> {
        match self {
            Answer::Ready(answer) => Some(answer),
            Answer::Made(made) => made
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|m| m.answer.clone()),
        }
    }
}
