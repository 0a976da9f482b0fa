//! What the shared SQL needs to know of a database: the backend trait each of
//! SQLite and PostgreSQL implements, the column types bound and read, and the
//! placeholder lists of multi-row statements.

use sqlx::{Database, Decode, Encode, Pool, Type};

/// One of the two databases: what the shared SQL cannot say for itself.
pub trait SqlBackend: Database + sqlx::database::HasStatementCache {
    /// `sqlite` or `postgres`.
    const NAME: &'static str;
    /// Starts a transaction that will write. SQLite: `BEGIN IMMEDIATE`, so the
    /// write lock is taken (waiting per busy_timeout) before the first read; a
    /// deferred transaction that reads and then writes fails at once with
    /// SQLITE_BUSY when another writer committed in between.
    const BEGIN_WRITE: &'static str;
    /// Starts a read-only transaction whose statements all see one snapshot:
    /// PostgreSQL's `REPEATABLE READ` (its default reads a new snapshot per
    /// statement); SQLite's deferred transaction, whose first read fixes the
    /// snapshot until the end (WAL).
    const BEGIN_SNAPSHOT: &'static str;
    /// Applies the backend's migrations (`migrations/<backend>`).
    fn migrate(
        pool: &Pool<Self>,
    ) -> futures_util::future::BoxFuture<'_, Result<(), sqlx::migrate::MigrateError>>;
    /// Rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// Whether notifications, deliveries and chunks are partitioned by day.
    const PARTITIONED: bool;
    /// Whether transactions lock the rows they write, so that a statement can
    /// pick rows and skip those another holds ([`skip_locked`]): PostgreSQL.
    /// SQLite's one writer holds the whole database instead.
    const ROW_LOCKS: bool;
    /// Whether the hot statements on those tables keep a prepared statement.
    /// Not on PostgreSQL: a cached generic plan of a partitioned table opens
    /// and locks every partition and prunes at run time (10–15 % fewer
    /// notifications a second with ten partitions, measured); an unnamed
    /// statement is planned for its parameters, pruned to their day.
    const PREPARE_PARTITIONED: bool;
    /// Whether a statement may hold several inserts (data-modifying `WITH`):
    /// a new notification, its deliveries and its audit entry then go as one
    /// statement (PostgreSQL; SQLite has no such `WITH`).
    const INSERTS_WITH: bool;
    /// Whether an update joined to a multi-row `VALUES` finds each target row
    /// by its key first and joins on the row's address ([`keyed_join`]).
    const UPDATES_BY_ROW: bool;
    /// Writes a group that holds only new notifications and delivery outcomes
    /// as one statement (PostgreSQL, `at_once.rs`) or one hand-off (SQLite,
    /// `sqlite_at_once.rs`): `None` when it cannot, and nothing was written.
    fn write_at_once<'a>(
        conn: &'a mut sqlx::pool::PoolConnection<Self>,
        days: &'a super::partitions::Days,
        known: &'a super::at_once::Known,
        group: super::at_once::Group<'a, 'a>,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Option<Vec<super::batch::Answer>>, super::StoreError>,
    >;
    /// What a fan-out chunk's first attempts need
    /// ([`super::FanoutStore::chunk_deliveries`]) in one statement, where the
    /// backend can (PostgreSQL, `chunk_targets.rs`); `None` when it cannot,
    /// and the shared SQL reads them.
    fn chunk_targets<'a>(
        pool: &'a Pool<Self>,
        days: &'a super::partitions::Days,
        notification: &'a super::NotificationRow,
        registrations: &'a [String],
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Option<Vec<super::PendingDelivery>>, super::StoreError>,
    >;
    /// See [`super::RetentionStore::maintain_partitions`].
    fn maintain_partitions(
        pool: &Pool<Self>,
        now: i64,
        drop_before: Option<i64>,
    ) -> futures_util::future::BoxFuture<'_, Result<super::PartitionChange, super::StoreError>>;
}

/// A column type both ways: bound as a parameter and read from a row.
pub trait Column<DB: Database>:
    for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send
{
}

impl<DB: Database, T> Column<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send
{
}

