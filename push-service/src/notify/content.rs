//! Content for the inbox at acceptance: checked against the targets, then
//! sealed to each registration's encryption key and sealed again at rest.

use super::{AcceptError, Acceptor, Rejected};
use crate::inbox::{self, ContentRequest, Plan, Unsealable, MAX_CONTENT_TARGETS};
use crate::notification::TargetSpec;
use crate::store::{InboxItem, PendingDelivery};

/// Largest JWE a first attempt carries in the provider payload beside the
/// inbox id: APNs and FCM take 4 KiB in all, and the rest of the payload
/// needs room (the provider leaves the JWE out when the whole does not fit).
pub const INLINE_MAX: usize = 3072;

/// Most bytes one notification's sealed copies may take together: each
/// target gets its own copy, held in memory while the notification is
/// accepted and stored apart, so 1 MiB of content goes to at most 16 targets.
pub const MAX_SEALED_TOTAL: usize = 16 << 20;

/// Checks content against the rules and the notification's targets.
pub(super) fn plan(
    content: ContentRequest,
    targets: &TargetSpec,
    ttl_seconds: u64,
    max_bytes: usize,
) -> Result<Plan, AcceptError> {
    let invalid = |m: String| Err(AcceptError::Invalid(m));
    if ttl_seconds == 0 {
        return invalid(
            "`content` waits in the inbox until the TTL ends: `ttl_seconds` 0 leaves no time to fetch it"
                .into(),
        );
    }
    let TargetSpec::Registrations(ids) = targets else {
        return invalid(
            "`content` goes with `targets.registrations`: it is sealed to each target's key at acceptance"
                .into(),
        );
    };
    if ids.len() > MAX_CONTENT_TARGETS {
        return invalid(format!(
            "`content`: at most {MAX_CONTENT_TARGETS} `targets.registrations` (each gets its own sealed copy)"
        ));
    }
    if max_bytes == 0 {
        return invalid("`content` is turned off on this service (max_content_bytes = 0)".into());
    }
    let plan = inbox::check(content, max_bytes).map_err(|e| AcceptError::Invalid(e.0))?;
    let total = match &plan {
        Plan::Sealed(jwes) => {
            if let Some(stray) = jwes.keys().find(|id| ids.binary_search(id).is_err()) {
                return invalid(format!(
                    "`content.sealed.{stray}`: not among `targets.registrations`"
                ));
            }
            jwes.values().map(String::len).sum()
        }
        Plan::Plain(document) => inbox::max_jwe_bytes(document.len()) * ids.len(),
    };
    if total > MAX_SEALED_TOTAL {
        return invalid(format!(
            "`content`: {} targets' sealed copies would take {total} bytes, more than {MAX_SEALED_TOTAL}; \
             send the content to fewer targets per notification",
            ids.len()
        ));
    }
    Ok(plan)
}

/// The inbox items of one notification, and the targets that get none.
pub(super) struct Sealed {
    pub items: Vec<InboxItem>,
    pub rejected: Vec<Rejected>,
}

impl Acceptor {
    /// Seals the content for each of `deliveries`: those whose registration
    /// has no encryption key leave the deliveries as rejected
    /// (`no_encryption_key`); a notifier's JWE that does not fit its target's
    /// key refuses the notification. A JWE small enough rides on the first
    /// attempt's payload.
    pub(super) async fn seal(
        &self,
        plan: &Plan,
        app_id: &str,
        notification_id: &str,
        (created_at, expires_at): (i64, i64),
        deliveries: &mut Vec<PendingDelivery>,
    ) -> Result<Sealed, AcceptError> {
        let mut items = Vec::with_capacity(deliveries.len());
        let mut rejected = Vec::new();
        let mut kept = Vec::with_capacity(deliveries.len());
        for mut pending in deliveries.drain(..) {
            let registration = self
                .store
                .get_registration(&pending.registration_id)
                .await?;
            let jwk = registration
                .as_ref()
                .and_then(|r| r.encryption_jwk.as_deref());
            match inbox::seal_for(plan, &pending.registration_id, jwk) {
                Ok(jwe) => {
                    if jwe.len() <= INLINE_MAX {
                        pending.sealed = Some(jwe.as_str().into());
                    }
                    let aad = inbox::at_rest_aad(&pending.registration_id, notification_id);
                    items.push(InboxItem {
                        registration_id: pending.registration_id.clone(),
                        notification_id: notification_id.to_owned(),
                        app_id: app_id.to_owned(),
                        created_at,
                        expires_at,
                        size: jwe.len() as i64,
                        content: self.sealer.seal(jwe.as_bytes(), &aad),
                    });
                    kept.push(pending);
                }
                Err(Unsealable::NoKey) => rejected.push(Rejected {
                    registration: pending.registration_id,
                    reason: "no_encryption_key".into(),
                }),
                Err(Unsealable::Refused(why)) => return Err(AcceptError::Invalid(why)),
            }
        }
        *deliveries = kept;
        Ok(Sealed { items, rejected })
    }
}
