//! Apps, their credentials, attestation settings and limits.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, SqlBackend, SqlStore};
use crate::delivery::ProviderKind;
use crate::store::StoreError;

#[async_trait]
impl<DB> crate::store::AppStore for SqlStore<DB>
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
    async fn create_app(&self, app: &crate::store::App) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO apps (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&app.id)
            .bind(&app.name)
            .bind(app.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_apps(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<crate::store::App>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, created_at FROM apps WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn get_app(&self, id: &str) -> Result<Option<crate::store::App>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, name, created_at FROM apps WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn delete_app(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // Everything else of the app follows by foreign keys. On PostgreSQL
        // deliveries and chunks do not reference notifications by one (its
        // partitioning migration says why), nor notifications their app
        // (migration 13: the key's check locked the app's row in every
        // group of writes), so they go first, here.
        for table in ["deliveries", "fanout_chunks"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE (notification_id, created_at) IN \
                 (SELECT id, created_at FROM notifications WHERE app_id = $1)"
            ))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM notifications WHERE app_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn put_credential(
        &self,
        record: &crate::store::CredentialRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO credentials (app_id, provider, metadata, sealed, expires_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (app_id, provider) DO UPDATE SET metadata = excluded.metadata, \
             sealed = excluded.sealed, expires_at = excluded.expires_at, updated_at = excluded.updated_at, \
             last_error = NULL, last_error_at = NULL",
        )
        .bind(&record.app_id)
        .bind(&record.provider)
        .bind(&record.metadata)
        .bind(&record.sealed)
        .bind(record.expires_at)
        .bind(record.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_credential(
        &self,
        app_id: &str,
        provider: ProviderKind,
    ) -> Result<Option<crate::store::CredentialRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT app_id, provider, metadata, sealed, expires_at, updated_at, last_error, last_error_at \
             FROM credentials \
             WHERE app_id = $1 AND provider = $2",
        )
        .bind(app_id)
        .bind(provider.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn delete_credential(
        &self,
        app_id: &str,
        provider: ProviderKind,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM credentials WHERE app_id = $1 AND provider = $2")
            .bind(app_id)
            .bind(provider.as_str())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn set_credential_error(
        &self,
        app_id: &str,
        provider: ProviderKind,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE credentials SET last_error = $3, last_error_at = $4 WHERE app_id = $1 AND provider = $2",
        )
        .bind(app_id)
        .bind(provider.as_str())
        .bind(error)
        .bind(error.map(|_| now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn reseal_credentials(&self, reseal: &crate::store::Reseal) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let lock = if <DB as SqlBackend>::NAME == "postgres" {
            " FOR UPDATE"
        } else {
            ""
        };
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(&format!(
            "SELECT app_id, provider, sealed FROM credentials ORDER BY app_id, provider{lock}"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut changed = 0;
        for (app_id, provider, sealed) in rows {
            let Some(new) = reseal(&app_id, &provider, &sealed).map_err(|e| {
                StoreError::Conflict(format!("credential {provider} of app {app_id}: {e}"))
            })?
            else {
                continue;
            };
            sqlx::query("UPDATE credentials SET sealed = $3 WHERE app_id = $1 AND provider = $2")
                .bind(&app_id)
                .bind(&provider)
                .bind(new)
                .execute(&mut *tx)
                .await?;
            changed += 1;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn put_attestation(&self, a: &crate::store::Attestation) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attestation (app_id, jwks, required, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id) DO UPDATE SET jwks = excluded.jwks, required = excluded.required, \
             updated_at = excluded.updated_at",
        )
        .bind(&a.app_id)
        .bind(&a.jwks)
        .bind(a.required)
        .bind(a.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_attestation(
        &self,
        app_id: &str,
    ) -> Result<Option<crate::store::Attestation>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT app_id, jwks, required, updated_at FROM attestation WHERE app_id = $1",
        )
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn get_app_limits(&self, app_id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT limits FROM app_limits WHERE app_id = $1")
                .bind(app_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(limits,)| limits))
    }

    async fn set_app_limits(
        &self,
        app_id: &str,
        limits: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        match limits {
            Some(limits) => {
                sqlx::query(
                    "INSERT INTO app_limits (app_id, limits, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (app_id) DO UPDATE SET limits = excluded.limits, updated_at = excluded.updated_at",
                )
                .bind(app_id)
                .bind(limits)
                .bind(now)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM app_limits WHERE app_id = $1")
                    .bind(app_id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<DB> crate::store::NotifierStore for SqlStore<DB>
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
    async fn create_notifier(&self, n: &crate::store::Notifier) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notifiers (id, app_id, name, scopes, jwks, jwks_url, created_at, client_cert, \
             token_reuse) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&n.id)
        .bind(&n.app_id)
        .bind(&n.name)
        .bind(&n.scopes)
        .bind(&n.jwks)
        .bind(&n.jwks_url)
        .bind(n.created_at)
        .bind(&n.client_cert)
        .bind(n.token_reuse)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_notifiers(
        &self,
        app_id: &str,
    ) -> Result<Vec<crate::store::Notifier>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, app_id, name, scopes, jwks, jwks_url, created_at, client_cert, token_reuse \
             FROM notifiers \
             WHERE app_id = $1 ORDER BY id",
        )
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn get_notifier(
        &self,
        app_id: &str,
        id: &str,
    ) -> Result<Option<crate::store::Notifier>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, app_id, name, scopes, jwks, jwks_url, created_at, client_cert, token_reuse \
             FROM notifiers \
             WHERE app_id = $1 AND id = $2",
        )
        .bind(app_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn delete_notifier(&self, app_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM notifiers WHERE app_id = $1 AND id = $2")
            .bind(app_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }
}
