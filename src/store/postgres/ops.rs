//! The statements of [`Op`]s, run by the writer inside its transaction:
//! the same changes, and the same counts of rows changed, as the SQLite
//! engine's.
//!
//! This module must not open transactions or decide what is applied (the
//! writer does: batching, fences).

use std::collections::HashSet;

use sqlx::PgConnection;

use crate::store::{Op, StoreError};

/// Applies `ops` in order; answers the rows changed per op. A run of
/// consecutive [`Op::Delivered`] (a fast target's results) is one
/// statement rather than one each.
pub(super) async fn apply_all(
    tx: &mut PgConnection,
    ops: &[&Op],
    now: i64,
) -> Result<Vec<u64>, StoreError> {
    let mut counts = Vec::with_capacity(ops.len());
    let mut rest = ops;
    while let Some((first, _)) = rest.split_first() {
        let run = rest
            .iter()
            .take_while(|op| matches!(op, Op::Delivered { .. }))
            .count();
        if run > 1 {
            counts.extend(mark_delivered(tx, &rest[..run], now).await?);
            rest = &rest[run..];
        } else {
            counts.push(apply_op(tx, first, now).await?);
            rest = &rest[1..];
        }
    }
    Ok(counts)
}

/// A run of [`Op::Delivered`] in one `UPDATE … FROM unnest(…)`; answers
/// the rows changed per op, as [`apply_op`] would.
async fn mark_delivered(
    tx: &mut PgConnection,
    ops: &[&Op],
    now: i64,
) -> Result<Vec<u64>, StoreError> {
    let (mut ids, mut attempts, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
    for op in ops {
        if let Op::Delivered {
            id,
            attempts: a,
            status,
        } = op
        {
            ids.push(*id);
            attempts.push(*a);
            statuses.push(status.map(i64::from));
        }
    }
    let changed: HashSet<i64> = sqlx::query_scalar(
        "UPDATE deliveries d SET state = 'delivered', attempts = v.attempts, \
         last_status = v.status, last_error = NULL, updated_at = $4 \
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, attempts, status) \
         WHERE d.id = v.id RETURNING d.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&statuses)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    Ok(ops
        .iter()
        .map(|op| match op {
            Op::Delivered { id, .. } => u64::from(changed.contains(id)),
            _ => 0,
        })
        .collect())
}

async fn apply_op(tx: &mut PgConnection, op: &Op, now: i64) -> Result<u64, StoreError> {
    let done = match op {
        Op::Delivered { id, attempts, status } => {
            sqlx::query("UPDATE deliveries SET state = 'delivered', attempts = $1, last_status = $2, last_error = NULL, updated_at = $3 WHERE id = $4")
                .bind(attempts)
                .bind(status.map(i64::from))
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
        }
        Op::Retry { id, attempts, next_attempt_at_ms, status, error } => {
            sqlx::query("UPDATE deliveries SET attempts = $1, next_attempt_at = $2, last_status = $3, last_error = $4, updated_at = $5 WHERE id = $6 AND state = 'pending'")
                .bind(attempts)
                .bind(next_attempt_at_ms)
                .bind(status.map(i64::from))
                .bind(error)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
        }
        Op::Dead { id, attempts, status, error } => {
            sqlx::query("UPDATE deliveries SET state = 'dead', attempts = $1, last_status = $2, last_error = $3, updated_at = $4 WHERE id = $5 AND state = 'pending'")
                .bind(attempts)
                .bind(status.map(i64::from))
                .bind(error)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
        }
        // Due at once (0 is before any clock's now) and with a fresh
        // max_age: a replay is a new start.
        Op::Replay { id, target } => {
            sqlx::query("UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = 0, queued_at = $1, updated_at = $1 WHERE state = 'dead' AND ($2::bigint IS NULL OR id = $2) AND ($3::text IS NULL OR target = $3)")
                .bind(now)
                .bind(id)
                .bind(target)
                .execute(&mut *tx)
                .await?
        }
        Op::PurgeDead { before_ms } => {
            sqlx::query("DELETE FROM deliveries WHERE state = 'dead' AND updated_at < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
        }
        Op::MovePending { from, template, to, to_template } => {
            sqlx::query("UPDATE deliveries SET target = COALESCE($1, target), template = COALESCE($2, template), updated_at = $3 WHERE state = 'pending' AND target = $4 AND ($5::text IS NULL OR template = $5)")
                .bind(to)
                .bind(to_template)
                .bind(now)
                .bind(from)
                .bind(template)
                .execute(&mut *tx)
                .await?
        }
        Op::PurgePending { target, template } => {
            sqlx::query("DELETE FROM deliveries WHERE state = 'pending' AND target = $1 AND ($2::text IS NULL OR template = $2)")
                .bind(target)
                .bind(template)
                .execute(&mut *tx)
                .await?
        }
        Op::PruneDelivered { after_id, up_to_id, before_ms } => {
            sqlx::query("DELETE FROM deliveries WHERE id > $1 AND id <= $2 AND state = 'delivered' AND updated_at < $3")
                .bind(after_id)
                .bind(up_to_id)
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
        }
        Op::SetThread { target, conversation, thread } => {
            sqlx::query("INSERT INTO threads (target, conversation, thread, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (target, conversation) DO UPDATE SET thread = excluded.thread, state = excluded.state, updated_at = excluded.updated_at")
                .bind(target)
                .bind(conversation)
                .bind(&thread.thread)
                .bind(thread.state.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?
        }
        Op::ForgetThread { target, conversation } => {
            sqlx::query("DELETE FROM threads WHERE target = $1 AND conversation = $2")
                .bind(target)
                .bind(conversation)
                .execute(&mut *tx)
                .await?
        }
        Op::Remember { key } => {
            sqlx::query("INSERT INTO seen (key, seen_at) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET seen_at = excluded.seen_at")
                .bind(key)
                .bind(now)
                .execute(&mut *tx)
                .await?
        }
        Op::PruneKeys { before_ms } => {
            sqlx::query("DELETE FROM seen WHERE key IN (SELECT key FROM seen WHERE seen_at < $1 ORDER BY seen_at LIMIT 500)")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
        }
        Op::PruneEvents { after_id, up_to_id, before_ms } => {
            sqlx::query("DELETE FROM events WHERE id > $1 AND id <= $2 AND received_at < $3 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)")
                .bind(after_id)
                .bind(up_to_id)
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
        }
    };
    Ok(done.rows_affected())
}
