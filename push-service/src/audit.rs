//! The audit log: state-changing actions of the operator and of notifiers, with
//! who, what, when and from where. Entries name ids and public metadata only,
//! never keys, tokens or payloads.

use serde_json::Value;

use crate::ids::now_millis;
use crate::store::AuditEntry;
use crate::store::Store;

/// Who did it: the operator or one notifier.
pub enum Actor<'a> {
    Operator,
    Notifier(&'a str),
}

impl Actor<'_> {
    fn name(&self) -> String {
        match self {
            Actor::Operator => "operator".to_owned(),
            Actor::Notifier(id) => format!("notifier:{id}"),
        }
    }
}

/// Appends an entry. The action itself has already committed, so a failed
/// audit write is logged loudly rather than turned into an error for the caller.
pub async fn record(
    store: &dyn Store,
    actor: Actor<'_>,
    source: Option<&str>,
    action: &str,
    app_id: Option<&str>,
    target: Option<&str>,
    details: Option<Value>,
) {
    let entry = AuditEntry {
        seq: 0,
        at: now_millis(),
        actor: actor.name(),
        action: action.to_owned(),
        app_id: app_id.map(str::to_owned),
        target: target.map(str::to_owned),
        source: source.map(str::to_owned),
        details: details.map(|d| d.to_string()),
    };
    if let Err(e) = store.audit(&entry).await {
        metrics::counter!(crate::telemetry::names::AUDIT_WRITE_FAILURES).increment(1);
        tracing::error!(error = %e, action, "audit entry not written");
    }
}
