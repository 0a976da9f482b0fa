//! SQL of the dispatch pipeline, shared by both backends (see `sql.rs`).

/// Implements [`crate::store::DispatchStore`] for a struct with a `pool` field.
macro_rules! impl_sql_dispatch {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::DispatchStore for $store {
            async fn insert_notification(
                &self,
                n: &$crate::store::NotificationRow,
                registrations: &[String],
                redrive_at: i64,
                audit: Option<&$crate::store::AuditEntry>,
            ) -> Result<(), $crate::store::StoreError> {
                let inserted = self
                    .writer
                    .write($crate::store::group::Write::InsertNotification {
                        row: Box::new(n.clone()),
                        registrations: registrations.to_vec(),
                        redrive_at,
                        audit: audit.map(|a| Box::new(a.clone())),
                    })
                    .await?;
                if inserted {
                    Ok(())
                } else {
                    Err($crate::store::StoreError::Conflict("notification already exists".into()))
                }
            }

            async fn get_notification(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::NotificationRow>, $crate::store::StoreError> {
                Ok(sqlx::query_as(concat!(NOTIFICATION_COLUMNS!(), " WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn find_idempotent(
                &self,
                app_id: &str,
                notifier_id: &str,
                key: &str,
            ) -> Result<Option<$crate::store::NotificationRow>, $crate::store::StoreError> {
                Ok(sqlx::query_as(concat!(
                    NOTIFICATION_COLUMNS!(),
                    " WHERE app_id = $1 AND notifier_id = $2 AND idempotency_key = $3"
                ))
                .bind(app_id)
                .bind(notifier_id)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn registration_states(
                &self,
                ids: &[String],
            ) -> Result<Vec<(String, String, String)>, $crate::store::StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "SELECT id, app_id, status FROM registrations WHERE id IN ({})",
                    $crate::store::placeholders(1, ids.len())
                );
                let mut query = sqlx::query_as(&sql);
                for id in ids {
                    query = query.bind(id);
                }
                Ok(query.fetch_all(&self.pool).await?)
            }

            async fn count_targets(
                &self,
                app_id: &str,
                aliases: Option<&[String]>,
            ) -> Result<i64, $crate::store::StoreError> {
                let (count,): (i64,) = match aliases {
                    None => {
                        sqlx::query_as(
                            "SELECT COUNT(*) FROM registrations WHERE app_id = $1 AND status = 'active'",
                        )
                        .bind(app_id)
                        .fetch_one(&self.pool)
                        .await?
                    }
                    Some(aliases) => {
                        let sql = format!(
                            "SELECT COUNT(DISTINCT r.id) FROM aliases a JOIN registrations r \
                             ON r.id = a.registration_id WHERE a.app_id = $1 AND r.status = 'active' \
                             AND a.alias IN ({})",
                            $crate::store::placeholders(2, aliases.len())
                        );
                        let mut query = sqlx::query_as(&sql).bind(app_id);
                        for alias in aliases {
                            query = query.bind(alias);
                        }
                        query.fetch_one(&self.pool).await?
                    }
                };
                Ok(count)
            }

            async fn expand_chunk(
                &self,
                n: &$crate::store::NotificationRow,
                aliases: Option<&[String]>,
                limit: i64,
                redrive_at: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let after = n.expand_cursor.clone().unwrap_or_default();
                let mut tx = self.pool.begin_with(<$store as $crate::store::Backend>::BEGIN_WRITE).await?;
                let rows: Vec<(String,)> = match aliases {
                    None => {
                        sqlx::query_as(
                            "SELECT id FROM registrations WHERE app_id = $1 AND status = 'active' \
                             AND id > $2 ORDER BY id LIMIT $3",
                        )
                        .bind(&n.app_id)
                        .bind(&after)
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?
                    }
                    Some(aliases) => {
                        let sql = format!(
                            "SELECT DISTINCT r.id FROM aliases a JOIN registrations r ON r.id = a.registration_id \
                             WHERE a.app_id = $1 AND r.status = 'active' AND r.id > $2 AND a.alias IN ({}) \
                             ORDER BY r.id LIMIT $3",
                            $crate::store::placeholders(4, aliases.len())
                        );
                        let mut query = sqlx::query_as(&sql).bind(&n.app_id).bind(&after).bind(limit);
                        for alias in aliases {
                            query = query.bind(alias);
                        }
                        query.fetch_all(&mut *tx).await?
                    }
                };
                let ids: Vec<String> = rows.into_iter().map(|(id,)| id).collect();
                let now = $crate::ids::now_millis();
                insert_deliveries(&mut tx, &n.id, &ids, redrive_at, now).await?;
                if let Some(last) = ids.last() {
                    sqlx::query("UPDATE notifications SET expand_cursor = $2, updated_at = $3 WHERE id = $1")
                        .bind(&n.id)
                        .bind(last)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(ids)
            }

            async fn finish_expansion(&self, id: &str, now: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("UPDATE notifications SET state = 'dispatching', updated_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn task_deliveries(
                &self,
                notification_id: &str,
                registrations: &[String],
            ) -> Result<
                Option<($crate::store::NotificationRow, Vec<$crate::store::PendingDelivery>)>,
                $crate::store::StoreError,
            > {
                if registrations.is_empty() {
                    return Ok(None);
                }
                let sql = format!(
                    "SELECT n.id, n.app_id, n.notifier_id, n.idempotency_key, n.request_hash, n.targets, \
                     n.content, n.expires_at, n.state, n.created_at, n.response, n.expand_cursor, n.updated_at, \
                     d.registration_id, d.attempts, r.provider, r.token, r.environment, \
                     r.status AS registration_status FROM notifications n \
                     JOIN deliveries d ON d.notification_id = n.id \
                     LEFT JOIN registrations r ON r.id = d.registration_id \
                     WHERE n.id = $1 AND d.state = 'queued' AND d.registration_id IN ({})",
                    $crate::store::placeholders(2, registrations.len())
                );
                let mut query = sqlx::query_as::<_, $crate::store::TaskRow>(&sql).bind(notification_id);
                for id in registrations {
                    query = query.bind(id);
                }
                let rows = query.fetch_all(&self.pool).await?;
                let mut rows = rows.into_iter();
                let Some(first) = rows.next() else { return Ok(None) };
                let mut pending = vec![first.delivery];
                pending.extend(rows.map(|row| row.delivery));
                Ok(Some((first.notification, pending)))
            }

            async fn claim_delivery(
                &self,
                notification_id: &str,
                registration_id: &str,
                attempts: i32,
                due: Option<i64>,
                lease: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                self.writer
                    .write($crate::store::group::Write::ClaimDelivery {
                        notification_id: notification_id.to_owned(),
                        registration_id: registration_id.to_owned(),
                        attempts,
                        due,
                        lease,
                    })
                    .await
            }

            async fn update_delivery(
                &self,
                update: $crate::store::DeliveryUpdate,
            ) -> Result<(), $crate::store::StoreError> {
                self.writer
                    .write($crate::store::group::Write::UpdateDelivery(update))
                    .await?;
                Ok(())
            }

            async fn invalidate_registration(
                &self,
                id: &str,
                reason: &str,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
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

            async fn claim_overdue(
                &self,
                now: i64,
                redrive_at: i64,
                limit: i64,
            ) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "UPDATE deliveries SET next_attempt_at = $2 \
                     WHERE state = 'queued' AND next_attempt_at <= $1 AND (notification_id, registration_id) IN \
                     (SELECT notification_id, registration_id FROM deliveries \
                      WHERE state = 'queued' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $3) \
                     RETURNING notification_id, registration_id",
                )
                .bind(now)
                .bind(redrive_at)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn wake_waiting(
                &self,
                app_id: &str,
                provider: &str,
                waiting_after: i64,
                redrive_at: i64,
                limit: i64,
            ) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "UPDATE deliveries SET next_attempt_at = $4 \
                     WHERE state = 'queued' AND next_attempt_at > $3 AND (notification_id, registration_id) IN \
                     (SELECT d.notification_id, d.registration_id FROM deliveries d \
                      JOIN registrations r ON r.id = d.registration_id \
                      WHERE d.state = 'queued' AND d.next_attempt_at > $3 AND r.app_id = $1 AND r.provider = $2 \
                      ORDER BY d.next_attempt_at LIMIT $5) \
                     RETURNING notification_id, registration_id",
                )
                .bind(app_id)
                .bind(provider)
                .bind(waiting_after)
                .bind(redrive_at)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn expire_overdue(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query(
                    "UPDATE deliveries SET state = 'expired', reason = 'ttl', updated_at = $1 \
                     WHERE ((state = 'queued' AND next_attempt_at <= $1) OR state = 'held') AND EXISTS \
                     (SELECT 1 FROM notifications n WHERE n.id = deliveries.notification_id AND n.expires_at <= $1)",
                )
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn mark_streamed(
                &self,
                notification_id: &str,
                registration_id: &str,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "UPDATE deliveries SET state = 'sent', updated_at = $3 \
                     WHERE notification_id = $1 AND registration_id = $2 AND state IN ('queued', 'held')",
                )
                .bind(notification_id)
                .bind(registration_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn claim_stalled_expansions(
                &self,
                before: i64,
                redrive_at: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "UPDATE notifications SET updated_at = $2 \
                     WHERE state = 'expanding' AND updated_at <= $1 RETURNING id",
                )
                .bind(before)
                .bind(redrive_at)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(id,)| id).collect())
            }

            async fn delivery_counts(
                &self,
                notification_id: &str,
            ) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT state, COUNT(*) FROM deliveries WHERE notification_id = $1 GROUP BY state",
                )
                .bind(notification_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delivery_page(
                &self,
                notification_id: &str,
                after: &str,
                limit: i64,
                skip_sent: bool,
            ) -> Result<Vec<$crate::store::DeliveryRow>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT registration_id, state, reason, attempts, updated_at FROM deliveries \
                     WHERE notification_id = $1 AND registration_id > $2 AND (state <> 'sent' OR NOT $4) \
                     ORDER BY registration_id LIMIT $3",
                )
                .bind(notification_id)
                .bind(after)
                .bind(limit)
                .bind(skip_sent)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn queue_stats(
                &self,
                waiting_after: i64,
            ) -> Result<(Vec<(String, i64, i64)>, Option<i64>), $crate::store::StoreError> {
                let rows: Vec<(String, i64, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT n.app_id, COUNT(*), \
                     COALESCE(SUM(CASE WHEN d.next_attempt_at > $1 THEN 1 ELSE 0 END), 0), \
                     MIN(d.updated_at) \
                     FROM deliveries d JOIN notifications n ON n.id = d.notification_id \
                     WHERE d.state = 'queued' GROUP BY n.app_id",
                )
                .bind(waiting_after)
                .fetch_all(&self.pool)
                .await?;
                let oldest = rows.iter().filter_map(|r| r.3).min();
                Ok((rows.into_iter().map(|(a, q, w, _)| (a, q, w)).collect(), oldest))
            }

            async fn insert_direct_event(
                &self,
                registration_id: &str,
                notification_id: &str,
                payload: &str,
                expires_at: i64,
                now: i64,
            ) -> Result<Option<i64>, $crate::store::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "INSERT INTO direct_events (registration_id, notification_id, payload, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (registration_id, notification_id) DO NOTHING \
                     RETURNING seq",
                )
                .bind(registration_id)
                .bind(notification_id)
                .bind(payload)
                .bind(expires_at)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(seq,)| seq))
            }

            async fn direct_events_after(
                &self,
                registration_id: &str,
                after_seq: i64,
                now: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::DirectEvent>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT seq, notification_id, payload, created_at FROM direct_events \
                     WHERE registration_id = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4",
                )
                .bind(registration_id)
                .bind(after_seq)
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn set_direct_cursor(&self, registration_id: &str, seq: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("UPDATE registrations SET direct_cursor = $2 WHERE id = $1 AND direct_cursor < $2")
                    .bind(registration_id)
                    .bind(seq)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn direct_cursor(&self, registration_id: &str) -> Result<i64, $crate::store::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as("SELECT direct_cursor FROM registrations WHERE id = $1")
                    .bind(registration_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|(c,)| c).unwrap_or(0))
            }

            async fn delete_expired_direct_events(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM direct_events WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }

        /// Runs a group of writes in one transaction (see `store::group`).
        fn group_executor(
            pool: sqlx::Pool<<$store as $crate::store::Backend>::Db>,
        ) -> $crate::store::group::Executor {
            std::sync::Arc::new(move |writes| {
                let pool = pool.clone();
                Box::pin(async move { write_batch(&pool, &writes).await })
            })
        }

        /// Writes a batch with as few statements as it can: notifications,
        /// their deliveries and audit entries as multi-row inserts, delivery
        /// outcomes as one `UPDATE … FROM (VALUES …)` per chunk.
        async fn write_batch(
            pool: &sqlx::Pool<<$store as $crate::store::Backend>::Db>,
            writes: &[$crate::store::group::Write],
        ) -> Result<Vec<bool>, $crate::store::StoreError> {
            use $crate::store::group::Write;
            let mut tx = pool.begin_with(<$store as $crate::store::Backend>::BEGIN_WRITE).await?;
            let mut applied = vec![true; writes.len()];
            // Replay-cache entries one by one: the same key twice in a batch must see the first.
            for (i, write) in writes.iter().enumerate() {
                let Write::RememberOnce { key, expires_at, now } = write else { continue };
                // Expired entries are removed now and then, on about one write in 64.
                if rand::random::<u8>() < 4 {
                    sqlx::query("DELETE FROM replay_cache WHERE expires_at < $1")
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                applied[i] = sqlx::query(
                    "INSERT INTO replay_cache (key, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE replay_cache.expires_at < $3",
                )
                .bind(key)
                .bind(expires_at)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
            }

            // Notifications: an id not returned collided (idempotency key) and gets nothing else.
            let inserts: Vec<(usize, &$crate::store::NotificationRow)> = writes
                .iter()
                .enumerate()
                .filter_map(|(i, w)| match w {
                    Write::InsertNotification { row, .. } => Some((i, &**row)),
                    _ => None,
                })
                .collect();
            let mut inserted = std::collections::HashSet::new();
            for chunk in inserts.chunks(64) {
                let values = $crate::store::row_placeholders(chunk.len(), 13);
                let sql = format!(
                    "INSERT INTO notifications (id, app_id, notifier_id, idempotency_key, request_hash, \
                     targets, content, expires_at, state, created_at, response, expand_cursor, updated_at) \
                     VALUES {values} ON CONFLICT DO NOTHING RETURNING id"
                );
                let mut query = sqlx::query_as::<_, (String,)>(&sql);
                for (_, n) in chunk {
                    query = query
                        .bind(&n.id)
                        .bind(&n.app_id)
                        .bind(&n.notifier_id)
                        .bind(&n.idempotency_key)
                        .bind(&n.request_hash)
                        .bind(&n.targets)
                        .bind(&n.content)
                        .bind(n.expires_at)
                        .bind(&n.state)
                        .bind(n.created_at)
                        .bind(&n.response)
                        .bind(&n.expand_cursor)
                        .bind(n.updated_at);
                }
                inserted.extend(query.fetch_all(&mut *tx).await?.into_iter().map(|(id,)| id));
            }
            let mut deliveries: Vec<(&str, &str, i64, i64)> = Vec::new();
            let mut audits: Vec<&$crate::store::AuditEntry> = Vec::new();
            for (i, write) in writes.iter().enumerate() {
                match write {
                    Write::InsertNotification { row, registrations, redrive_at, audit } => {
                        if !inserted.contains(&row.id) {
                            applied[i] = false;
                            continue;
                        }
                        deliveries.extend(
                            registrations
                                .iter()
                                .map(|r| (row.id.as_str(), r.as_str(), *redrive_at, row.created_at)),
                        );
                        audits.extend(audit.as_deref());
                    }
                    Write::Audit(entry) => audits.push(entry),
                    _ => {}
                }
            }
            insert_delivery_rows(&mut tx, &deliveries).await?;
            for chunk in audits.chunks(100) {
                let values = $crate::store::row_placeholders(chunk.len(), 7);
                let sql = format!(
                    "INSERT INTO audit_log (at, actor, action, app_id, target, source, details) VALUES {values}"
                );
                let mut query = sqlx::query(&sql);
                for e in chunk {
                    query = query
                        .bind(e.at)
                        .bind(&e.actor)
                        .bind(&e.action)
                        .bind(&e.app_id)
                        .bind(&e.target)
                        .bind(&e.source)
                        .bind(&e.details);
                }
                query.execute(&mut *tx).await?;
            }

            // Claims: applied only where the attempt count is still the one read.
            let claims: Vec<(usize, &Write)> = writes
                .iter()
                .enumerate()
                .filter(|(_, w)| matches!(w, Write::ClaimDelivery { .. }))
                .collect();
            for chunk in claims.chunks(100) {
                let values = $crate::store::row_placeholders(chunk.len(), 5);
                let sql = format!(
                    "UPDATE deliveries AS d SET attempts = d.attempts + 1, next_attempt_at = v.column4 \
                     FROM (VALUES {values}) AS v \
                     WHERE d.notification_id = v.column1 AND d.registration_id = v.column2 \
                     AND d.attempts = v.column3 AND d.state = 'queued' \
                     AND (v.column5 IS NULL OR d.next_attempt_at = v.column5) \
                     RETURNING notification_id, registration_id"
                );
                let mut query = sqlx::query_as::<_, (String, String)>(&sql);
                for (_, write) in chunk {
                    if let Write::ClaimDelivery { notification_id, registration_id, attempts, due, lease } = write {
                        query = query
                            .bind(notification_id)
                            .bind(registration_id)
                            .bind(attempts)
                            .bind(lease)
                            .bind(due);
                    }
                }
                let taken: std::collections::HashSet<(String, String)> =
                    query.fetch_all(&mut *tx).await?.into_iter().collect();
                for (i, write) in chunk {
                    if let Write::ClaimDelivery { notification_id, registration_id, .. } = write {
                        applied[*i] =
                            taken.contains(&(notification_id.clone(), registration_id.clone()));
                    }
                }
            }

            // Outcomes: applied only to deliveries still queued.
            let updates: Vec<&Write> = writes
                .iter()
                .filter(|w| matches!(w, Write::UpdateDelivery(_)))
                .collect();
            for chunk in updates.chunks(100) {
                let values = $crate::store::row_placeholders(chunk.len(), 7);
                // VALUES columns are column1…column7 in both SQLite and PostgreSQL.
                let sql = format!(
                    "UPDATE deliveries AS d SET state = v.column3, reason = v.column4, \
                     attempts = v.column5, next_attempt_at = COALESCE(v.column6, d.next_attempt_at), \
                     updated_at = v.column7 FROM (VALUES {values}) AS v \
                     WHERE d.notification_id = v.column1 AND d.registration_id = v.column2 \
                     AND d.state = 'queued'"
                );
                let mut query = sqlx::query(&sql);
                for write in chunk {
                    if let Write::UpdateDelivery(update) = write {
                        query = query
                            .bind(&update.notification_id)
                            .bind(&update.registration_id)
                            .bind(update.state.as_str())
                            .bind(&update.reason)
                            .bind(update.attempts)
                            .bind(update.next_attempt_at)
                            .bind(update.now);
                    }
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(applied)
        }

        /// Inserts queued deliveries of one notification.
        async fn insert_deliveries(
            tx: &mut sqlx::Transaction<'_, <$store as $crate::store::Backend>::Db>,
            notification_id: &str,
            registrations: &[String],
            redrive_at: i64,
            now: i64,
        ) -> Result<(), $crate::store::StoreError> {
            let rows: Vec<(&str, &str, i64, i64)> = registrations
                .iter()
                .map(|r| (notification_id, r.as_str(), redrive_at, now))
                .collect();
            insert_delivery_rows(tx, &rows).await
        }

        /// Inserts queued deliveries `(notification, registration, redrive_at, now)`
        /// in multi-row statements (250 rows each).
        async fn insert_delivery_rows(
            tx: &mut sqlx::Transaction<'_, <$store as $crate::store::Backend>::Db>,
            rows: &[(&str, &str, i64, i64)],
        ) -> Result<(), $crate::store::StoreError> {
            for chunk in rows.chunks(250) {
                let values = (0..chunk.len())
                    .map(|r| {
                        let b = r * 4;
                        format!("(${}, ${}, 'queued', 0, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "INSERT INTO deliveries (notification_id, registration_id, state, attempts, \
                     next_attempt_at, updated_at) VALUES {values} ON CONFLICT DO NOTHING"
                );
                let mut query = sqlx::query(&sql);
                for (notification, registration, redrive_at, now) in chunk {
                    query = query.bind(*notification).bind(*registration).bind(*redrive_at).bind(*now);
                }
                query.execute(&mut **tx).await?;
            }
            Ok(())
        }
    };
}

/// Column list of `NotificationRow`.
macro_rules! notification_columns {
    () => {
        "SELECT id, app_id, notifier_id, idempotency_key, request_hash, targets, content, expires_at, \
         state, created_at, response, expand_cursor, updated_at FROM notifications"
    };
}

pub(crate) use impl_sql_dispatch;
pub(crate) use notification_columns as NOTIFICATION_COLUMNS;
