//! The group writer's connections, held between groups.
//!
//! A connection given back to an sqlx pool is checked before it is idle
//! again: a task is spawned that pings it (a round trip to PostgreSQL, a
//! hand-off to SQLite's connection thread and back). A group that took its
//! connection from the pool and gave it back paid that round trip once per
//! group, and the next group waited for it: 157 µs of a 1.15 ms group on
//! SQLite (BENCHMARKS.md, "A group in one hand-off"). The writer keeps its
//! connections instead, in a pool of their own (so holding them never
//! starves the requests' pool), and gives one back only after a group
//! wrote well: a connection whose group failed is dropped to the pool,
//! which checks it, and so are the others it holds (a failure is most often
//! the server gone away, which broke them all), so the next group takes a
//! connection the pool has checked or made.

use std::sync::Mutex;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use super::StoreError;

/// Connections of `pool` that a writer took and holds.
pub struct Held<DB: Database> {
    pool: Pool<DB>,
    idle: Mutex<Vec<PoolConnection<DB>>>,
}

impl<DB: Database> Held<DB> {
    /// Holds connections of `pool` (the writer's own).
    pub fn new(pool: Pool<DB>) -> Self {
        Held {
            pool,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A held connection, or a new one from the pool.
    pub async fn take(&self) -> Result<PoolConnection<DB>, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(conn) => Ok(conn),
            None => Ok(self.pool.acquire().await?),
        }
    }

    /// Gives every held connection back to the pool, which checks each.
    pub fn give_up(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Holds `conn` again for the next group.
    pub fn give(&self, conn: PoolConnection<DB>) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}
