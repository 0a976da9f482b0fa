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
                provider: &str,
            ) -> Result<Option<$crate::store::CredentialRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT app_id, provider, metadata, sealed, expires_at, updated_at, last_error, last_error_at \
                     FROM credentials \
                     WHERE app_id = $1 AND provider = $2",
                )
                .bind(app_id)
                .bind(provider)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn set_credential_error(
                &self,
                app_id: &str,
                provider: &str,
                error: Option<&str>,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "UPDATE credentials SET last_error = $3, last_error_at = $4 WHERE app_id = $1 AND provider = $2",
                )
                .bind(app_id)
                .bind(provider)
                .bind(error)
                .bind(error.map(|_| now))
                .execute(&self.pool)
                .await?;
                Ok(())
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
                    "INSERT INTO notifiers (id, app_id, name, scopes, jwks, jwks_url, created_at, client_cert) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&n.id)
                .bind(&n.app_id)
                .bind(&n.name)
                .bind(&n.scopes)
                .bind(&n.jwks)
                .bind(&n.jwks_url)
                .bind(n.created_at)
                .bind(&n.client_cert)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_notifiers(&self, app_id: &str) -> Result<Vec<$crate::store::Notifier>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, app_id, name, scopes, jwks, jwks_url, created_at, client_cert FROM notifiers \
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
                    "SELECT id, app_id, name, scopes, jwks, jwks_url, created_at, client_cert FROM notifiers \
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

            async fn create_registration(
                &self,
                r: &$crate::store::Registration,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let mut tx = self.pool.begin_with(<$store as $crate::store::Backend>::BEGIN_WRITE).await?;
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

            async fn count_unattested_registrations(
                &self,
                app_id: &str,
            ) -> Result<i64, $crate::store::StoreError> {
                let (count,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM registrations WHERE app_id = $1 AND status = 'active' AND attested = $2",
                )
                .bind(app_id)
                .bind(false)
                .fetch_one(&self.pool)
                .await?;
                Ok(count)
            }

            async fn count_registrations_by_key(
                &self,
                key_thumbprint: &str,
            ) -> Result<i64, $crate::store::StoreError> {
                let (count,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM registrations WHERE key_thumbprint = $1 AND status = 'active'",
                )
                .bind(key_thumbprint)
                .fetch_one(&self.pool)
                .await?;
                Ok(count)
            }

            async fn get_registration(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::Registration>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, app_id, provider, token, environment, platform, key_thumbprint, \
                     encryption_jwk, status, invalid_reason, invalidated_at, created_at, updated_at \
                     FROM registrations WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn rotate_registration_token(
                &self,
                id: &str,
                token: &str,
                now: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let mut tx = self.pool.begin_with(<$store as $crate::store::Backend>::BEGIN_WRITE).await?;
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
                if done.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound(format!(
                        "registration `{id}` does not exist"
                    )));
                }
                tx.commit().await?;
                Ok(rows.into_iter().map(|(id,)| id).collect())
            }

            async fn delete_registration(&self, id: &str) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM registrations WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_aliases(
                &self,
                app_id: &str,
                id: &str,
                aliases: &[String],
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin_with(<$store as $crate::store::Backend>::BEGIN_WRITE).await?;
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

            async fn list_aliases(&self, id: &str) -> Result<Vec<String>, $crate::store::StoreError> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT alias FROM aliases WHERE registration_id = $1 ORDER BY alias")
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(alias,)| alias).collect())
            }

            async fn get_app_limits(&self, app_id: &str) -> Result<Option<String>, $crate::store::StoreError> {
                let row: Option<(String,)> = sqlx::query_as("SELECT limits FROM app_limits WHERE app_id = $1")
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
            ) -> Result<(), $crate::store::StoreError> {
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

            async fn list_audit(
                &self,
                filter: &$crate::store::AuditFilter,
            ) -> Result<Vec<$crate::store::AuditEntry>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT seq, at, actor, action, app_id, target, source, details FROM audit_log \
                     WHERE seq > $1 AND ($2 IS NULL OR app_id = $2) AND ($3 IS NULL OR actor = $3) \
                     AND ($4 IS NULL OR action = $4) ORDER BY seq LIMIT $5",
                )
                .bind(filter.after)
                .bind(&filter.app_id)
                .bind(&filter.actor)
                .bind(&filter.action)
                .bind(filter.limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_audit_before(&self, at: i64) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn audit(&self, entry: &$crate::store::AuditEntry) -> Result<(), $crate::store::StoreError> {
                self.writer
                    .write($crate::store::group::Write::Audit(Box::new(entry.clone())))
                    .await?;
                Ok(())
            }

            async fn remember_once(
                &self,
                key: &str,
                expires_at: i64,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                self.writer
                    .write($crate::store::group::Write::RememberOnce {
                        key: key.to_owned(),
                        expires_at,
                        now,
                    })
                    .await
            }
        }
    };
}

pub(crate) use impl_sql_store;
