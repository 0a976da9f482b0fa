//! The hot writes that share group commits (`group.rs` is the writer), and
//! the statements one group of them becomes.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{ColumnIndex, Encode, IntoArguments, Pool, Type};

use super::backend::{keyed_join, row_placeholders, Column, SqlBackend};
use super::group::{Executor, GroupWriter};
use super::partitions::{pieces, Days};
use super::{
    AuditEntry, ChunkClaim, ChunkDone, DeliveryUpdate, DirectHold, NotificationRow, StoreError,
};

/// The writer of the hot writes.
pub type HotWriter = GroupWriter<Write, Answer>;

/// What one write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Applied,
    /// Not applied: a replayed key, a colliding notification, a claim lost.
    NotApplied,
    /// A direct-channel event: its sequence number, or none when it was held already.
    Held(Option<i64>),
}

impl Answer {
    pub fn applied(self) -> bool {
        !matches!(self, Answer::NotApplied | Answer::Held(None))
    }
}

/// One write that can share a transaction with others.
#[derive(Debug, Clone)]
pub enum Write {
    /// Replay cache: applied means "first use".
    RememberOnce {
        key: String,
        expires_at: i64,
        now: i64,
    },
    /// A notification with its queued deliveries: not applied means an
    /// idempotency-key (or id) collision.
    InsertNotification {
        row: Box<NotificationRow>,
        registrations: Vec<String>,
        redrive_at: i64,
        /// Written with the notification, when it is inserted.
        audit: Option<Box<AuditEntry>>,
    },
    /// A notification built from its registrations as the group's
    /// transaction finds them, then inserted as `InsertNotification` is.
    Accept(Box<super::Acceptance>),
    /// Outcome of one delivery attempt (applied only while still queued).
    UpdateDelivery(DeliveryUpdate),
    /// A queued delivery taken for one attempt.
    ClaimDelivery(DeliveryClaim),
    /// An audit-log entry (always applied).
    Audit(Box<AuditEntry>),
    /// A notification held for a device on the direct channel (its delivery
    /// becomes `held`, its row written if it had none).
    HoldDirect(Box<DirectHold>),
    /// A fan-out chunk taken for one run.
    ClaimChunk(ChunkClaim),
    /// A fan-out target's first outcome other than `sent`: its delivery row.
    FirstOutcome(DeliveryUpdate),
    /// A fan-out chunk's run is over.
    FinishChunk(ChunkDone),
    /// A held event written to its device's stream: the delivery becomes
    /// `sent` and the device's cursor moves past it (never back).
    Streamed {
        /// `(registration, notification, seq)`
        events: Vec<(String, String, i64)>,
        now: i64,
    },
}

pub use super::rows::{DeliveryClaim, RegistrationGuard};

use super::sql::Insert;

