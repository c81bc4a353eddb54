//! The statements of [`Op`]s, run by the writer inside its transaction:
//! the same changes, and the same counts of rows changed, as the SQLite
//! engine's.
//!
//! This module must not open transactions or decide what is applied (the
//! writer does: batching, fences).

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, PgConnection};

use crate::store::history::ATTEMPTS_KEPT;
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

/// Keeps the last [`ATTEMPTS_KEPT`] attempts of the rows in `u` (id,
/// attempt_seq): a CTE of the statements below. It sees the table as it
/// was before the statement, and deletes only attempts older than those
/// kept.
fn cap() -> String {
    format!(
        "c AS (DELETE FROM attempts x USING u WHERE x.delivery_id = u.id AND x.seq <= u.attempt_seq - {ATTEMPTS_KEPT})"
    )
}

/// A run of [`Op::Delivered`] in one `UPDATE … FROM unnest(…)` that also
/// records their attempts; answers the rows changed per op, as
/// [`apply_op`] would.
async fn mark_delivered(
    tx: &mut PgConnection,
    ops: &[&Op],
    now: i64,
) -> Result<Vec<u64>, StoreError> {
    let (mut ids, mut attempts, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
    let (mut at, mut latency) = (Vec::new(), Vec::new());
    for a in ops.iter().filter_map(|op| op.attempt()) {
        ids.push(a.id);
        attempts.push(a.attempt);
        statuses.push(a.status);
        at.push(a.at_ms);
        latency.push(a.latency_ms);
    }
    let changed: HashSet<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "WITH u AS (UPDATE deliveries d SET state = 'delivered', attempts = v.attempts, \
         last_status = v.status, last_error = NULL, attempt_seq = d.attempt_seq + 1, updated_at = $4 \
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $5::bigint[], $6::bigint[]) \
         AS v(id, attempts, status, at_ms, latency_ms) \
         WHERE d.id = v.id RETURNING d.id, d.attempt_seq, v.attempts, v.status, v.at_ms, v.latency_ms), \
         a AS (INSERT INTO attempts (delivery_id, seq, attempt, at_ms, latency_ms, status, outcome) \
         SELECT id, attempt_seq, attempts, at_ms, latency_ms, status, 'delivered' FROM u), {} \
         SELECT id FROM u",
        cap()
    )))
    .bind(&ids)
    .bind(&attempts)
    .bind(&statuses)
    .bind(now)
    .bind(&at)
    .bind(&latency)
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

/// An attempt's result: `set` (the columns it changes: `$4` is the
/// attempt count, `$7` the status, `$8` the error, `$9` `next_at` if
/// given) on the row if `cond` holds, and the attempt recorded with it, in
/// one statement. Answers the rows changed.
async fn apply_result(
    tx: &mut PgConnection,
    op: &Op,
    now: i64,
    set: &str,
    cond: &str,
    next_at: Option<i64>,
) -> Result<u64, StoreError> {
    let Some(a) = op.attempt() else {
        return Ok(0);
    };
    let mut q = sqlx::query_scalar(AssertSqlSafe(format!(
        "WITH u AS (UPDATE deliveries SET {set}, attempt_seq = attempt_seq + 1, updated_at = $2 \
         WHERE id = $1{cond} RETURNING id, attempt_seq), \
         a AS (INSERT INTO attempts (delivery_id, seq, attempt, at_ms, latency_ms, status, error, outcome) \
         SELECT id, attempt_seq, $4, $5, $6, $7, $8, $3 FROM u), {} \
         SELECT COUNT(*) FROM u",
        cap()
    )))
    .bind(a.id)
    .bind(now)
    .bind(a.outcome)
    .bind(a.attempt)
    .bind(a.at_ms)
    .bind(a.latency_ms)
    .bind(a.status)
    .bind(a.error);
    if let Some(at) = next_at {
        q = q.bind(at);
    }
    let changed: i64 = q.fetch_one(&mut *tx).await?;
    Ok(u64::try_from(changed).unwrap_or(0))
}

async fn apply_op(tx: &mut PgConnection, op: &Op, now: i64) -> Result<u64, StoreError> {
    let done = match op {
        // The result of an attempt: the row's change and its history, in
        // one statement.
        Op::Delivered { .. } => {
            let set = "state = 'delivered', attempts = $4, last_status = $7, last_error = NULL";
            return apply_result(tx, op, now, set, "", None).await;
        }
        Op::Retry { next_attempt_at_ms, .. } => {
            let set = "attempts = $4, next_attempt_at = $9, last_status = $7, last_error = $8";
            let at = Some(*next_attempt_at_ms);
            return apply_result(tx, op, now, set, " AND state = 'pending'", at).await;
        }
        Op::Dead { .. } => {
            let set = "state = 'dead', attempts = $4, last_status = $7, last_error = $8";
            return apply_result(tx, op, now, set, " AND state = 'pending'", None).await;
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
