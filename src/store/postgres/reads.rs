//! Reads, on the small read pool: the workers' pending rows, the maps beside
//! the queue (threads, remembered keys), the operators' figures, and the
//! windows of a retention pass. Same results as the SQLite engine's.
//!
//! Reads of the queue say `state = 'pending'` (or `'dead'`) literally so
//! the planner uses the partial indexes over queued rows, never a scan of
//! the delivered history (checked by a test).
//!
//! This module must not write.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use super::PgStore;
use crate::store::{
    DEDUPE_WINDOW_MS, DeadLetter, DeliveryRow, PendingDelivery, PendingGroup, QueueStats,
    StoreError, TemplateFilter, ThreadRef, ThreadState,
};

pub(super) const PENDING_COUNTS: &str =
    "SELECT target, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY target";
pub(super) const DEAD_COUNTS: &str =
    "SELECT target, COUNT(*) FROM deliveries WHERE state = 'dead' GROUP BY target";
pub(super) const QUEUE_HEAD: &str =
    "SELECT queued_at FROM deliveries WHERE state = 'pending' AND target = $1 ORDER BY id LIMIT 1";
pub(super) const PENDING_GROUPS: &str = "SELECT target, template, COUNT(*) FROM deliveries WHERE state = 'pending' \
     GROUP BY target, template ORDER BY target, template";
pub(super) const PENDING_READ: &str = "SELECT d.id, d.event_id, d.route, d.template, d.attempts, d.next_attempt_at, d.created_at, d.queued_at, e.body, e.timestamp, e.received_at, e.conversation \
     FROM deliveries d JOIN events e ON e.id = d.event_id \
     WHERE d.state = 'pending' AND d.target = $1 AND d.id > $2 ORDER BY d.id LIMIT $3";
pub(super) const PENDING_READ_FILTERED: &str = "SELECT d.id, d.event_id, d.route, d.template, d.attempts, d.next_attempt_at, d.created_at, d.queued_at, e.body, e.timestamp, e.received_at, e.conversation \
     FROM deliveries d JOIN events e ON e.id = d.event_id \
     WHERE d.state = 'pending' AND d.target = $1 AND d.id > $2 AND d.template = ANY($4) ORDER BY d.id LIMIT $3";
const DEAD_LETTERS: &str = "SELECT d.id, d.event_id, d.route, d.target, e.name, d.attempts, d.last_status, d.last_error, d.created_at, d.updated_at \
     FROM deliveries d JOIN events e ON e.id = d.event_id \
     WHERE d.state = 'dead' AND ($1::text IS NULL OR d.target = $1) ORDER BY d.id";

/// Rows looked at per retention chunk (one commit each).
pub(super) const PRUNE_CHUNK: i64 = 500;

