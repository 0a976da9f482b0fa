//! PostgreSQL's partitions of notifications, deliveries and fan-out chunks:
//! one per day of creation time (UTC), `<table>_dYYYYMMDD`, made a week
//! ahead; the copy of what a database held before partitioning,
//! `<table>_before_YYYYMMDD` (everything created before that day); and
//! `<table>_default` for a row whose day has no partition yet. A day (or the
//! copy) is dropped whole, in all three tables at once, when its end is past
//! the point retention was given ([`maintain`]).
//!
//! What to create and drop is worked out from the partitions' names alone
//! ([`plan`]), so the rule is tested without a database.

use std::collections::HashMap;
use std::sync::RwLock;

use sqlx::{PgPool, Row};
use time::{Date, Month, OffsetDateTime};

use super::{PartitionChange, StoreError};

/// The partitioned tables, in the order every writer locks them.
pub const TABLES: [&str; 3] = ["notifications", "deliveries", "fanout_chunks"];
/// Days made ahead of today.
pub const DAYS_AHEAD: i64 = 7;
const DAY_MS: i64 = 86_400_000;
/// Held for the length of one maintenance, so two nodes do not race.
const LOCK_KEY: i64 = 0x7075_7368_7061_7274; // "pushpart"

/// The day partitions a node knows to exist, so that its hot statements name
/// a day's partition directly: PostgreSQL (before 18) locks every partition
/// a cached generic plan of the parent may touch, and re-planning each time
/// costs as much; a statement on one partition is as cheap as on a plain
/// table. Refreshed by every maintenance (each sweep round); a day is dropped
/// only when its notifications' TTLs ended weeks before, so a name known a
/// few seconds too long is never written to.
#[derive(Debug, Default)]
pub struct Days {
    known: RwLock<Known>,
}

#[derive(Debug, Default)]
struct Known {
    /// Day partitions by table (its place in [`TABLES`]) and first millisecond
    /// of the day: the hot statements look a name up for every row, so it is
    /// found by number, not by building the name.
    days: HashMap<(usize, i64), String>,
    /// The copies from before partitioning: `(table, name, end)`.
    copies: Vec<(usize, String, i64)>,
}

impl Days {
    /// Replaces what is known by `names` (partition names of all tables).
    pub fn set(&self, names: impl IntoIterator<Item = String>) {
        let mut known = Known::default();
        for name in names {
            let found = TABLES
                .iter()
                .enumerate()
                .find_map(|(table, prefix)| Some((table, span_of(prefix, &name)?)));
            match found {
                Some((table, Span::Day(start))) => {
                    known.days.insert((table, start), name);
                }
                Some((table, Span::Before(end))) => known.copies.push((table, name, end)),
                Some((_, Span::Default)) | None => {}
            }
        }
        if let Ok(mut slot) = self.known.write() {
            *slot = known;
        }
    }

    /// The relation a statement on `table` names for rows of the notification
    /// `id`: the known partition that holds its creation time (its day's, or
    /// the copy from before partitioning) when the id carries its time,
    /// `table` itself otherwise.
    pub fn relation(&self, table: &str, id: &str) -> String {
        let (Some(created), Some(index)) = (
            crate::ids::created_of(id),
            TABLES.iter().position(|t| *t == table),
        ) else {
            return table.to_owned();
        };
        let Ok(known) = self.known.read() else {
            return table.to_owned();
        };
        let day = created.div_euclid(DAY_MS) * DAY_MS;
        if let Some(name) = known.days.get(&(index, day)) {
            return name.clone();
        }
        known
            .copies
            .iter()
            .find(|(of, _, end)| *of == index && created < *end)
            .map_or_else(|| table.to_owned(), |(_, name, _)| name.clone())
    }

    /// The one relation that holds the rows of all of `ids`; `None` when
    /// they are in several, or for no ids. Ids of one day (nearly always)
    /// cost one lookup.
    pub fn shared(&self, table: &str, ids: &[&str]) -> Option<String> {
        let day = |id: &str| crate::ids::created_of(id).map(|c| c.div_euclid(DAY_MS));
        let (first, rest) = ids.split_first()?;
        let relation = self.relation(table, first);
        let first_day = day(first);
        if rest.iter().all(|id| day(id) == first_day)
            || rest.iter().all(|id| self.relation(table, id) == relation)
        {
            Some(relation)
        } else {
            None
        }
    }

    /// `rows` grouped by [`Days::relation`] (of `id(row)`), in order of first appearance.
    pub fn group<'r, T>(
        &self,
        table: &str,
        rows: &'r [T],
        id: impl Fn(&T) -> &str,
    ) -> Vec<(String, Vec<&'r T>)> {
        let mut groups: Vec<(String, Vec<&'r T>)> = Vec::new();
        for row in rows {
            let relation = self.relation(table, id(row));
            match groups.iter_mut().find(|(r, _)| *r == relation) {
                Some((_, members)) => members.push(row),
                None => groups.push((relation, vec![row])),
            }
        }
        groups
    }
}

/// [`Days::group`]'s groups cut in pieces of at most `size` rows, each with its relation.
pub fn pieces<'g, 'r, T>(
    groups: &'g [(String, Vec<&'r T>)],
    size: usize,
) -> Vec<(&'g str, &'g [&'r T])> {
    let mut out = Vec::new();
    for (relation, rows) in groups {
        for piece in rows.chunks(size) {
            out.push((relation.as_str(), piece));
        }
    }
    out
}

/// A partition read from its name: the span of creation times it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// One day, `[start, start + a day)`.
    Day(i64),
    /// Everything before `end`.
    Before(i64),
    /// The catch-all.
    Default,
}

