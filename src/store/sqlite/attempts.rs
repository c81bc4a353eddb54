//! The writes of attempts' results ([`Op::Delivered`], [`Op::Retry`],
//! [`Op::Dead`]), run by the writer inside its transaction: the delivery's
//! change, then its attempt, recorded only when the row changed (so history
//! and state agree): one `INSERT` per attempt (a multi-row one for a run
//! of deliveries), and, only once a delivery has more than
//! [`ATTEMPTS_KEPT`] attempts, the delete of the oldest.
//!
//! Must not open or commit transactions (the writer does).

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::store::history::{ATTEMPTS_KEPT, AttemptOf};
use crate::store::{Op, StoreError};

/// Applies a run of [`Op::Delivered`] in one `UPDATE … FROM (VALUES …)`
/// and records their attempts in one `INSERT`; answers the rows changed
/// per op, as the writer's `apply_op` would.
pub(super) async fn mark_delivered(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    ops: &[&Op],
    now: i64,
) -> Result<Vec<u64>, StoreError> {
    let mut q = QueryBuilder::<Sqlite>::new("WITH v(id, attempts, status) AS (");
    q.push_values(ops, |mut row, op| match op {
        Op::Delivered {
            id,
            attempts,
            status,
            ..
        } => {
            row.push_bind(*id)
                .push_bind(*attempts)
                .push_bind(status.map(i64::from));
        }
        _ => {
            row.push_bind(None::<i64>)
                .push_bind(None::<i64>)
                .push_bind(None::<i64>);
        }
    });
    q.push(
        ") UPDATE deliveries SET state = 'delivered', attempts = v.attempts, \
         last_status = v.status, last_error = NULL, attempt_seq = attempt_seq + 1, updated_at = ",
    );
    q.push_bind(now);
    q.push(" FROM v WHERE deliveries.id = v.id RETURNING deliveries.id, deliveries.attempt_seq");
    let mut changed: HashMap<i64, i64> = q
        .build_query_as::<(i64, i64)>()
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    let counts = ops
        .iter()
        .map(|op| match op {
            Op::Delivered { id, .. } => u64::from(changed.contains_key(id)),
            _ => 0,
        })
        .collect();
    // One attempt per row changed (a row named twice was updated once).
    let run: Vec<_> = ops
        .iter()
        .filter_map(|op| op.attempt())
        .filter_map(|a| changed.remove(&a.id).map(|seq| (a, seq)))
        .collect();
    record_run(tx, &run).await?;
    Ok(counts)
}

/// Applies an attempt's result (`Delivered`, `Retry`, `Dead`: `update`
/// binds everything but the row's id) and records the attempt if the row
/// changed; answers the rows changed.
pub(super) async fn apply_result(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    op: &Op,
    update: sqlx::query::QueryScalar<'_, Sqlite, i64, sqlx::sqlite::SqliteArguments>,
) -> Result<u64, StoreError> {
    let Some(a) = op.attempt() else {
        return Ok(0);
    };
    let Some(seq) = update.bind(a.id).fetch_optional(&mut **tx).await? else {
        return Ok(0);
    };
    record(tx, &a, seq).await?;
    Ok(1)
}

/// Records attempt `a`, the `seq`-th of its delivery (from the row's
/// `attempt_seq` after the update).
pub(super) async fn record(
    tx: &mut SqliteConnection,
    a: &AttemptOf<'_>,
    seq: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO attempts (delivery_id, seq, attempt, at_ms, latency_ms, status, error, outcome) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.id)
    .bind(seq)
    .bind(a.attempt)
    .bind(a.at_ms)
    .bind(a.latency_ms)
    .bind(a.status)
    .bind(a.error)
    .bind(a.outcome)
    .execute(&mut *tx)
    .await?;
    cap(tx, a.id, seq).await
}

/// Records a run of attempts (each `(attempt, seq)` of a distinct
/// delivery) in one statement.
pub(super) async fn record_run(
    tx: &mut SqliteConnection,
    run: &[(AttemptOf<'_>, i64)],
) -> Result<(), StoreError> {
    if run.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO attempts (delivery_id, seq, attempt, at_ms, latency_ms, status, error, outcome) ",
    );
    q.push_values(run, |mut row, (a, seq)| {
        row.push_bind(a.id)
            .push_bind(*seq)
            .push_bind(a.attempt)
            .push_bind(a.at_ms)
            .push_bind(a.latency_ms)
            .push_bind(a.status)
            .push_bind(a.error)
            .push_bind(a.outcome);
    });
    q.build().execute(&mut *tx).await?;
    for (a, seq) in run {
        cap(tx, a.id, *seq).await?;
    }
    Ok(())
}

/// Keeps the last [`ATTEMPTS_KEPT`] attempts of `delivery` once the
/// `seq`-th is written (nothing to do before).
async fn cap(tx: &mut SqliteConnection, delivery: i64, seq: i64) -> Result<(), StoreError> {
    if seq > ATTEMPTS_KEPT {
        sqlx::query("DELETE FROM attempts WHERE delivery_id = ? AND seq <= ?")
            .bind(delivery)
            .bind(seq - ATTEMPTS_KEPT)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
