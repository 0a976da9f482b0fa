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

/// One parameter of the text: `$N` numbered after `last` in the JSON shape,
/// `?` in the bound one.
fn parameter(shape: Shape, last: &mut usize) -> String {
    match shape {
        Shape::Json => {
            *last += 1;
            format!("${last}")
        }
        Shape::Bound(_) => "?".to_owned(),
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
    let [registrations, notifications, deliveries, audits, updates, keys] = COLUMNS;
    // Built in the order the text takes its parameters (see [`fill`]).
    let registrations = list(shape, registrations, &mut last);
    let notifications = list(shape, notifications, &mut last);
    let deliveries = list(shape, deliveries, &mut last);
    let audits = list(shape, audits, &mut last);
    let updates = list(shape, updates, &mut last);
    let sweep = parameter(shape, &mut last);
    let now = parameter(shape, &mut last);
    let keys = list(shape, keys, &mut last);
    let now_again = parameter(shape, &mut last);
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
         WHERE replay_cache.expires_at < {now_again} RETURNING 0, key; \
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
        Shape::Bound(capacity) => {
            let mut sink = Bound::new(capacity);
            fill(&mut sink, &found, &rows, &group, now, sweep)?;
            sink.arguments
        }
        Shape::Json => {
            let mut sink = Json::default();
            fill(&mut sink, &found, &rows, &group, now, sweep)?;
            sink.arguments
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

/// The group's values in the order its text takes them: each list's rows,
/// column by column as [`COLUMNS`] counts them, with `sweep` and `now`
/// where the statements take them (before the keys, and after). The one
/// place that knows the columns' order, for both shapes.
fn fill<'q, S: Sink<'q>>(
    sink: &mut S,
    found: &'q std::collections::HashMap<String, super::RegistrationState>,
    rows: &[Insert<'q>],
    group: &Group<'_, 'q>,
    now: i64,
    sweep: bool,
) -> Result<(), StoreError> {
    let [registrations, notifications, deliveries, audits, outcomes, keys] = COLUMNS;
    for s in found.values() {
        sink.row();
        sink.value(s.id.as_str())?;
        sink.value(s.app_id.as_str())?;
        sink.value(s.status.as_str())?;
        sink.value(s.provider.as_deref())?;
        sink.value(s.token.as_deref())?;
        sink.value(s.environment.as_deref())?;
    }
    sink.end(registrations)?;
    for (_, n, ..) in rows {
        sink.row();
        sink.value(n.id.as_str())?;
        sink.value(n.app_id.as_str())?;
        sink.value(n.notifier_id.as_str())?;
        sink.value(n.idempotency_key.as_deref())?;
        sink.value(n.request_hash.as_str())?;
        sink.value(n.targets.as_str())?;
        sink.value(n.content.as_str())?;
        sink.value(n.expires_at)?;
        sink.value(n.state.as_str())?;
        sink.value(n.created_at)?;
        sink.value(n.response.as_deref())?;
        sink.value(n.expand_cursor.as_deref())?;
        sink.value(n.updated_at)?;
    }
    sink.end(notifications)?;
    for &(_, n, registrations, redrive_at, _) in rows {
        for r in registrations {
            sink.row();
            sink.value(n.id.as_str())?;
            sink.value(r.as_str())?;
            sink.value(redrive_at)?;
            sink.value(n.created_at)?;
        }
    }
    sink.end(deliveries)?;
    for e in rows.iter().filter_map(|(.., a)| *a) {
        sink.row();
        sink.value(e.at)?;
        sink.value(e.actor.as_str())?;
        sink.value(e.action.as_str())?;
        sink.value(e.app_id.as_deref())?;
        sink.value(e.target.as_deref())?;
        sink.value(e.source.as_deref())?;
        sink.value(e.details.as_deref())?;
    }
    sink.end(audits)?;
    for &u in group.updates {
        sink.row();
        sink.value(u.notification_id.as_str())?;
        sink.value(u.registration_id.as_str())?;
        sink.value(u.state.as_str())?;
        sink.value(u.reason.as_deref())?;
        sink.value(u.attempts)?;
        sink.value(u.next_attempt_at)?;
        sink.value(u.now)?;
    }
    sink.end(outcomes)?;
    sink.parameter(i32::from(sweep))?;
    sink.parameter(now)?;
    for &(_, key, expires_at, _) in group.remember {
        sink.row();
        sink.value(key)?;
        sink.value(expires_at)?;
    }
    sink.end(keys)?;
    sink.parameter(now)
}

/// Where [`fill`] puts a group's values: a row's values, a list's end, a
/// parameter of its own.
trait Sink<'q> {
    /// A new row of the current list.
    fn row(&mut self);
    /// The next column of the current row.
    fn value<T>(&mut self, value: T) -> Result<(), StoreError>
    where
        T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + serde::Serialize;
    /// The end of the current list, whose rows have `columns` values each.
    fn end(&mut self, columns: usize) -> Result<(), StoreError>;
    /// A value that is not in a list.
    fn parameter<T>(&mut self, value: T) -> Result<(), StoreError>
    where
        T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>;
}

/// Every value a parameter of its own, `capacity` rows a list, the rows not
/// used `NULL`.
struct Bound<'q> {
    arguments: SqliteArguments<'q>,
    capacity: usize,
    /// Where the current list began.
    start: usize,
}

impl Bound<'_> {
    fn new(capacity: usize) -> Self {
        Bound {
            arguments: SqliteArguments::default(),
            capacity,
            start: 0,
        }
    }
}

impl<'q> Sink<'q> for Bound<'q> {
    fn row(&mut self) {}

    fn value<T>(&mut self, value: T) -> Result<(), StoreError>
    where
        T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + serde::Serialize,
    {
        add(&mut self.arguments, value)
    }

    fn end(&mut self, columns: usize) -> Result<(), StoreError> {
        let len = self.start + self.capacity * columns;
        debug_assert!(self.arguments.len() <= len);
        while self.arguments.len() < len {
            add(&mut self.arguments, None::<&str>)?;
        }
        self.start = len;
        Ok(())
    }

    fn parameter<T>(&mut self, value: T) -> Result<(), StoreError>
    where
        T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        add(&mut self.arguments, value)?;
        self.start = self.arguments.len();
        Ok(())
    }
}

/// Each list one parameter, a JSON array of arrays.
#[derive(Default)]
struct Json<'q> {
    arguments: SqliteArguments<'q>,
    /// The current list as written so far.
    list: Vec<u8>,
    /// Values in the current row.
    values: usize,
}

impl<'q> Sink<'q> for Json<'q> {
    fn row(&mut self) {
        self.list
            .extend_from_slice(if self.list.is_empty() { b"[[" } else { b"],[" });
        self.values = 0;
    }

    fn value<T>(&mut self, value: T) -> Result<(), StoreError>
    where
        T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + serde::Serialize,
    {
        if self.values > 0 {
            self.list.push(b',');
        }
        self.values += 1;
        serde_json::to_writer(&mut self.list, &value).map_err(|e| StoreError::Other(e.into()))
    }

    fn end(&mut self, columns: usize) -> Result<(), StoreError> {
        debug_assert!(self.list.is_empty() || self.values == columns);
        let list = std::mem::take(&mut self.list);
        let list = if list.is_empty() {
            "[]".to_owned()
        } else {
            let mut list = String::from_utf8(list).map_err(|e| StoreError::Other(e.into()))?;
            list.push_str("]]");
            list
        };
        add(&mut self.arguments, list)
    }

    fn parameter<T>(&mut self, value: T) -> Result<(), StoreError>
    where
        T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        add(&mut self.arguments, value)
    }
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
