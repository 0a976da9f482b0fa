//! Redis Streams queue: one stream with a consumer group, a sorted set of delayed
//! tasks, stalled entries taken over from dead consumers, a dead-letter stream.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamPendingCountReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio::sync::Mutex;

use super::queue::{Leased, Queue, QueueError, Task};

const GROUP: &str = "dispatch";
/// Entries taken more often than this go to the dead-letter stream.
const MAX_DELIVERIES: usize = 10;
const STREAM_MAXLEN: usize = 1_000_000;

/// Moves due delayed tasks into the stream, atomically (one node moves each).
const MOVE_DUE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local task = cjson.decode(member)['task']
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'task', cjson.encode(task))
  end
end
return #due
"#;

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError(e.to_string())
}

/// The Redis Streams queue of one deployment (keys under the configured prefix).
pub struct RedisQueue {
    conn: ConnectionManager,
    /// Blocking reads get their own connection, so they never hold up other commands.
    reader: Mutex<Option<MultiplexedConnection>>,
    client: redis::Client,
    stream: String,
    delayed: String,
    dead: String,
    consumer: String,
    visibility: Duration,
    last_reclaim: AtomicI64,
    mover: redis::Script,
}

impl RedisQueue {
    /// Connects and makes sure the consumer group exists.
    pub async fn new(
        client: redis::Client,
        conn: ConnectionManager,
        prefix: &str,
        consumer: String,
        visibility: Duration,
    ) -> Result<Self, QueueError> {
        // One hash tag for all queue keys, so the Lua script works on Redis Cluster.
        let queue = RedisQueue {
            conn,
            reader: Mutex::new(None),
            client,
            stream: format!("{prefix}{{queue}}:stream"),
            delayed: format!("{prefix}{{queue}}:delayed"),
            dead: format!("{prefix}{{queue}}:dead"),
            consumer,
            visibility,
            last_reclaim: AtomicI64::new(0),
            mover: redis::Script::new(MOVE_DUE),
        };
        queue.ensure_group().await?;
        Ok(queue)
    }

    async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let created: redis::RedisResult<()> =
            conn.xgroup_create_mkstream(&self.stream, GROUP, "0").await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Number of entries waiting in the stream and in the delayed set.
    pub async fn depth(&self) -> Result<(u64, u64), QueueError> {
        let mut conn = self.conn.clone();
        let stream: u64 = conn.xlen(&self.stream).await.map_err(err)?;
        let delayed: u64 = conn.zcard(&self.delayed).await.map_err(err)?;
        Ok((stream, delayed))
    }

    fn parse(id: String, map: &std::collections::HashMap<String, redis::Value>) -> Option<Leased> {
        let raw: String = redis::from_redis_value(map.get("task")?).ok()?;
        let task: Task = serde_json::from_str(&raw).ok()?;
        Some(Leased { task, receipt: id })
    }

    /// Takes over entries idle longer than the visibility timeout; sends poison
    /// entries (taken too often) to the dead-letter stream.
    async fn reclaim(&self, max: usize) -> Result<Vec<Leased>, QueueError> {
        let now = crate::ids::now_millis();
        let every = (self.visibility.as_millis() as i64 / 2).max(500);
        if now - self.last_reclaim.load(Ordering::Relaxed) < every {
            return Ok(Vec::new());
        }
        self.last_reclaim.store(now, Ordering::Relaxed);
        let mut conn = self.conn.clone();
        let idle = self.visibility.as_millis() as usize;
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("IDLE")
            .arg(idle)
            .arg("-")
            .arg("+")
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        let mut claim = Vec::new();
        for entry in pending.ids {
            if entry.times_delivered > MAX_DELIVERIES {
                let moved: redis::RedisResult<()> = redis::pipe()
                    .atomic()
                    .cmd("XCLAIM")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(0)
                    .arg(&entry.id)
                    .ignore()
                    .cmd("XADD")
                    .arg(&self.dead)
                    .arg("*")
                    .arg("entry")
                    .arg(&entry.id)
                    .ignore()
                    .cmd("XACK")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg(&entry.id)
                    .ignore()
                    .query_async(&mut conn)
                    .await;
                moved.map_err(err)?;
                tracing::error!(entry = %entry.id, deliveries = entry.times_delivered, "queue entry dead-lettered");
                metrics::counter!(crate::telemetry::names::QUEUE_DEAD_LETTERED).increment(1);
            } else {
                claim.push(entry.id);
            }
        }
        if claim.is_empty() {
            return Ok(Vec::new());
        }
        let reply: redis::streams::StreamClaimReply = conn
            .xclaim(&self.stream, GROUP, &self.consumer, idle, &claim)
            .await
            .map_err(err)?;
        metrics::counter!(crate::telemetry::names::QUEUE_RECLAIMED)
            .increment(reply.ids.len() as u64);
        Ok(reply
            .ids
            .into_iter()
            .filter_map(|entry| Self::parse(entry.id, &entry.map))
            .collect())
    }

    async fn reader(&self) -> Result<MultiplexedConnection, QueueError> {
        let mut slot = self.reader.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        // Reads block for up to a second; an answer later than this means a dead server.
        let config = crate::redis_connection_config(std::time::Duration::from_secs(10));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(err)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

#[async_trait]
impl Queue for RedisQueue {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn push(&self, tasks: Vec<Task>) -> Result<(), QueueError> {
        let tasks: Vec<Task> = tasks.into_iter().map(Task::shareable).collect();
        let mut pipe = redis::pipe();
        for task in &tasks {
            let json = serde_json::to_string(task).map_err(err)?;
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_MAXLEN)
                .arg("*")
                .arg("task")
                .arg(json)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(err)
    }

    async fn push_at(&self, task: Task, due_ms: i64) -> Result<(), QueueError> {
        let task = task.shareable();
        let member =
            serde_json::json!({"nonce": crate::ids::random_token(8), "task": task}).to_string();
        let mut conn = self.conn.clone();
        conn.zadd::<_, _, _, ()>(&self.delayed, member, due_ms)
            .await
            .map_err(err)
    }

    async fn pop(&self, max: usize, wait: Duration) -> Result<Vec<Leased>, QueueError> {
        let mut conn = self.conn.clone();
        self.mover
            .key(&self.delayed)
            .key(&self.stream)
            .arg(crate::ids::now_millis())
            .arg(STREAM_MAXLEN)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(err)?;
        let reclaimed = self.reclaim(max).await?;
        if !reclaimed.is_empty() {
            return Ok(reclaimed);
        }
        let options = StreamReadOptions::default()
            .group(GROUP, &self.consumer)
            .count(max)
            .block(wait.as_millis() as usize);
        let mut reader = self.reader().await?;
        let reply: redis::RedisResult<Option<StreamReadReply>> = reader
            .xread_options(&[&self.stream], &[">"], &options)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") => {
                // The stream was deleted (Redis restarted or flushed): recreate it.
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => {
                *self.reader.lock().await = None;
                return Err(err(e));
            }
        };
        Ok(reply
            .map(|r| r.keys)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|key| key.ids)
            .filter_map(|entry| Self::parse(entry.id, &entry.map))
            .collect())
    }

    async fn ack(&self, leased: &Leased) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&leased.receipt)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(&leased.receipt)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(err)
    }

    async fn release(&self, _leased: Leased) -> Result<(), QueueError> {
        // Left pending: another consumer (or this one) takes it after the visibility timeout.
        Ok(())
    }
}
