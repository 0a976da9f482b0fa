//! A group of new notifications, delivery outcomes and replay-cache keys
//! (single-use tokens' `jti`) written on SQLite as one hand-off to its
//! connection's thread: `BEGIN`, the registrations' check, the inserts, the
//! outcomes, the keys and `COMMIT` sent together as one text,
//! where the general path (`batch.rs`) sends each statement on its own and
//! waits for its answer (seven hand-offs for a group of acceptances and
//! outcomes).
//!
//! As on PostgreSQL (`at_once.rs`), acceptance is built from the states an
//! earlier group read ([`Known`]) and the statements check them: each writes
//! only where every registration used is as it was (checked once, by the
//! first), and the last one names those that are not. When one is not,
//! nothing was written, and the group goes the general way, which reads
//! them afresh. All of it holds SQLite's
//! write lock from `BEGIN IMMEDIATE`, so no registration changes between the
//! statements.
//!
//! Every list goes as one JSON array (`json_each`), so the text never
//! changes: prepared once per connection, whatever the group's size. The
//! general path's multi-row statements are a text per size, more than the
//! connection's statement cache holds.
//!
//! A notification id already taken (never seen: ids are random) fails the
//! insert; the transaction is then rolled back (or, should that fail, its
//! connection closed) and the group goes the general way, which answers that
//! notification `NotApplied`.

use sqlx::pool::PoolConnection;

use super::at_once::{build, rows, Group, Known};
use super::batch::Answer;
use super::rows::NOTIFICATION_COLUMNS;
use super::sql::Insert;
use super::StoreError;

/// The registrations (`$1`, `[id, app, status, provider, token,
/// environment]`) that are not as the group saw them.
const STALE: &str = "SELECT c.value->>0 FROM json_each($1) AS c WHERE NOT EXISTS \
    (SELECT 1 FROM registrations AS r WHERE r.id = c.value->>0 \
    AND r.app_id = c.value->>1 AND r.status = c.value->>2 AND r.provider IS c.value->>3 \
    AND r.token IS c.value->>4 AND r.environment IS c.value->>5)";

/// Whether any registration proved stale: the registrations are checked
/// once, into a table of the connection's own (`temp`, in memory), that
/// every statement after it reads. Checked in each statement, they were
/// read and compared six times a group (2.5–3.5 µs a registration each
/// time, measured alone).
const NONE_STALE: &str = "NOT EXISTS (SELECT 1 FROM temp.stale_registrations)";

/// The group's statements: the registrations' check, then notifications
/// (`$2`), their queued deliveries (`$3`), audit entries (`$4`), outcomes
/// (`$5`), replay-cache keys (`$6`, `[key, expires_at]`, taken where new or
/// expired at `$7`; the expired ones deleted first when `$8` is not 0), each
/// written only when no registration is stale; then the stale ones. Rows
/// answered: `(0, key)` for each key taken, `(1, registration)` for each
/// stale registration.
fn text() -> String {
    let notification: Vec<String> = (0..13).map(|i| format!("m.v->>{i}")).collect();
    let notification = notification.join(", ");
    // A row of many columns is taken from its list once (`MATERIALIZED`):
    // each `v.value` of `json_each` writes the row out as text again, so a
    // notification's 13 columns wrote it 13 times.
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS stale_registrations (id TEXT); \
         BEGIN IMMEDIATE; \
         DELETE FROM temp.stale_registrations; \
         INSERT INTO temp.stale_registrations (id) {STALE}; \
         WITH m(v) AS MATERIALIZED (SELECT value FROM json_each($2)) \
         INSERT INTO notifications ({NOTIFICATION_COLUMNS}) SELECT {notification} \
         FROM m WHERE {NONE_STALE}; \
         INSERT INTO deliveries (notification_id, registration_id, state, attempts, \
         next_attempt_at, updated_at, created_at) SELECT v.value->>0, v.value->>1, 'queued', 0, \
         v.value->>2, v.value->>3, v.value->>3 FROM json_each($3) AS v \
         WHERE {NONE_STALE}; \
         WITH m(v) AS MATERIALIZED (SELECT value FROM json_each($4)) \
         INSERT INTO audit_log (at, actor, action, app_id, target, source, details) \
         SELECT m.v->>0, m.v->>1, m.v->>2, m.v->>3, m.v->>4, m.v->>5, m.v->>6 \
         FROM m WHERE {NONE_STALE}; \
         UPDATE deliveries AS d SET state = v.value->>2, reason = v.value->>3, \
         attempts = v.value->>4, next_attempt_at = COALESCE(v.value->>5, d.next_attempt_at), \
         updated_at = v.value->>6 FROM json_each($5) AS v \
         WHERE d.notification_id = v.value->>0 AND d.registration_id = v.value->>1 \
         AND d.state = 'queued' AND {NONE_STALE}; \
         DELETE FROM replay_cache WHERE $8 <> 0 AND expires_at < $7; \
         INSERT INTO replay_cache (key, expires_at) SELECT v.value->>0, v.value->>1 \
         FROM json_each($6) AS v WHERE {NONE_STALE} \
         ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE replay_cache.expires_at < $7 RETURNING 0, key; \
         SELECT 1, id FROM temp.stale_registrations; \
         COMMIT"
    )
}

