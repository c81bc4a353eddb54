//! Reads of the queue for operators: dead letters, pending rows grouped by
//! target and template, and each queue's figures for the metrics.

use sqlx::Row;

use super::{DEAD_COUNTS, PENDING_COUNTS, PENDING_GROUPS, QUEUE_HEAD, SqliteStore};
use crate::store::{DeadLetter, PendingGroup, QueueStats, StoreError};

impl SqliteStore {
    pub(super) async fn read_dead_letters(
        &self,
        target: Option<&str>,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, d.route, d.target, e.name, d.attempts, d.last_status, d.last_error, d.created_at, d.updated_at \
             FROM deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.state = 'dead' AND (?1 IS NULL OR d.target = ?1) ORDER BY d.id",
        )
        .bind(target)
        .fetch_all(&self.reads)
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
        let rows = sqlx::query(PENDING_GROUPS).fetch_all(&self.reads).await?;
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

    /// Counts over the partial indexes (queued rows only), then the head
    /// of each target's queue by its index: no read of delivered rows.
    pub(super) async fn read_queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        let mut out: Vec<QueueStats> = Vec::new();
        let pending = sqlx::query(PENDING_COUNTS).fetch_all(&self.reads).await?;
        for r in &pending {
            out.push(QueueStats {
                target: r.try_get(0)?,
                pending: r.try_get(1)?,
                ..QueueStats::default()
            });
        }
        let dead = sqlx::query(DEAD_COUNTS).fetch_all(&self.reads).await?;
        for r in &dead {
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
                .fetch_optional(&self.reads)
                .await?;
        }
        Ok(out)
    }
}
