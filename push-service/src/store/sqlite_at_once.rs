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
//! A small group's lists go as parameters, in a text that holds 8 or 32
//! rows of each; a larger group's each as one JSON array (`json_each`), a
//! text for any size ([`Shape`]). So there are three texts, each prepared
//! once per connection, whatever the groups' sizes. The general path's
//! multi-row statements are a text per size, more than the connection's
//! statement cache holds.
//!
//! A notification id already taken (never seen: ids are random) fails the
//! insert; the transaction is then rolled back (or, should that fail, its
//! connection closed) and the group goes the general way, which answers that
//! notification `NotApplied`.

use std::sync::OnceLock;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteArguments;
use sqlx::Arguments;

use super::at_once::{build, rows, Group, Known};
use super::batch::Answer;
use super::rows::NOTIFICATION_COLUMNS;
use super::sql::Insert;
use super::StoreError;

/// Whether any registration proved stale: the registrations are checked
/// once, into a table of the connection's own (`temp`, in memory), that
/// every statement after it reads. Checked in each statement, they were
/// read and compared six times a group (2.5–3.5 µs a registration each
/// time, measured alone).
const NONE_STALE: &str = "NOT EXISTS (SELECT 1 FROM temp.stale_registrations)";

/// The columns of the group's lists, in the text's order: registrations
/// (`[id, app, status, provider, token, environment]`), notifications,
/// their queued deliveries, audit entries, outcomes and replay-cache keys
/// (`[key, expires_at]`).
const COLUMNS: [usize; 6] = [6, 13, 4, 7, 7, 2];

/// How many rows of each list a text of bound parameters holds: the
/// smallest that fits the group's longest list is used. A group with more
/// goes as JSON lists.
const CAPACITIES: [usize; 2] = [8, 32];

/// How a text takes its lists: as parameters, `capacity` rows of each (the
/// rows not used bound to `NULL` and passed over), or each as one JSON
/// array of arrays (`json_each`). Alone, parameters cost a fifth as much a
/// row (0.8 against 4.1–4.9 µs for a notification's): SQLite reads a JSON
/// row's columns by writing the row out as text and parsing it again. In
/// the service, small groups (unicast) gain by it; large ones do not: with
/// texts of up to 512 rows, batches of 100 wrote at the same pace either way
/// (sqlx copies every bound text and clears every parameter after each
/// statement) and the node held ~20 MiB more for the prepared statements.
/// The JSON text holds any number of rows.
#[derive(Clone, Copy)]
enum Shape {
    Bound(usize),
    Json,
}

impl Shape {
    /// The shape for lists of `lengths` rows.
    fn of(lengths: [usize; 6]) -> Self {
        let longest = lengths.into_iter().max().unwrap_or(0);
        CAPACITIES
            .into_iter()
            .find(|&capacity| capacity >= longest)
            .map_or(Shape::Json, Shape::Bound)
    }

    /// The text for this shape, built once.
    fn text(self) -> &'static str {
        static TEXTS: [OnceLock<String>; CAPACITIES.len() + 1] =
            [const { OnceLock::new() }; CAPACITIES.len() + 1];
        let slot = match self {
            Shape::Bound(capacity) => CAPACITIES.iter().position(|&c| c == capacity),
            Shape::Json => None,
        };
        TEXTS[slot.unwrap_or(CAPACITIES.len())].get_or_init(|| text(self))
    }
}

/// A list as a table `l(c0, c1, …)` for a `WITH`. The JSON shape's
/// parameters are named, `$N` numbered after `last`; the bound shape's are
/// `?`, which sqlx binds in order, statement after statement. SQLite finds a
/// named parameter by walking the statement's list of names: bound by name,
/// the parameters of groups of 512 rows (20,000) took longer than writing
/// them (1,100 notifications a second).
fn list(shape: Shape, columns: usize, last: &mut usize) -> String {
    let names: Vec<String> = (0..columns).map(|i| format!("c{i}")).collect();
    let names = names.join(", ");
    match shape {
        Shape::Json => {
            *last += 1;
            // A row of many columns is taken from its list once
            // (`MATERIALIZED`): each `value` of `json_each` writes the row
            // out as text again.
            let values: Vec<String> = (0..columns).map(|i| format!("m.v->>{i}")).collect();
            format!(
                "m(v) AS MATERIALIZED (SELECT value FROM json_each(${last})), \
                 l({names}) AS (SELECT {} FROM m)",
                values.join(", ")
            )
        }
        Shape::Bound(capacity) => {
            let rows: Vec<String> = (0..capacity)
                .map(|_| {
                    let row: Vec<&str> = (0..columns).map(|_| "?").collect();
                    format!("({})", row.join(", "))
                })
                .collect();
            format!("l({names}) AS (VALUES {})", rows.join(", "))
        }
    }
}