/// Writes a group in one hand-off. `None` when it cannot go so (a
/// registration not known, a build that fails, an idempotency key, an id
/// taken) or when a known registration proved stale: nothing was written
/// then, and the group takes the general path.
pub(super) async fn write(
    conn: &mut PoolConnection<sqlx::Sqlite>,
    known: &Known,
    group: Group<'_, '_>,
) -> Result<Option<Vec<Answer>>, StoreError> {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let Some((found, built)) = build(known, &group) else {
        return Ok(None);
    };
    let Some(rows) = rows(group.inserts, &built) else {
        return Ok(None);
    };
    let lists = Lists::of(&found, &rows, group.updates, group.remember)?;
    // The earliest `now` of the group's keys decides which stored keys have
    // expired; expired ones are deleted as often as the general path does.
    let now = group.remember.iter().map(|r| r.3).min().unwrap_or(0);
    let sweep = group
        .remember
        .iter()
        .any(|_| super::sql::sweep_expired_keys());
    let answered = sqlx::query_as::<_, (i64, Option<String>)>(TEXT.get_or_init(text))
        .bind(lists.registrations)
        .bind(lists.notifications)
        .bind(lists.deliveries)
        .bind(lists.audits)
        .bind(lists.updates)
        .bind(lists.remember)
        .bind(now)
        .bind(i32::from(sweep))
        .fetch_all(&mut **conn)
        .await;
    let answered = match answered {
        Ok(answered) => answered,
        Err(e) => {
            // A statement failed inside the open transaction: it is rolled
            // back before the connection writes anything else, or the
            // connection is closed (which rolls it back).
            let rolled_back = sqlx::query("ROLLBACK")
                .persistent(false)
                .execute(&mut **conn)
                .await;
            if rolled_back.is_err() {
                conn.close_on_drop();
                return Err(e.into());
            }
            return match e {
                sqlx::Error::Database(ref db) if db.is_unique_violation() => Ok(None),
                e => Err(e.into()),
            };
        }
    };
    let (taken, stale): (Vec<_>, Vec<_>) = answered.into_iter().partition(|(kind, _)| *kind == 0);
    if !stale.is_empty() {
        known.forget(group.registrations());
        return Ok(None);
    }
    // No `ON CONFLICT` for the rows: every one was inserted, or the text
    // failed above. A key is taken once: by its first write in the group.
    let mut taken: std::collections::HashSet<String> =
        taken.into_iter().filter_map(|(_, key)| key).collect();
    let mut answers = vec![Answer::Applied; group.len];
    for &(i, key, ..) in group.remember {
        if !taken.remove(key) {
            answers[i] = Answer::NotApplied;
        }
    }
    Ok(Some(answers))
}

/// A group's lists, each a JSON array of arrays.
struct Lists {
    registrations: String,
    notifications: String,
    deliveries: String,
    audits: String,
    updates: String,
    remember: String,
}

impl Lists {
    fn of(
        found: &std::collections::HashMap<String, super::RegistrationState>,
        rows: &[Insert<'_>],
        updates: &[&super::DeliveryUpdate],
        remember: &[(usize, &str, i64, i64)],
    ) -> Result<Self, StoreError> {
        let registrations: Vec<_> = found
            .values()
            .map(|s| {
                (
                    &s.id,
                    &s.app_id,
                    &s.status,
                    &s.provider,
                    &s.token,
                    &s.environment,
                )
            })
            .collect();
        let notifications: Vec<_> = rows
            .iter()
            .map(|(_, n, ..)| {
                (
                    &n.id,
                    &n.app_id,
                    &n.notifier_id,
                    &n.idempotency_key,
                    &n.request_hash,
                    &n.targets,
                    &n.content,
                    n.expires_at,
                    &n.state,
                    n.created_at,
                    &n.response,
                    &n.expand_cursor,
                    n.updated_at,
                )
            })
            .collect();
        let deliveries: Vec<_> = rows
            .iter()
            .flat_map(|&(_, n, registrations, redrive_at, _)| {
                registrations
                    .iter()
                    .map(move |r| (&n.id, r, redrive_at, n.created_at))
            })
            .collect();
        let audits: Vec<_> = rows
            .iter()
            .filter_map(|(.., a)| *a)
            .map(|e| {
                (
                    e.at, &e.actor, &e.action, &e.app_id, &e.target, &e.source, &e.details,
                )
            })
            .collect();
        let updates: Vec<_> = updates
            .iter()
            .map(|u| {
                (
                    &u.notification_id,
                    &u.registration_id,
                    u.state.as_str(),
                    &u.reason,
                    u.attempts,
                    u.next_attempt_at,
                    u.now,
                )
            })
            .collect();
        Ok(Lists {
            registrations: json(&registrations)?,
            notifications: json(&notifications)?,
            deliveries: json(&deliveries)?,
            audits: json(&audits)?,
            updates: json(&updates)?,
            remember: json(&remember.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>())?,
        })
    }
}

/// `rows` as a JSON array.
fn json<T: serde::Serialize>(rows: &T) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Other(e.into()))
}
