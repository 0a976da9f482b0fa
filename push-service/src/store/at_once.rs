//! A group of new notifications and delivery outcomes written as one
//! PostgreSQL statement, with no `BEGIN` and no `COMMIT`: one round trip where the
//! general path (`batch.rs`) makes five (`BEGIN`, the registrations'
//! `SELECT`, the inserts, the outcomes' `UPDATE`, `COMMIT`).
//!
//! A statement outside a transaction block is its own transaction: all of it
//! or none of it is written, and its answer comes after the commit, so a
//! `202` still means committed.
//!
//! Acceptance needs the registrations as they are (`Acceptance::build`). The
//! general path reads them in the group's transaction; this one builds from
//! the states that path read before ([`Known`]) and lets the statement check
//! them: a guard compares each registration used with its row (one index
//! lookup each: `LIMIT 1` keeps the planner from hashing the whole table),
//! and when one differs (rotated, invalidated, deleted) the statement writes
//! nothing and says so, and the group goes the general way, which reads them
//! afresh.
//!
//! Every list goes as an array (`unnest`), so the statement's text depends
//! only on the partitions it names: prepared once per connection and day,
//! not once per group size, and after five runs PostgreSQL keeps one plan for
//! it that does not know the arrays' lengths nor how large today's partition
//! has grown since it was last analyzed. The plan must be right anyway: each
//! registration and each updated delivery is looked up by its key in a
//! `LATERAL … LIMIT 1` (one index probe each; measured before it: a plan made
//! on a young partition scanned all 20,000 rows of it for every group, and
//! one that saw `state = 'queued'` read the whole partial index of queued
//! deliveries). An outcome is written to the row version it found; a row
//! changed meanwhile by another node is left as that node made it.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::pool::PoolConnection;

use super::batch::{prepare, Answer};
use super::partitions::Days;
use super::rows::NOTIFICATION_COLUMNS;
use super::sql::Insert;
use super::{Acceptance, Built, DeliveryUpdate, RegistrationState, StoreError};

/// Registrations as the last group that read them found them, by id: what
/// acceptance builds from when the group is written at once. Never trusted:
/// the statement checks every state it used.
#[derive(Default)]
pub struct Known {
    states: Mutex<HashMap<String, RegistrationState>>,
}

/// Most registrations [`Known`] holds; past it, it starts again empty. A
/// state is a few hundred bytes (ids, token), so this bounds it to a few MB.
const KNOWN_MOST: usize = 16_384;

impl Known {
    /// Keeps the states a group read.
    pub fn remember(&self, found: &HashMap<String, RegistrationState>) {
        let Ok(mut states) = self.states.lock() else {
            return;
        };
        if states.len() + found.len() > KNOWN_MOST {
            states.clear();
        }
        states.extend(found.iter().map(|(id, s)| (id.clone(), s.clone())));
    }

    /// Drops what is kept of `ids` (their states proved stale).
    pub(super) fn forget<'a>(&self, ids: impl Iterator<Item = &'a String>) {
        if let Ok(mut states) = self.states.lock() {
            for id in ids {
                states.remove(id);
            }
        }
    }

    /// The states of all of `ids`, or `None` when one is not known.
    fn all<'a>(
        &self,
        ids: impl Iterator<Item = &'a String>,
    ) -> Option<HashMap<String, RegistrationState>> {
        let states = self.states.lock().ok()?;
        let mut found = HashMap::new();
        for id in ids {
            found.insert(id.clone(), states.get(id)?.clone());
        }
        Some(found)
    }
}

/// The parts of a group [`write`] takes: notifications whose rows are made
/// (`inserts`), notifications built from their registrations (`accepts`),
/// delivery outcomes (`updates`), replay-cache keys (`remember`: place, key,
/// expiry, now; only SQLite writes them at once); `len` writes in all.
pub struct Group<'g, 'a> {
    pub inserts: &'g [Insert<'a>],
    pub accepts: &'g [(usize, &'a Acceptance)],
    pub updates: &'g [&'a DeliveryUpdate],
    pub remember: &'g [(usize, &'a str, i64, i64)],
    pub len: usize,
}