/// The group's statements: the registrations' check, then notifications,
/// their queued deliveries, audit entries, outcomes and replay-cache keys
/// (taken where new or expired at `now`; the expired ones deleted first when
/// `sweep` is not 0), each written only when no registration is stale; then
/// the stale ones. A list's rows are those whose first column is not
/// `NULL`. Rows answered: `(0, key)` for each key taken, `(1, registration)`
/// for each stale registration.
///
/// The outcomes find their deliveries by key: `+d.state` keeps SQLite's
/// planner from building an index of its own over every delivery for a
/// list of many rows (it chose to for 512 bound rows, without
/// `sqlite_stat1`).
fn text(shape: Shape) -> String {
    let mut last = 0;
    let [registrations, notifications, deliveries, audits, updates, keys] =
        COLUMNS.map(|columns| list(shape, columns, &mut last));
    // The bound shape takes `sweep`, `now`, the keys and `now` again, in
    // the order they appear (see [`bound`]).
    let (now, sweep) = match shape {
        Shape::Json => (format!("${}", last + 1), format!("${}", last + 2)),
        Shape::Bound(_) => ("?".to_owned(), "?".to_owned()),
    };
    let columns: Vec<String> = (0..13).map(|i| format!("c{i}")).collect();
    let columns = columns.join(", ");
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS stale_registrations (id TEXT); \
         BEGIN IMMEDIATE; \
         DELETE FROM temp.stale_registrations; \
         WITH {registrations} INSERT INTO temp.stale_registrations (id) \
         SELECT c.c0 FROM l AS c WHERE c.c0 IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM registrations AS r WHERE r.id = c.c0 AND r.app_id = c.c1 \
         AND r.status = c.c2 AND r.provider IS c.c3 AND r.token IS c.c4 \
         AND r.environment IS c.c5); \
         WITH {notifications} INSERT INTO notifications ({NOTIFICATION_COLUMNS}) \
         SELECT {columns} FROM l WHERE c0 IS NOT NULL AND {NONE_STALE}; \
         WITH {deliveries} INSERT INTO deliveries (notification_id, registration_id, state, \
         attempts, next_attempt_at, updated_at, created_at) \
         SELECT c0, c1, 'queued', 0, c2, c3, c3 FROM l WHERE c0 IS NOT NULL AND {NONE_STALE}; \
         WITH {audits} INSERT INTO audit_log (at, actor, action, app_id, target, source, details) \
         SELECT c0, c1, c2, c3, c4, c5, c6 FROM l WHERE c0 IS NOT NULL AND {NONE_STALE}; \
         WITH {updates} UPDATE deliveries AS d SET state = l.c2, reason = l.c3, \
         attempts = l.c4, next_attempt_at = COALESCE(l.c5, d.next_attempt_at), \
         updated_at = l.c6 FROM l WHERE l.c0 IS NOT NULL \
         AND d.notification_id = l.c0 AND d.registration_id = l.c1 \
         AND +d.state = 'queued' AND {NONE_STALE}; \
         DELETE FROM replay_cache WHERE {sweep} <> 0 AND expires_at < {now}; \
         WITH {keys} INSERT INTO replay_cache (key, expires_at) SELECT c0, c1 FROM l \
         WHERE c0 IS NOT NULL AND {NONE_STALE} \
         ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE replay_cache.expires_at < {now} RETURNING 0, key; \
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
    let Some((found, built)) = build(known, &group) else {
        return Ok(None);
    };
    let Some(rows) = rows(group.inserts, &built) else {
        return Ok(None);
    };
    // The earliest `now` of the group's keys decides which stored keys have
    // expired; expired ones are deleted as often as the general path does.
    let now = group.remember.iter().map(|r| r.3).min().unwrap_or(0);
    let sweep = group
        .remember
        .iter()
        .any(|_| super::sql::sweep_expired_keys());
    let shape = Shape::of([
        found.len(),
        rows.len(),
        rows.iter().map(|(_, _, r, ..)| r.len()).sum(),
        rows.iter().filter(|(.., a)| a.is_some()).count(),
        group.updates.len(),
        group.remember.len(),
    ]);
    let arguments = match shape {
        Shape::Bound(capacity) => bound(
            capacity,
            &found,
            &rows,
            group.updates,
            group.remember,
            now,
            sweep,
        )?,
        Shape::Json => {
            let mut arguments =
                Lists::of(&found, &rows, group.updates, group.remember)?.arguments()?;
            add(&mut arguments, now)?;
            add(&mut arguments, i32::from(sweep))?;
            arguments
        }
    };
    let answered = sqlx::query_as_with::<_, (i64, Option<String>), _>(shape.text(), arguments)
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

