//! Updates joined to many rows of `VALUES` find each row by its key whatever
//! PostgreSQL knows of the table (`store::keyed_join`). A day's partition has
//! no statistics until autovacuum analyses it; a join on the key was then
//! planned as a scan of the whole partition for every value (the direct
//! channel's "sent" updates took 140–340 ms each on 10,000 deliveries).

use push_service::store::keyed_join;
use sqlx::Connection;

use crate::helpers::fresh_postgres_database;

/// Rows in the partition, none analysed.
const ROWS: usize = 10_000;
/// Values in the update, as many as the store puts in one statement.
const VALUES: usize = 100;

/// The plan of `UPDATE deliveries_default … {join}` for `VALUES` rows.
async fn plan(conn: &mut sqlx::PgConnection, name: &str, join: &str) -> String {
    let types = std::iter::repeat_n("text, text, bigint", VALUES)
        .chain(["bigint, bigint"])
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::raw_sql(&format!(
        "PREPARE {name} ({types}) AS UPDATE deliveries_default AS d SET state = 'sent', \
         updated_at = v.column3 {join} AND d.state IN ('queued', 'held')"
    ))
    .execute(&mut *conn)
    .await
    .expect("the statement prepares");
    let args = (0..VALUES)
        .map(|i| format!("'ntf_far', 'reg_{i}', 1"))
        .chain(["4102444800000, 4102444800000".to_owned()])
        .collect::<Vec<_>>()
        .join(", ");
    let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name} ({args})"))
        .fetch_all(&mut *conn)
        .await
        .expect("explain");
    lines.join("\n")
}

#[tokio::test]
async fn a_keyed_update_probes_an_unanalysed_partition_by_key() {
    let url = fresh_postgres_database().await;
    let store = push_service::store::connect(&url, 2, true, None)
        .await
        .expect("store");
    store.migrate().await.expect("schema");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("postgres");
    // Deliveries of one notification made in 2100: no day partition holds
    // them, so they land in the default partition, never analysed.
    sqlx::query(
        "INSERT INTO deliveries (notification_id, registration_id, state, attempts, \
         updated_at, created_at) \
         SELECT 'ntf_far', 'reg_' || i, 'held', 1, 0, 4102444800000 \
         FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(ROWS as i64)
    .execute(&mut conn)
    .await
    .expect("deliveries");
    let values = push_service::store::row_placeholders(VALUES, 3);
    let keys = ["notification_id", "registration_id"];
    let span = Some(VALUES * 3);

    let probed = plan(
        &mut conn,
        "probed",
        &keyed_join::<sqlx::Postgres>("deliveries_default", "d", &values, &keys, span),
    )
    .await;
    assert!(
        !probed.contains("Seq Scan"),
        "the update scans the partition:\n{probed}"
    );
    assert!(
        probed.contains("Index") && probed.contains("Tid Scan"),
        "each row is not found by its key and then by its address:\n{probed}"
    );

    // The join on the key (what SQLite gets, and what this statement was)
    // scans it: the test tells the two apart.
    let on_key = plan(
        &mut conn,
        "on_key",
        &keyed_join::<sqlx::Sqlite>("deliveries_default", "d", &values, &keys, span),
    )
    .await;
    assert!(
        on_key.contains("Seq Scan on deliveries_default"),
        "the join on the key no longer scans an unanalysed partition:\n{on_key}"
    );
}