/// `($1, …, $cols), ($cols+1, …), …` for a multi-row `VALUES` of `rows` rows.
pub fn row_placeholders(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(r * cols + 1, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$start, $start+1, …` placeholders for an IN list of `count` values.
pub fn placeholders(start: usize, count: usize) -> String {
    (start..start + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What ends a `SELECT` that picks rows to change where the backend locks
/// rows: ` FOR UPDATE OF {of} SKIP LOCKED`, so the picked rows are locked as
/// they are found and rows another transaction holds are left to it (the
/// statement never waits for a lock, so it is in no deadlock). Nothing on
/// SQLite.
pub fn skip_locked<DB: SqlBackend>(of: &str) -> String {
    if DB::ROW_LOCKS {
        format!(" FOR UPDATE OF {of} SKIP LOCKED")
    } else {
        String::new()
    }
}

/// `FROM … WHERE …` of an `UPDATE {relation} AS {alias}` joined to the rows
/// of `VALUES {values}` on the table's key: `{alias}.{keys[i]} = v.column{i+1}`
/// and, with `span` = `Some(n)`, `created_at` within the span bound at `$n+1`,
/// `$n+2` (so PostgreSQL reads only the partitions that can hold the rows).
/// The statement goes on with `AND …`; the values' columns are `v.column1…`.
///
/// Where the backend wants it ([`SqlBackend::UPDATES_BY_ROW`]) and `relation`
/// is one table (a plain table or one partition; not a partitioned table,
/// where a row's address is not unique), each target is found by its key in
/// a `LATERAL … LIMIT 1` probe of the key's index and the update joins on its
/// `ctid`. A join on the key is planned from the table's statistics, and a
/// day's partition has none until autovacuum analyses it (a minute or more
/// into its day, and only after enough rows): PostgreSQL then guessed the
/// partition held a few rows and scanned all of it for every value in a
/// nested loop — 100 values on 10,000 deliveries were 1,000,000 comparisons,
/// 140–340 ms a statement, which held up the group writer behind it
/// (BENCHMARKS.md). The probe's plan does not depend on the statistics.
/// One difference: a row another transaction changes between the probe and
/// the update has a new address, so the update skips it where the join on
/// the key would have checked the new version again. Each such update is
/// guarded by a state that change would have left (a claim by its attempt
/// count, an outcome by `queued`, what streams wrote by `queued`/`held`), so
/// it skips what it would not have updated; a stream cursor left behind
/// moves with the next event written (a reconnecting stream may get an
/// event again, as at-least-once allows).
pub fn keyed_join<DB: SqlBackend>(
    relation: &str,
    alias: &str,
    values: &str,
    keys: &[&str],
    span: Option<usize>,
) -> String {
    let on = |at: &str| {
        let mut on = keys
            .iter()
            .enumerate()
            .map(|(i, key)| format!("{at}.{key} = v.column{}", i + 1))
            .collect::<Vec<_>>();
        if let Some(n) = span {
            on.push(format!("{at}.created_at BETWEEN ${} AND ${}", n + 1, n + 2));
        }
        on.join(" AND ")
    };
    if DB::UPDATES_BY_ROW && !super::partitions::TABLES.contains(&relation) {
        format!(
            "FROM (SELECT v.*, x.row FROM (VALUES {values}) AS v CROSS JOIN LATERAL \
             (SELECT k.ctid AS row FROM {relation} AS k WHERE {} LIMIT 1) AS x) AS v \
             WHERE {alias}.ctid = v.row",
            on("k")
        )
    } else {
        format!("FROM (VALUES {values}) AS v WHERE {}", on(alias))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_rows_and_columns_in_order() {
        assert_eq!(super::placeholders(2, 3), "$2, $3, $4");
        assert_eq!(super::row_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn a_keyed_join_probes_one_table_by_key_and_joins_on_the_row() {
        let keys = ["notification_id", "registration_id"];
        let join = |relation| {
            super::keyed_join::<sqlx::Postgres>(relation, "d", "($1, $2)", &keys, Some(2))
        };
        assert_eq!(
            join("deliveries_d20261204"),
            "FROM (SELECT v.*, x.row FROM (VALUES ($1, $2)) AS v CROSS JOIN LATERAL \
             (SELECT k.ctid AS row FROM deliveries_d20261204 AS k WHERE \
             k.notification_id = v.column1 AND k.registration_id = v.column2 AND \
             k.created_at BETWEEN $3 AND $4 LIMIT 1) AS x) AS v WHERE d.ctid = v.row"
        );
        assert_eq!(
            super::keyed_join::<sqlx::Postgres>("registrations", "r", "($1, $2)", &["id"], None),
            "FROM (SELECT v.*, x.row FROM (VALUES ($1, $2)) AS v CROSS JOIN LATERAL \
             (SELECT k.ctid AS row FROM registrations AS k WHERE k.id = v.column1 LIMIT 1) \
             AS x) AS v WHERE r.ctid = v.row"
        );
        // A row's address is unique within one table only: on a partitioned
        // table itself, and on SQLite, the join stays on the key.
        let on_key = "FROM (VALUES ($1, $2)) AS v WHERE d.notification_id = v.column1 AND \
                      d.registration_id = v.column2 AND d.created_at BETWEEN $3 AND $4";
        assert_eq!(join("deliveries"), on_key);
        assert_eq!(
            super::keyed_join::<sqlx::Sqlite>("deliveries", "d", "($1, $2)", &keys, Some(2)),
            on_key
        );
    }
}
