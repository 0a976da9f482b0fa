//! Single-use identifiers (`jti`): in the store, or in Redis when configured.

use std::sync::Arc;

use crate::store::{Store, StoreError};

/// The replay cache could not answer: the caller cannot tell a first use from a reuse.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the replay cache is unreachable; retry later")]
    Unreachable,
}

/// Remembers identifiers until they expire, so each is accepted once.
#[derive(Clone)]
pub enum ReplayCache {
    /// Embedded default: a table in the store.
    Store(Arc<dyn Store>),
    /// Scale-out: `SET NX PXAT` in Redis, shared by all nodes.
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

impl ReplayCache {
    /// True the first time `key` is seen before `expires_at_ms`; false on reuse.
    pub async fn first_use(&self, key: &str, expires_at_ms: i64) -> Result<bool, ReplayError> {
        match self {
            ReplayCache::Store(store) => Ok(store
                .remember_once(key, expires_at_ms, crate::ids::now_millis())
                .await?),
            ReplayCache::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let set: Option<String> = redis::cmd("SET")
                    .arg(format!("{prefix}replay:{key}"))
                    .arg(1)
                    .arg("NX")
                    .arg("PXAT")
                    .arg(expires_at_ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "redis unavailable for the replay cache");
                        ReplayError::Unreachable
                    })?;
                Ok(set.is_some())
            }
        }
    }
}