/// Parses one of `table`'s partition names; `None` for a name this build did not make.
pub fn span_of(table: &str, name: &str) -> Option<Span> {
    let rest = name.strip_prefix(table)?.strip_prefix('_')?;
    if rest == "default" {
        return Some(Span::Default);
    }
    if let Some(day) = rest.strip_prefix("before_") {
        return day_start(day).map(Span::Before);
    }
    day_start(rest.strip_prefix('d')?).map(Span::Day)
}

/// `YYYYMMDD` to the day's first millisecond (UTC).
fn day_start(text: &str) -> Option<i64> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = text[..4].parse().ok()?;
    let month = Month::try_from(text[4..6].parse::<u8>().ok()?).ok()?;
    let day: u8 = text[6..].parse().ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}

/// The `YYYYMMDD` of the day holding `millis`.
fn day_name(millis: i64) -> String {
    let date = OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
        .map(|t| t.date())
        .unwrap_or(Date::MIN);
    format!(
        "{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// What one maintenance does to one table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `(name, from, to)` of days to make.
    pub create: Vec<(String, i64, i64)>,
    /// Names to drop.
    pub drop: Vec<String>,
}

/// From a table's partition names: the days from today to [`DAYS_AHEAD`]
/// that no partition covers yet, and the partitions whose end is at or
/// before `drop_before` (none when it is `None`: retention is off).
pub fn plan(table: &str, existing: &[String], now: i64, drop_before: Option<i64>) -> Plan {
    let spans: Vec<(&String, Span)> = existing
        .iter()
        .filter_map(|name| span_of(table, name).map(|span| (name, span)))
        .collect();
    let covered = |start: i64| {
        spans.iter().any(|(_, span)| match span {
            Span::Day(day) => *day == start,
            Span::Before(end) => start < *end,
            Span::Default => false,
        })
    };
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    let create = (0..=DAYS_AHEAD)
        .map(|i| today + i * DAY_MS)
        .filter(|start| !covered(*start))
        .map(|start| {
            (
                format!("{table}_d{}", day_name(start)),
                start,
                start + DAY_MS,
            )
        })
        .collect();
    let drop = match drop_before {
        None => Vec::new(),
        Some(before) => spans
            .iter()
            .filter(|(_, span)| match span {
                Span::Day(start) => start + DAY_MS <= before,
                Span::Before(end) => *end <= before,
                Span::Default => false,
            })
            .map(|(name, _)| (*name).clone())
            .collect(),
    };
    Plan { create, drop }
}

/// Makes the days ahead and drops the days past `drop_before`, for every
/// partitioned table, in one transaction that waits at most 2 s for a lock
/// (then the next round tries again). A node that finds another one at it
/// does nothing. A day whose rows went to the default partition meanwhile is
/// not made (PostgreSQL would refuse); those rows are deleted in batches.
pub async fn maintain(
    pool: &PgPool,
    now: i64,
    drop_before: Option<i64>,
) -> Result<PartitionChange, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    let (ours,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    let mut change = PartitionChange::default();
    if !ours {
        tx.commit().await?;
        change.present = present(pool).await?;
        return Ok(change);
    }
    // Read first, without locks; most rounds have nothing to do.
    let mut plans = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let existing: Vec<String> = sqlx::query(
            "SELECT c.relname::TEXT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = $1::regclass",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
        plans.push((table, plan(table, &existing, now, drop_before)));
    }
    if plans
        .iter()
        .all(|(_, p)| p.create.is_empty() && p.drop.is_empty())
    {
        tx.commit().await?;
        change.present = present(pool).await?;
        return Ok(change);
    }
    // Making or dropping a partition locks its table whole. All three are
    // locked at once, in the order writers take them (a notification, then
    // its deliveries, then its chunks), so no writer deadlocks with this.
    sqlx::query("LOCK TABLE notifications, deliveries, fanout_chunks IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    for (table, plan) in plans {
        for (name, from, to) in plan.create {
            let (stray,): (bool,) = sqlx::query_as(&format!(
                "SELECT EXISTS (SELECT 1 FROM \"{table}_default\" \
                 WHERE created_at >= $1 AND created_at < $2)"
            ))
            .bind(from)
            .bind(to)
            .fetch_one(&mut *tx)
            .await?;
            if stray {
                tracing::warn!(partition = %name, "rows of this day are in the default partition; not made");
                continue;
            }
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS \"{name}\" PARTITION OF \"{table}\" \
                 FOR VALUES FROM ({from}) TO ({to})"
            ))
            .execute(&mut *tx)
            .await?;
            change.created.push(name);
        }
        for name in plan.drop {
            sqlx::query(&format!("DROP TABLE IF EXISTS \"{name}\""))
                .execute(&mut *tx)
                .await?;
            change.dropped.push(name);
        }
    }
    tx.commit().await?;
    change.present = present(pool).await?;
    Ok(change)
}

/// The partitions of every partitioned table, as they are now.
async fn present(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::TEXT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = ANY($1::regclass[])",
    )
    .bind(TABLES.to_vec())
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
#[path = "partitions_tests.rs"]
mod tests;
