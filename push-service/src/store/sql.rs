//! The SQL shared by both backends. The schemas keep the same column types
//! (TEXT, BIGINT milliseconds, BOOLEAN, bytes) so one query text serves both;
//! backend-specific work lives in `sqlite.rs` / `postgres.rs`.

/// Implements [`crate::store::Store`] for a struct with a `pool: sqlx::Pool<$db>` field.
macro_rules! impl_sql_store {
    ($store:ty, $backend:literal, $migrator:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
                $migrator
                    .run(&self.pool)
                    .await
                    .map_err(|e| $crate::store::StoreError::Other(e.into()))
            }

            async fn create_app(&self, app: &$crate::store::App) -> Result<(), $crate::store::StoreError> {
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
            ) -> Result<Vec<$crate::store::App>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, name, created_at FROM apps WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after.unwrap_or(""))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn get_app(&self, id: &str) -> Result<Option<$crate::store::App>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT id, name, created_at FROM apps WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn delete_app(&self, id: &str) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM apps WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn put_credential(
                &self,
                record: &$crate::store::CredentialRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO credentials (app_id, provider, metadata, sealed, expires_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (app_id, provider) DO UPDATE SET metadata = excluded.metadata, \
                     sealed = excluded.sealed, expires_at = excluded.expires_at, updated_at = excluded.updated_at",
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
                provider: &str,
            ) -> Result<Option<$crate::store::CredentialRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT app_id, provider, metadata, sealed, expires_at, updated_at FROM credentials \
                     WHERE app_id = $1 AND provider = $2",
                )
                .bind(app_id)
                .bind(provider)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn delete_credential(&self, app_id: &str, provider: &str) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM credentials WHERE app_id = $1 AND provider = $2")
                    .bind(app_id)
                    .bind(provider)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn create_notifier(&self, n: &$crate::store::Notifier) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO notifiers (id, app_id, name, scopes, jwks, jwks_url, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&n.id)
                .bind(&n.app_id)
                .bind(&n.name)
                .bind(&n.scopes)
                .bind(&n.jwks)
                .bind(&n.jwks_url)
                .bind(n.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_notifiers(&self, app_id: &str) -> Result<Vec<$crate::store::Notifier>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, app_id, name, scopes, jwks, jwks_url, created_at FROM notifiers \
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
            ) -> Result<Option<$crate::store::Notifier>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, app_id, name, scopes, jwks, jwks_url, created_at FROM notifiers \
                     WHERE app_id = $1 AND id = $2",
                )
                .bind(app_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn delete_notifier(&self, app_id: &str, id: &str) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM notifiers WHERE app_id = $1 AND id = $2")
                    .bind(app_id)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn put_attestation(&self, a: &$crate::store::Attestation) -> Result<(), $crate::store::StoreError> {
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

            async fn get_attestation(&self, app_id: &str) -> Result<Option<$crate::store::Attestation>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT app_id, jwks, required, updated_at FROM attestation WHERE app_id = $1",
                )
                .bind(app_id)
                .fetch_optional(&self.pool)
                .await?)
            }
        }
    };
}

pub(crate) use impl_sql_store;
