//! The attempt history's writes, run by the writer inside its transaction
//! right after the delivery's own change: one `INSERT` per attempt (a
//! multi-row one for a run of deliveries), and, only once a delivery has
//! more than [`ATTEMPTS_KEPT`] attempts, the delete of the oldest.
//!
//! Must not decide whether an attempt is recorded: the writer records it
//! only when the op changed its row (so history and state agree).

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::store::StoreError;
use crate::store::history::{ATTEMPTS_KEPT, AttemptOf};

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