fn groups(rows: &[PgRow]) -> Result<Vec<PendingGroup>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok(PendingGroup {
                target: r.try_get(0)?,
                template: r.try_get(1)?,
                count: r.try_get(2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Pending rows counted by target and template, on any connection (for
/// `check`, which opens no store).
pub(super) async fn pending_groups_on(
    conn: &mut PgConnection,
) -> Result<Vec<PendingGroup>, StoreError> {
    groups(&sqlx::query(PENDING_GROUPS).fetch_all(&mut *conn).await?)
}

impl PgStore {
    fn pool(&self) -> &PgPool {
        &self.reads
    }

    pub(super) async fn read_pending(
        &self,
        target: &str,
        after_id: i64,
        limit: u32,
        filter: &TemplateFilter,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let q = match filter {
            TemplateFilter::Any => sqlx::query(PENDING_READ),
            TemplateFilter::OneOf(names) if names.is_empty() => return Ok(Vec::new()),
            TemplateFilter::OneOf(_) => sqlx::query(PENDING_READ_FILTERED),
        };
        let mut q = q.bind(target).bind(after_id).bind(i64::from(limit));
        if let TemplateFilter::OneOf(names) = filter {
            q = q.bind(names);
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(PendingDelivery {
                    id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    route: r.try_get(2)?,
                    target: target.to_owned(),
                    template: r.try_get(3)?,
                    attempts: r.try_get(4)?,
                    next_attempt_at_ms: r.try_get(5)?,
                    created_at_ms: r.try_get(6)?,
                    queued_at_ms: r.try_get(7)?,
                    body: r.try_get(8)?,
                    timestamp_ms: r.try_get(9)?,
                    received_at_ms: r.try_get(10)?,
                    conversation: r.try_get(11)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn read_thread(
        &self,
        target: &str,
        conversation: &str,
    ) -> Result<Option<ThreadRef>, StoreError> {
        let row = sqlx::query(
            "SELECT thread, state FROM threads WHERE target = $1 AND conversation = $2",
        )
        .bind(target)
        .bind(conversation)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(ThreadRef {
                thread: r.try_get(0)?,
                state: ThreadState::parse(r.try_get::<&str, _>(1)?),
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| StoreError::from(e))
    }

    pub(super) async fn read_conversation_of(
        &self,
        target: &str,
        thread: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT conversation FROM threads WHERE target = $1 AND thread = $2 LIMIT 1",
        )
        .bind(target)
        .bind(thread)
        .fetch_optional(self.pool())
        .await?)
    }

    pub(super) async fn read_active_threads(
        &self,
        target: &str,
        since_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT t.thread FROM threads t WHERE t.target = $1 AND EXISTS \
             (SELECT 1 FROM events e WHERE e.conversation = t.conversation AND e.received_at >= $2)",
        )
        .bind(target)
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?)
    }

    pub(super) async fn read_remembered(&self, keys: &[String]) -> Result<bool, StoreError> {
        if keys.is_empty() {
            return Ok(false);
        }
        let since = self.clock.now_ms().saturating_sub(DEDUPE_WINDOW_MS);
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM seen WHERE key = ANY($1) AND seen_at >= $2 LIMIT 1")
                .bind(keys)
                .bind(since)
                .fetch_optional(self.pool())
                .await?;
        Ok(found.is_some())
    }

    pub(super) async fn read_dead_letters(
        &self,
        target: Option<&str>,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(DEAD_LETTERS)
            .bind(target)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    route: r.try_get(2)?,
                    target: r.try_get(3)?,
                    event: r.try_get(4)?,
                    attempts: r.try_get(5)?,
                    last_status: r.try_get(6)?,
                    last_error: r.try_get(7)?,
                    created_at_ms: r.try_get(8)?,
                    failed_at_ms: r.try_get(9)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn read_pending_groups(&self) -> Result<Vec<PendingGroup>, StoreError> {
        groups(&sqlx::query(PENDING_GROUPS).fetch_all(self.pool()).await?)
    }

    /// Counts over the partial indexes (queued rows only), then the head
    /// of each target's queue by its index: no read of delivered rows.
    pub(super) async fn read_queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        let mut out: Vec<QueueStats> = Vec::new();
        for r in &sqlx::query(PENDING_COUNTS).fetch_all(self.pool()).await? {
            out.push(QueueStats {
                target: r.try_get(0)?,
                pending: r.try_get(1)?,
                ..QueueStats::default()
            });
        }
        for r in &sqlx::query(DEAD_COUNTS).fetch_all(self.pool()).await? {
            let target: String = r.try_get(0)?;
            let count: i64 = r.try_get(1)?;
            match out.iter_mut().find(|s| s.target == target) {
                Some(s) => s.dead = count,
                None => out.push(QueueStats {
                    target,
                    dead: count,
                    ..QueueStats::default()
                }),
            }
        }
        for s in out.iter_mut().filter(|s| s.pending > 0) {
            s.head_queued_at_ms = sqlx::query_scalar(QUEUE_HEAD)
                .bind(&s.target)
                .fetch_optional(self.pool())
                .await?;
        }
        Ok(out)
    }

    /// The next window of at most [`PRUNE_CHUNK`] ids of `table` after
    /// `after`: its last id, and whether it reached rows at or past
    /// `before_ms` (by `time_col`), which ends the pass. `None`: no rows.
    pub(super) async fn prune_window(
        &self,
        deliveries: bool,
        after: i64,
        before_ms: i64,
    ) -> Result<Option<(i64, bool)>, StoreError> {
        let sql = if deliveries {
            "SELECT MAX(id), MAX(created_at), COUNT(*) FROM (SELECT id, created_at FROM deliveries WHERE id > $1 ORDER BY id LIMIT $2) w"
        } else {
            "SELECT MAX(id), MAX(received_at), COUNT(*) FROM (SELECT id, received_at FROM events WHERE id > $1 ORDER BY id LIMIT $2) w"
        };
        let row = sqlx::query(sql)
            .bind(after)
            .bind(PRUNE_CHUNK)
            .fetch_one(self.pool())
            .await?;
        let count: i64 = row.try_get(2)?;
        let (Some(last), Some(newest)) = (
            row.try_get::<Option<i64>, _>(0)?,
            row.try_get::<Option<i64>, _>(1)?,
        ) else {
            return Ok(None);
        };
        Ok(Some((last, newest >= before_ms || count < PRUNE_CHUNK)))
    }

    /// All delivery rows, oldest first (for inspection and tests).
    pub(super) async fn read_deliveries(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, route, target, template, state, attempts FROM deliveries ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRow {
                    id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    route: r.try_get(2)?,
                    target: r.try_get(3)?,
                    template: r.try_get(4)?,
                    state: r.try_get(5)?,
                    attempts: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn read_event_body(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT body FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub(super) async fn read_event_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(self.pool())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::clock::Clock;
    use crate::secret::DatabaseUrl;
    use crate::store::Store;

    /// `/metrics`, orphan counts and the workers' reads look only at queued
    /// rows: with sequential scans priced out, every plan goes through a
    /// partial index and none scans the deliveries table (which holds the
    /// whole retention period). Needs `CRISP_RELAY_TEST_DATABASE_URL`.
    #[tokio::test]
    async fn queue_reads_use_the_partial_indexes_not_a_table_scan() {
        let Ok(base) = std::env::var("CRISP_RELAY_TEST_DATABASE_URL") else {
            eprintln!(
                "skipped: CRISP_RELAY_TEST_DATABASE_URL is not set (see README, \"Running the PostgreSQL tests\")"
            );
            return;
        };
        let name = format!("crisp_test_{:016x}", fastrand::u64(..));
        let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url =
            DatabaseUrl::parse(&format!("{base}{sep}options=-c%20search_path%3D{name}")).unwrap();
        let store = PgStore::open(
            &url,
            std::time::Duration::from_secs(30),
            4,
            Clock::starting_at(0),
        )
        .await
        .unwrap();
        let mut conn = sqlx::PgConnection::connect(url.expose().as_str())
            .await
            .unwrap();
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut conn)
            .await
            .unwrap();
        let names = vec!["a".to_owned(), "b".to_owned()];
        let plans = [
            (PENDING_COUNTS, 0),
            (DEAD_COUNTS, 0),
            (QUEUE_HEAD, 1),
            (PENDING_GROUPS, 0),
            (PENDING_READ, 3),
            (PENDING_READ_FILTERED, 4),
            (DEAD_LETTERS, 1),
        ];
        for (sql, params) in plans {
            let explain = format!("EXPLAIN {sql}");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(explain));
            if params == 1 {
                q = q.bind("t");
            } else if params >= 3 {
                q = q.bind("t").bind(0_i64).bind(64_i64);
            }
            if params == 4 {
                q = q.bind(&names);
            }
            let plan: Vec<String> = q
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect();
            let plan = plan.join("\n");
            assert!(!plan.contains("Seq Scan on deliveries"), "{sql}\n{plan}");
            assert!(
                plan.contains("deliveries_pending") || plan.contains("deliveries_dead"),
                "{sql}\n{plan}"
            );
        }
        conn.close().await.unwrap();
        store.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {name} CASCADE")))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}
