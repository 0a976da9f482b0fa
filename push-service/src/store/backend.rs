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
    /// Writes a group that holds only new notifications and delivery outcomes
    /// as one statement, where the backend can (PostgreSQL, `at_once.rs`): `None`
    /// when it cannot, and nothing was written.
    fn write_at_once<'a>(
        pool: &'a Pool<Self>,
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

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_rows_and_columns_in_order() {
        assert_eq!(super::placeholders(2, 3), "$2, $3, $4");
        assert_eq!(super::row_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