impl Lists {
    /// The lists as the JSON text's parameters.
    fn arguments(self) -> Result<SqliteArguments<'static>, StoreError> {
        let mut arguments = SqliteArguments::default();
        for list in [
            self.registrations,
            self.notifications,
            self.deliveries,
            self.audits,
            self.updates,
            self.remember,
        ] {
            add(&mut arguments, list)?;
        }
        Ok(arguments)
    }
}

/// The group's lists as parameters, `capacity` rows of each (see
/// [`Shape`]), in [`COLUMNS`]' order, with `sweep` and `now` where the
/// text's statements take them: before the keys, and after.
fn bound<'q>(
    capacity: usize,
    found: &'q std::collections::HashMap<String, super::RegistrationState>,
    rows: &[Insert<'q>],
    updates: &[&'q super::DeliveryUpdate],
    remember: &[(usize, &'q str, i64, i64)],
    now: i64,
    sweep: bool,
) -> Result<SqliteArguments<'q>, StoreError> {
    let mut a = SqliteArguments::default();
    let [registrations, notifications, deliveries, audits, outcomes, keys] = COLUMNS;
    let start = a.len();
    for s in found.values() {
        add(&mut a, s.id.as_str())?;
        add(&mut a, s.app_id.as_str())?;
        add(&mut a, s.status.as_str())?;
        add(&mut a, s.provider.as_deref())?;
        add(&mut a, s.token.as_deref())?;
        add(&mut a, s.environment.as_deref())?;
    }
    pad(&mut a, start + capacity * registrations)?;
    let start = a.len();
    for (_, n, ..) in rows {
        add(&mut a, n.id.as_str())?;
        add(&mut a, n.app_id.as_str())?;
        add(&mut a, n.notifier_id.as_str())?;
        add(&mut a, n.idempotency_key.as_deref())?;
        add(&mut a, n.request_hash.as_str())?;
        add(&mut a, n.targets.as_str())?;
        add(&mut a, n.content.as_str())?;
        add(&mut a, n.expires_at)?;
        add(&mut a, n.state.as_str())?;
        add(&mut a, n.created_at)?;
        add(&mut a, n.response.as_deref())?;
        add(&mut a, n.expand_cursor.as_deref())?;
        add(&mut a, n.updated_at)?;
    }
    pad(&mut a, start + capacity * notifications)?;
    let start = a.len();
    for &(_, n, registrations, redrive_at, _) in rows {
        for r in registrations {
            add(&mut a, n.id.as_str())?;
            add(&mut a, r.as_str())?;
            add(&mut a, redrive_at)?;
            add(&mut a, n.created_at)?;
        }
    }
    pad(&mut a, start + capacity * deliveries)?;
    let start = a.len();
    for e in rows.iter().filter_map(|(.., a)| *a) {
        add(&mut a, e.at)?;
        add(&mut a, e.actor.as_str())?;
        add(&mut a, e.action.as_str())?;
        add(&mut a, e.app_id.as_deref())?;
        add(&mut a, e.target.as_deref())?;
        add(&mut a, e.source.as_deref())?;
        add(&mut a, e.details.as_deref())?;
    }
    pad(&mut a, start + capacity * audits)?;
    let start = a.len();
    for u in updates {
        add(&mut a, u.notification_id.as_str())?;
        add(&mut a, u.registration_id.as_str())?;
        add(&mut a, u.state.as_str())?;
        add(&mut a, u.reason.as_deref())?;
        add(&mut a, u.attempts)?;
        add(&mut a, u.next_attempt_at)?;
        add(&mut a, u.now)?;
    }
    pad(&mut a, start + capacity * outcomes)?;
    add(&mut a, i32::from(sweep))?;
    add(&mut a, now)?;
    let start = a.len();
    for &(_, key, expires_at, _) in remember {
        add(&mut a, key)?;
        add(&mut a, expires_at)?;
    }
    pad(&mut a, start + capacity * keys)?;
    add(&mut a, now)?;
    Ok(a)
}

/// One more parameter.
fn add<'q, T>(arguments: &mut SqliteArguments<'q>, value: T) -> Result<(), StoreError>
where
    T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    arguments
        .add(value)
        .map_err(|e| StoreError::Other(anyhow::anyhow!(e)))
}

/// `NULL` parameters up to `len` in all: the rows a list does not use.
fn pad(arguments: &mut SqliteArguments<'_>, len: usize) -> Result<(), StoreError> {
    while arguments.len() < len {
        add(arguments, None::<&str>)?;
    }
    Ok(())
}

/// `rows` as a JSON array.
fn json<T: serde::Serialize>(rows: &T) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Other(e.into()))
}