/// A group's writes by kind, each with its place in the group (one
/// exhaustive match, so a new kind of write cannot be left out).
#[derive(Default)]
struct Sorted<'a> {
    remember: Vec<(usize, &'a str, i64, i64)>,
    inserts: Vec<Insert<'a>>,
    accepts: Vec<(usize, &'a super::Acceptance)>,
    audits: Vec<&'a AuditEntry>,
    claims: Vec<(usize, &'a DeliveryClaim)>,
    updates: Vec<&'a DeliveryUpdate>,
    holds: Vec<(usize, &'a DirectHold)>,
    streamed: Vec<(&'a str, &'a str, i64, i64)>,
    chunk_claims: Vec<(usize, &'a ChunkClaim)>,
    first_outcomes: Vec<&'a DeliveryUpdate>,
    chunks_done: Vec<&'a ChunkDone>,
}

impl Sorted<'_> {
    /// Whether the group holds new notifications, outcomes and replay-cache
    /// keys and nothing else (what [`SqlBackend::write_at_once`] takes).
    fn at_once(&self) -> bool {
        let Sorted {
            remember,
            inserts,
            accepts,
            audits,
            claims,
            updates,
            holds,
            streamed,
            chunk_claims,
            first_outcomes,
            chunks_done,
        } = self;
        [inserts.len(), accepts.len(), updates.len(), remember.len()] != [0; 4]
            && audits.is_empty()
            && claims.is_empty()
            && holds.is_empty()
            && streamed.is_empty()
            && chunk_claims.is_empty()
            && first_outcomes.is_empty()
            && chunks_done.is_empty()
    }
}

fn sort(writes: &[Write]) -> Sorted<'_> {
    let mut sorted = Sorted::default();
    for (i, write) in writes.iter().enumerate() {
        match write {
            Write::RememberOnce {
                key,
                expires_at,
                now,
            } => sorted.remember.push((i, key, *expires_at, *now)),
            Write::InsertNotification {
                row,
                registrations,
                redrive_at,
                audit,
            } => sorted
                .inserts
                .push((i, row, registrations, *redrive_at, audit.as_deref())),
            Write::Accept(acceptance) => sorted.accepts.push((i, acceptance)),
            Write::UpdateDelivery(update) => sorted.updates.push(update),
            Write::ClaimDelivery(claim) => sorted.claims.push((i, claim)),
            Write::Audit(entry) => sorted.audits.push(entry),
            Write::HoldDirect(hold) => sorted.holds.push((i, hold)),
            Write::ClaimChunk(claim) => sorted.chunk_claims.push((i, claim)),
            Write::FirstOutcome(outcome) => sorted.first_outcomes.push(outcome),
            Write::FinishChunk(done) => sorted.chunks_done.push(done),
            Write::Streamed { events, now } => {
                sorted
                    .streamed
                    .extend(events.iter().map(|(registration, notification, seq)| {
                        (registration.as_str(), notification.as_str(), *seq, *now)
                    }))
            }
        }
    }
    sorted
}

/// The executor of a store whose writer has `pool` of its own: each group in
/// one transaction, on a connection the writer holds (`held.rs`).
pub(super) fn executor<DB>(pool: Pool<DB>, days: Arc<Days>) -> Executor<Write, Answer>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    String: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    let known = Arc::new(super::at_once::Known::default());
    let held = Arc::new(super::held::Held::new(pool));
    Arc::new(move |writes| {
        let (held, days, known) = (held.clone(), days.clone(), known.clone());
        Box::pin(async move {
            let mut conn = held.take().await?;
            let written = write_group(&mut conn, &days, &known, &writes).await;
            match written {
                Ok(_) => held.give(conn),
                Err(_) => held.give_up(),
            }
            written
        })
    })
}

/// Writes a group with as few statements as it can: notifications, their
/// deliveries and audit entries as multi-row inserts, claims and outcomes as
/// one `UPDATE … FROM (VALUES …)` per chunk, direct-channel events and their
/// streaming likewise. Returns what each write did.
async fn write_group<DB>(
    conn: &mut PoolConnection<DB>,
    days: &Days,
    known: &super::at_once::Known,
    writes: &[Write],
) -> Result<Vec<Answer>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    String: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    let sorted = sort(writes);
    if sorted.at_once() {
        let group = super::at_once::Group {
            inserts: &sorted.inserts,
            accepts: &sorted.accepts,
            updates: &sorted.updates,
            remember: &sorted.remember,
            len: writes.len(),
        };
        if let Some(answers) = DB::write_at_once(conn, days, known, group).await? {
            return Ok(answers);
        }
    }
    let mut tx = sqlx::Connection::begin_with(&mut **conn, DB::BEGIN_WRITE).await?;
    let mut applied = vec![Answer::Applied; writes.len()];

    // Replay-cache entries one by one: the same key twice in a group must see the first.
    for &(i, key, expires_at, now) in &sorted.remember {
        // Expired entries are removed now and then.
        if super::sql::sweep_expired_keys() {
            sqlx::query("DELETE FROM replay_cache WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(
            "INSERT INTO replay_cache (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE replay_cache.expires_at < $3",
        )
        .bind(key)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) != 1 {
            applied[i] = Answer::NotApplied;
        }
    }

    // Acceptances: their registrations read in this transaction (one
    // statement for the group), their rows built, inserted with the rest.
    let built = super::sql::build_acceptances(&mut tx, &sorted.accepts, known).await?;
    let mut inserts = sorted.inserts;
    inserts.extend(built.iter().map(|(i, b, redrive_at)| {
        (
            *i,
            &b.row,
            b.deliveries.as_slice(),
            *redrive_at,
            Some(&b.audit),
        )
    }));
    let mut audits = sorted.audits;
    super::sql::insert_notifications(&mut tx, days, &inserts, &mut applied, &mut audits).await?;
    for chunk in audits.chunks(100) {
        let values = row_placeholders(chunk.len(), 7);
        let sql = format!(
            "INSERT INTO audit_log (at, actor, action, app_id, target, source, details) \
             VALUES {values}"
        );
        let mut query = sqlx::query(&sql);
        for e in chunk {
            query = query
                .bind(e.at)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.app_id)
                .bind(&e.target)
                .bind(&e.source)
                .bind(&e.details);
        }
        query.execute(&mut *tx).await?;
    }

    // Claims: applied only where the attempt count is still the one read (and,
    // for a guarded claim, the registration is still active with its token).
    let claims = first_of_each(&sorted.claims, &mut applied, |c| {
        (&c.notification_id, &c.registration_id)
    });
    let by_day = days.group("deliveries", &claims, |(_, c)| &c.notification_id);
    for (relation, chunk) in pieces(&by_day, 100) {
        // VALUES columns are column1…columnN in both SQLite and PostgreSQL.
        let join = deliveries_join::<DB>(relation, chunk.len(), 7);
        let sql = format!(
            "UPDATE {relation} AS d SET attempts = d.attempts + 1, next_attempt_at = v.column4 \
             {join} AND d.attempts = v.column3 AND d.state = 'queued' \
             AND (v.column5 IS NULL OR d.next_attempt_at = v.column5) \
             AND (v.column6 = 0 OR EXISTS (SELECT 1 FROM registrations r \
                  WHERE r.id = d.registration_id AND r.status = 'active' \
                  AND r.token IS NOT DISTINCT FROM v.column7)) \
             RETURNING notification_id, registration_id"
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql)
            .persistent(prepare::<DB>(relation, "deliveries"));
        for (_, claim) in chunk.iter().copied() {
            query = query
                .bind(&claim.notification_id)
                .bind(&claim.registration_id)
                .bind(claim.attempts)
                .bind(claim.lease)
                .bind(claim.due)
                .bind(i32::from(claim.unchanged.is_some()))
                .bind(claim.unchanged.as_ref().and_then(|g| g.token.clone()));
        }
        let (lo, hi) =
            crate::ids::created_span(chunk.iter().map(|(_, c)| c.notification_id.as_str()));
        query = query.bind(lo).bind(hi);
        let taken: std::collections::HashSet<(String, String)> =
            query.fetch_all(&mut *tx).await?.into_iter().collect();
        for (i, claim) in chunk.iter().copied() {
            if !taken.contains(&(claim.notification_id.clone(), claim.registration_id.clone())) {
                applied[*i] = Answer::NotApplied;
            }
        }
    }

    // Outcomes: applied only to deliveries still queued.
    let by_day = days.group("deliveries", &sorted.updates, |u| &u.notification_id);
    for (relation, chunk) in pieces(&by_day, 100) {
        let join = deliveries_join::<DB>(relation, chunk.len(), 7);
        let sql = format!(
            "UPDATE {relation} AS d SET state = v.column3, reason = v.column4, \
             attempts = v.column5, next_attempt_at = COALESCE(v.column6, d.next_attempt_at), \
             updated_at = v.column7 {join} AND d.state = 'queued'"
        );
        let mut query = sqlx::query(&sql).persistent(prepare::<DB>(relation, "deliveries"));
        for update in chunk.iter().copied() {
            query = query
                .bind(&update.notification_id)
                .bind(&update.registration_id)
                .bind(update.state.as_str())
                .bind(&update.reason)
                .bind(update.attempts)
                .bind(update.next_attempt_at)
                .bind(update.now);
        }
        let (lo, hi) = crate::ids::created_span(chunk.iter().map(|u| u.notification_id.as_str()));
        query.bind(lo).bind(hi).execute(&mut *tx).await?;
    }
    super::sql::hold_direct(&mut tx, days, &sorted.holds, &mut applied).await?;
    super::sql::record_streamed(&mut tx, days, &sorted.streamed).await?;
    // Chunks: claims, then first outcomes, then the runs closed (a run's
    // outcomes are awaited before its close is sent, so never in a later group).
    super::sql::claim_chunks(&mut tx, &sorted.chunk_claims, &mut applied).await?;
    super::sql::insert_first_outcomes(&mut tx, &sorted.first_outcomes).await?;
    super::sql::finish_chunks(&mut tx, &sorted.chunks_done).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Whether a statement on `relation` keeps a prepared statement: always on a