/// Writes a group as one statement. `None` when it cannot go so (a
/// registration not known, a build that fails, an idempotency key, rows of
/// several days, replay-cache keys: PostgreSQL keeps them only without
/// Redis, and refuses one key twice in a statement) or when a known
/// registration proved stale: nothing was written then, and the group takes
/// the general path.
pub(super) async fn write(
    conn: &mut PoolConnection<sqlx::Postgres>,
    days: &Days,
    known: &Known,
    group: Group<'_, '_>,
) -> Result<Option<Vec<Answer>>, StoreError> {
    if !group.remember.is_empty() {
        return Ok(None);
    }
    let Some((found, built)) = build(known, &group) else {
        return Ok(None);
    };
    let Some(rows) = rows(group.inserts, &built) else {
        return Ok(None);
    };
    let Some(statement) = Statement::of(days, &rows, group.updates) else {
        return Ok(None);
    };
    let sql = statement.sql();
    let answered = statement
        .query(&sql, &found, &rows, group.updates)
        .fetch_all(&mut **conn)
        .await?;
    if answered.iter().any(|(id,)| id.is_none()) {
        known.forget(group.registrations());
        return Ok(None);
    }
    let inserted = answered.into_iter().filter_map(|(id,)| id).collect();
    Ok(Some(answers(group.len, &rows, &inserted)))
}

/// A group's acceptances built from the known states of their
/// registrations, with those states: `None` when one is not known or a
/// build fails.
pub(super) type Ready = (HashMap<String, RegistrationState>, Vec<(usize, Built, i64)>);

/// Builds a group's acceptances from [`Known`] (see [`Ready`]).
pub(super) fn build(known: &Known, group: &Group<'_, '_>) -> Option<Ready> {
    let found = known.all(group.registrations())?;
    let mut built = Vec::with_capacity(group.accepts.len());
    for (i, acceptance) in group.accepts {
        built.push((*i, (acceptance.build)(&found).ok()?, acceptance.redrive_at));
    }
    Some((found, built))
}

/// The rows a group inserts: its own, then those `built`. `None` when one
/// has an idempotency key (keys are claimed in a statement of their own
/// first, `insert_notifications`).
pub(super) fn rows<'a>(
    inserts: &[Insert<'a>],
    built: &'a [(usize, Built, i64)],
) -> Option<Vec<Insert<'a>>> {
    let mut rows: Vec<Insert<'a>> = inserts.to_vec();
    rows.extend(built.iter().map(|(i, b, redrive_at)| {
        (
            *i,
            &b.row,
            b.deliveries.as_slice(),
            *redrive_at,
            Some(&b.audit),
        )
    }));
    if rows
        .iter()
        .any(|(_, row, ..)| row.idempotency_key.is_some())
    {
        return None;
    }
    Some(rows)
}

/// Every write of a group of `len` applied but the `rows` not `inserted`.
pub(super) fn answers(
    len: usize,
    rows: &[Insert<'_>],
    inserted: &std::collections::HashSet<String>,
) -> Vec<Answer> {
    let mut answers = vec![Answer::Applied; len];
    for (i, row, ..) in rows {
        if !inserted.contains(&row.id) {
            answers[*i] = Answer::NotApplied;
        }
    }
    answers
}

impl Group<'_, '_> {
    /// The registrations the group's acceptances are built from.
    pub(super) fn registrations(&self) -> impl Iterator<Item = &String> + '_ {
        self.accepts.iter().flat_map(|(_, a)| &a.registrations)
    }
}

/// The relations one statement writes: the new notifications' day, their
/// deliveries' day, the updated deliveries' day.
struct Statement {
    notifications: String,
    queued: String,
    updated: String,
}

