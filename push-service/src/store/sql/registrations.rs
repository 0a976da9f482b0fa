//! Device registrations and their aliases.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, SqlBackend, SqlStore};
use crate::store::group::{GroupKind, GroupWriter};
use crate::store::{RegistrationState, StoreError};

#[async_trait]
impl<DB> crate::store::RegistrationStore for SqlStore<DB>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
    Vec<u8>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    async fn count_registrations_by_key(&self, key_thumbprint: &str) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM registrations WHERE key_thumbprint = $1 AND status = 'active'",
        )
        .bind(key_thumbprint)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    async fn count_unattested_registrations(&self, app_id: &str) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM registrations WHERE app_id = $1 AND status = 'active' AND attested = $2",
        )
        .bind(app_id)
        .bind(false)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    async fn create_registration(
        &self,
        r: &crate::store::Registration,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let mut replaced = Vec::new();
        if let Some(token) = &r.token {
            let rows: Vec<(String,)> = sqlx::query_as(
                "UPDATE registrations SET status = 'invalid', invalid_reason = 'replaced', \
                 invalidated_at = $4, updated_at = $4 \
                 WHERE app_id = $1 AND provider = $2 AND token = $3 AND status = 'active' RETURNING id",
            )
            .bind(&r.app_id)
            .bind(&r.provider)
            .bind(token)
            .bind(r.created_at)
            .fetch_all(&mut *tx)
            .await?;
            replaced.extend(rows.into_iter().map(|(id,)| id));
        }
        sqlx::query(
            "INSERT INTO registrations (id, app_id, provider, token, environment, platform, \
             key_thumbprint, encryption_jwk, status, invalid_reason, invalidated_at, created_at, updated_at, \
             attested) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&r.id)
        .bind(&r.app_id)
        .bind(&r.provider)
        .bind(&r.token)
        .bind(&r.environment)
        .bind(&r.platform)
        .bind(&r.key_thumbprint)
        .bind(&r.encryption_jwk)
        .bind(&r.status)
        .bind(&r.invalid_reason)
        .bind(r.invalidated_at)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.attested)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(replaced)
    }

    async fn get_registration(
        &self,
        id: &str,
    ) -> Result<Option<crate::store::Registration>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, app_id, provider, token, environment, platform, key_thumbprint, \
             encryption_jwk, status, invalid_reason, invalidated_at, created_at, updated_at \
             FROM registrations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn registration_states(
        &self,
        ids: &[String],
    ) -> Result<Vec<crate::store::RegistrationState>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.lookups.write(ids.to_vec()).await
    }

    async fn rotate_registration_token(
        &self,
        id: &str,
        token: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE registrations SET status = 'invalid', invalid_reason = 'replaced', \
             invalidated_at = $3, updated_at = $3 \
             WHERE id <> $1 AND status = 'active' AND token = $2 AND (app_id, provider) = \
             (SELECT app_id, provider FROM registrations WHERE id = $1) RETURNING id",
        )
        .bind(id)
        .bind(token)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE registrations SET token = $2, status = 'active', invalid_reason = NULL, \
             invalidated_at = NULL, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(token)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(crate::store::StoreError::NotFound(format!(
                "registration `{id}` does not exist"
            )));
        }
        tx.commit().await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn set_encryption_key(&self, id: &str, jwk: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE registrations SET encryption_jwk = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(jwk)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn invalidate_registration(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE registrations SET status = 'invalid', invalid_reason = $2, invalidated_at = $3, \
             updated_at = $3 WHERE id = $1 AND status = 'active'",
        )
        .bind(id)
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_registration(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM registrations WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn set_aliases(
        &self,
        app_id: &str,
        id: &str,
        aliases: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        sqlx::query("DELETE FROM aliases WHERE registration_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for alias in aliases {
            sqlx::query("INSERT INTO aliases (app_id, alias, registration_id) VALUES ($1, $2, $3)")
                .bind(app_id)
                .bind(alias)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_aliases(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT alias FROM aliases WHERE registration_id = $1 ORDER BY alias")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(alias,)| alias).collect())
    }
}

/// The grouped registration lookups of a store: concurrent acceptances ask
/// together, one statement per group.
pub(in crate::store) type Lookups = GroupWriter<Vec<String>, Vec<RegistrationState>>;

/// Readers of grouped lookups (a second one reads only beside a large
/// group, see `group::GATHER`; two taking whatever waited left most groups
/// with one lookup: BENCHMARKS.md, "One writer").
const LOOKUP_READERS: usize = 2;
/// Ids per statement, at most (well within both databases' parameter limits).
const LOOKUP_IDS: usize = 1000;

/// Starts the grouped registration lookups on `pool`: a group's ids (each
/// asked once) in one `SELECT … WHERE id IN (…)`, each asker answered with
/// the states of its own ids.
pub(in crate::store) fn lookups<DB>(pool: sqlx::Pool<DB>) -> Lookups
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    let exec: crate::store::group::Executor<Vec<String>, Vec<RegistrationState>> =
        std::sync::Arc::new(move |asks: Vec<Vec<String>>| {
            let pool = pool.clone();
            Box::pin(async move {
                let mut conn = pool.acquire().await?;
                let found = find_states(&mut conn, asks.iter().flatten()).await?;
                Ok(asks
                    .iter()
                    .map(|ask| ask.iter().filter_map(|id| found.get(id).cloned()).collect())
                    .collect())
            })
        });
    GroupWriter::spawn(GroupKind::Lookups, LOOKUP_READERS, exec)
}

/// The registrations among `ids` that exist, by id: one `SELECT … WHERE id
/// IN (…)` per `LOOKUP_IDS` distinct ids.
async fn find_states<'a, DB>(
    conn: &mut DB::Connection,
    ids: impl Iterator<Item = &'a String>,
) -> Result<std::collections::HashMap<String, RegistrationState>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    let mut ids: Vec<&str> = ids.map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut found = std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(LOOKUP_IDS) {
        let sql = format!(
            "SELECT id, app_id, status, provider, token, environment \
             FROM registrations WHERE id IN ({})",
            crate::store::placeholders(1, chunk.len())
        );
        let mut query = sqlx::query_as::<_, RegistrationState>(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for state in query.fetch_all(&mut *conn).await? {
            found.insert(state.id.clone(), state);
        }
    }
    Ok(found)
}

/// A group's acceptances (`(place, acceptance)`): their registrations read
/// in the group's transaction, in one statement, and each built from them.
/// Returns each place's rows with its re-drive time.
pub(in crate::store) async fn build_acceptances<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    accepts: &[(usize, &crate::store::Acceptance)],
    known: &crate::store::at_once::Known,
) -> Result<Vec<(usize, crate::store::Built, i64)>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    if accepts.is_empty() {
        return Ok(Vec::new());
    }
    let found = find_states(
        &mut **tx,
        accepts.iter().flat_map(|(_, a)| &a.registrations),
    )
    .await?;
    known.remember(&found);
    accepts
        .iter()
        .map(|(i, acceptance)| Ok((*i, (acceptance.build)(&found)?, acceptance.redrive_at)))
        .collect()
}