/// day's partition or a plain table; on a partitioned `table` itself only
/// where the backend wants it ([`SqlBackend::PREPARE_PARTITIONED`]).
pub(super) fn prepare<DB: SqlBackend>(relation: &str, table: &str) -> bool {
    relation != table || DB::PREPARE_PARTITIONED
}

/// [`keyed_join`] of an update on `relation` (the deliveries or one of their
/// days, as `d`) to `rows` rows of `cols` values, the first two a delivery's
/// key, the span of creation times bound after them.
pub(super) fn deliveries_join<DB: SqlBackend>(relation: &str, rows: usize, cols: usize) -> String {
    keyed_join::<DB>(
        relation,
        "d",
        &row_placeholders(rows, cols),
        &["notification_id", "registration_id"],
        Some(rows * cols),
    )
}

/// The first claim of each key among a group's `(place, claim)`s; the places
/// of later claims of the same key are answered `NotApplied`. An
/// `UPDATE … FROM (VALUES …)` joining two rows to one target applies either
/// row's values and returns the target once, so two claims of one row in one
/// statement would both seem taken.
pub(super) fn first_of_each<'a, T, K: std::hash::Hash + Eq>(
    claims: &[(usize, &'a T)],
    answers: &mut [Answer],
    key: impl Fn(&'a T) -> K,
) -> Vec<(usize, &'a T)> {
    let mut seen = std::collections::HashSet::new();
    let mut first = Vec::with_capacity(claims.len());
    for &(i, claim) in claims {
        if seen.insert(key(claim)) {
            first.push((i, claim));
        } else {
            answers[i] = Answer::NotApplied;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(action: &str) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: 1,
            actor: "operator".into(),
            action: action.into(),
            app_id: None,
            target: None,
            source: None,
            details: None,
        }
    }

    #[test]
    fn every_write_lands_in_its_group_with_its_place() {
        let row = NotificationRow {
            id: "n1".into(),
            app_id: "a".into(),
            notifier_id: "k".into(),
            idempotency_key: None,
            request_hash: "h".into(),
            targets: "{}".into(),
            content: "{}".into(),
            expires_at: 9,
            state: "dispatching".into(),
            created_at: 1,
            response: None,
            expand_cursor: None,
            updated_at: 1,
        };
        let claim = DeliveryClaim {
            notification_id: "n1".into(),
            registration_id: "r1".into(),
            attempts: 0,
            due: None,
            lease: 5,
            unchanged: None,
        };
        let update = DeliveryUpdate {
            notification_id: "n1".into(),
            registration_id: "r1".into(),
            state: crate::delivery::DeliveryState::Sent,
            reason: None,
            attempts: 1,
            next_attempt_at: None,
            now: 2,
        };
        let writes = vec![
            Write::Audit(Box::new(audit("a.first"))),
            Write::ClaimDelivery(claim.clone()),
            Write::InsertNotification {
                row: Box::new(row),
                registrations: vec!["r1".into()],
                redrive_at: 7,
                audit: Some(Box::new(audit("notification.create"))),
            },
            Write::RememberOnce {
                key: "jti".into(),
                expires_at: 3,
                now: 1,
            },
            Write::UpdateDelivery(update.clone()),
        ];
        let sorted = sort(&writes);
        assert_eq!(sorted.remember, vec![(3, "jti", 3, 1)]);
        assert_eq!(sorted.inserts.len(), 1);
        assert_eq!(sorted.inserts[0].0, 2);
        assert_eq!(sorted.inserts[0].3, 7);
        assert_eq!(
            sorted.inserts[0].4.map(|a| a.action.as_str()),
            Some("notification.create")
        );
        assert_eq!(
            sorted.audits.len(),
            1,
            "the notification's audit goes with it"
        );
        assert_eq!(sorted.claims, vec![(1, &claim)]);
        assert_eq!(sorted.updates, vec![&update]);
    }
}