type Rows<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, (Option<String>,), sqlx::postgres::PgArguments>;

impl Statement {
    /// `None` when the rows span more than one partition of a table. A table
    /// with no rows in the statement is named by the other rows' day.
    fn of(days: &Days, rows: &[Insert<'_>], updates: &[&DeliveryUpdate]) -> Option<Self> {
        let new: Vec<&str> = rows.iter().map(|(_, row, ..)| row.id.as_str()).collect();
        let old: Vec<&str> = updates.iter().map(|u| u.notification_id.as_str()).collect();
        let anchor = [*new.first().or(old.first())?];
        let new_ids: &[&str] = if new.is_empty() { &anchor } else { &new };
        let old_ids: &[&str] = if old.is_empty() { &anchor } else { &old };
        Some(Statement {
            notifications: days.shared("notifications", new_ids)?,
            queued: days.shared("deliveries", new_ids)?,
            updated: days.shared("deliveries", old_ids)?,
        })
    }

    fn sql(&self) -> String {
        let Statement {
            notifications,
            queued,
            updated,
        } = self;
        format!(
            "WITH g AS (SELECT 1 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::text[], $6::text[]) AS c(id, app_id, status, provider, token, environment) \
             LEFT JOIN LATERAL (SELECT r.app_id, r.status, r.provider, r.token, r.environment \
             FROM registrations r WHERE r.id = c.id LIMIT 1) AS r ON true \
             WHERE r.app_id IS DISTINCT FROM c.app_id OR r.status IS DISTINCT FROM c.status \
             OR r.provider IS DISTINCT FROM c.provider OR r.token IS DISTINCT FROM c.token \
             OR r.environment IS DISTINCT FROM c.environment), \
             n AS (INSERT INTO {notifications} ({NOTIFICATION_COLUMNS}) \
             SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::text[], $13::text[], $14::int8[], $15::text[], $16::int8[], $17::text[], \
             $18::text[], $19::int8[]) WHERE NOT EXISTS (SELECT 1 FROM g) \
             ON CONFLICT DO NOTHING RETURNING id), \
             q AS (INSERT INTO {queued} (notification_id, registration_id, state, attempts, \
             next_attempt_at, updated_at, created_at) \
             SELECT v.nid, v.rid, 'queued', 0, v.redrive, v.created, v.created \
             FROM unnest($20::text[], $21::text[], $22::int8[], $23::int8[]) \
             AS v(nid, rid, redrive, created) WHERE v.nid IN (SELECT id FROM n) \
             ON CONFLICT DO NOTHING), \
             a AS (INSERT INTO audit_log (at, actor, action, app_id, target, source, details) \
             SELECT * FROM unnest($24::int8[], $25::text[], $26::text[], $27::text[], \
             $28::text[], $29::text[], $30::text[]) AS v(at, actor, action, app_id, target, \
             source, details) WHERE v.target IN (SELECT id FROM n)), \
             u AS (UPDATE {updated} AS t SET state = v.state, reason = v.reason, \
             attempts = v.attempts, next_attempt_at = COALESCE(v.next_at, t.next_attempt_at), \
             updated_at = v.now FROM (SELECT v.*, x.row FROM unnest($31::text[], $32::text[], \
             $33::text[], $34::text[], $35::int4[], $36::int8[], $37::int8[]) \
             AS v(nid, rid, state, reason, attempts, next_at, now) \
             CROSS JOIN LATERAL (SELECT d.ctid AS row FROM {updated} d \
             WHERE d.notification_id = v.nid AND d.registration_id = v.rid \
             AND d.created_at BETWEEN $38 AND $39 AND d.state = 'queued' LIMIT 1) AS x) AS v \
             WHERE t.ctid = v.row AND NOT EXISTS (SELECT 1 FROM g)) \
             SELECT id FROM n UNION ALL SELECT NULL FROM g"
        )
    }

    /// The statement with its arrays: the registrations used, the rows, the
    /// deliveries, the audit entries, the outcomes.
    fn query<'q>(
        &self,
        sql: &'q str,
        found: &'q HashMap<String, RegistrationState>,
        inserts: &'q [Insert<'q>],
        updates: &'q [&'q DeliveryUpdate],
    ) -> Rows<'q> {
        let persistent = prepare::<sqlx::Postgres>(&self.notifications, "notifications")
            && prepare::<sqlx::Postgres>(&self.queued, "deliveries")
            && prepare::<sqlx::Postgres>(&self.updated, "deliveries");
        let mut q = sqlx::query_as(sql).persistent(persistent);
        let states: Vec<&RegistrationState> = found.values().collect();
        q = q
            .bind(column(&states, |s| s.id.as_str()))
            .bind(column(&states, |s| s.app_id.as_str()))
            .bind(column(&states, |s| s.status.as_str()))
            .bind(column(&states, |s| s.provider.as_deref()))
            .bind(column(&states, |s| s.token.as_deref()))
            .bind(column(&states, |s| s.environment.as_deref()));
        let rows: Vec<&super::NotificationRow> = inserts.iter().map(|(_, row, ..)| *row).collect();
        q = q
            .bind(column(&rows, |n| n.id.as_str()))
            .bind(column(&rows, |n| n.app_id.as_str()))
            .bind(column(&rows, |n| n.notifier_id.as_str()))
            .bind(column(&rows, |n| n.idempotency_key.as_deref()))
            .bind(column(&rows, |n| n.request_hash.as_str()))
            .bind(column(&rows, |n| n.targets.as_str()))
            .bind(column(&rows, |n| n.content.as_str()))
            .bind(column(&rows, |n| n.expires_at))
            .bind(column(&rows, |n| n.state.as_str()))
            .bind(column(&rows, |n| n.created_at))
            .bind(column(&rows, |n| n.response.as_deref()))
            .bind(column(&rows, |n| n.expand_cursor.as_deref()))
            .bind(column(&rows, |n| n.updated_at));
        let queued: Vec<(&str, &str, i64, i64)> = inserts
            .iter()
            .flat_map(|&(_, row, registrations, redrive_at, _)| {
                registrations
                    .iter()
                    .map(move |r| (row.id.as_str(), r.as_str(), redrive_at, row.created_at))
            })
            .collect();
        q = q
            .bind(column(&queued, |d| d.0))
            .bind(column(&queued, |d| d.1))
            .bind(column(&queued, |d| d.2))
            .bind(column(&queued, |d| d.3));
        let audits: Vec<&super::AuditEntry> = inserts.iter().filter_map(|(.., a)| *a).collect();
        q = q
            .bind(column(&audits, |e| e.at))
            .bind(column(&audits, |e| e.actor.as_str()))
            .bind(column(&audits, |e| e.action.as_str()))
            .bind(column(&audits, |e| e.app_id.as_deref()))
            .bind(column(&audits, |e| e.target.as_deref()))
            .bind(column(&audits, |e| e.source.as_deref()))
            .bind(column(&audits, |e| e.details.as_deref()));
        let (lo, hi) = crate::ids::created_span(updates.iter().map(|u| u.notification_id.as_str()));
        q.bind(column(updates, |u| u.notification_id.as_str()))
            .bind(column(updates, |u| u.registration_id.as_str()))
            .bind(column(updates, |u| u.state.as_str()))
            .bind(column(updates, |u| u.reason.as_deref()))
            .bind(column(updates, |u| u.attempts))
            .bind(column(updates, |u| u.next_attempt_at))
            .bind(column(updates, |u| u.now))
            .bind(lo)
            .bind(hi)
    }
}

/// One column of `rows`, as an array parameter.
fn column<T, C>(rows: &[T], f: impl Fn(&T) -> C) -> Vec<C> {
    rows.iter().map(f).collect()
}
