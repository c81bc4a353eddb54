//! The single writer: every write to the SQLite file goes through this task.
//! It takes every request waiting on its two queues (ingest's, bounded by
//! `store.queue_capacity`; everything else's), commits them in one
//! transaction, then answers each.
//!
//! Ingest's queue is separate so that delivery results, however many are
//! waiting, never take the room that decides when ingest answers 503. A
//! batch holding accepted events commits with `synchronous = FULL` (the
//! commit waits for fsync); a batch of results alone with `NORMAL`, which
//! survives a crash of the process but not of the machine (a result lost
//! that way means one repeated send). If the switch back to `FULL` fails,
//! the batch fails: accepted events are never committed without fsync.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use tokio::sync::{Notify, mpsc, oneshot};

use super::attempts;
use super::dedupe::duplicates;
use crate::clock::Clock;
use crate::store::{Accepted, DEDUPE_WINDOW_MS, NewDelivery, NewEvent, Op, StoreError};

/// Most requests folded into one transaction.
const MAX_BATCH: usize = 1024;
/// Rows per multi-row statement (SQLite allows 32766 parameters).
const ROWS_PER_STATEMENT: usize = 500;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Request {
    Accept {
        event: NewEvent,
        deliveries: Vec<NewDelivery>,
        reply: Reply<Accepted>,
    },
    Probe {
        reply: Reply<()>,
    },
    /// A change to delivery rows; answers the number of rows changed.
    Op {
        op: Op,
        reply: Reply<u64>,
    },
    /// Answered once everything queued before it is committed.
    Barrier {
        reply: Reply<()>,
    },
    /// Commit what is queued, then refuse new requests and stop.
    Close,
}

/// Group-commit counters, logged when the store closes.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub max_batch: AtomicU64,
}

/// One `Notify` per target, signalled after a commit that gives the target
/// work (new deliveries, replays, moves). `notify_one` keeps a permit when
/// nobody waits, so a worker busy while the commit lands does not miss it.
#[derive(Clone, Default)]
pub(super) struct Wakers(Arc<std::sync::Mutex<HashMap<String, Arc<Notify>>>>);

impl Wakers {
    pub(super) fn get(&self, target: &str) -> Arc<Notify> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(target.to_owned()).or_default().clone()
    }

    fn wake(&self, target: &str) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(target) {
            n.notify_one();
        }
    }

    fn wake_all(&self) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for n in map.values() {
            n.notify_one();
        }
    }
}

/// What the writer must do about `synchronous` before a batch, given
/// whether the batch holds accepted events (`need_full`) and the mode in
/// force. `Some(pragma)`: run it first.
pub(super) fn sync_switch(need_full: bool, full_now: bool) -> Option<&'static str> {
    match (need_full, full_now) {
        (true, false) => Some("PRAGMA synchronous = FULL"),
        (false, true) => Some("PRAGMA synchronous = NORMAL"),
        _ => None,
    }
}

/// Whether a batch may be committed after the switch `sync_switch` asked
/// for succeeded or not: a batch with accepted events needs `FULL`; one
/// without may commit in whichever mode is in force.
pub(super) fn may_commit(need_full: bool, switched: bool) -> bool {
    switched || !need_full
}

pub(super) struct Writer {
    pub conn: SqliteConnection,
    pub accepts: mpsc::Receiver<Request>,
    pub ops: mpsc::Receiver<Request>,
    pub next_id: i64,
    pub stats: Arc<StoreStats>,
    pub wakers: Wakers,
    pub clock: Clock,
}

impl Writer {
    pub(super) async fn run(mut self) {
        let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
        let mut full_sync = true;
        let (mut accepts_open, mut ops_open) = (true, true);
        loop {
            let first = tokio::select! {
                biased;
                r = self.accepts.recv(), if accepts_open => match r {
                    Some(r) => r,
                    None => { accepts_open = false; continue; }
                },
                r = self.ops.recv(), if ops_open => match r {
                    Some(r) => r,
                    None => { ops_open = false; continue; }
                },
                else => break,
            };
            batch.push(first);
            // Everything else waiting, from both queues in turn.
            while batch.len() < MAX_BATCH {
                let before = batch.len();
                if let Ok(r) = self.accepts.try_recv() {
                    batch.push(r);
                }
                if let Ok(r) = self.ops.try_recv() {
                    batch.push(r);
                }
                if batch.len() == before {
                    break;
                }
            }
            if batch.iter().any(|r| matches!(r, Request::Close)) {
                // Queued requests are still received; new ones are refused.
                self.accepts.close();
                self.ops.close();
            }
            let need_full = batch
                .iter()
                .any(|r| matches!(r, Request::Accept { .. } | Request::Probe { .. }));
            let mut switched = true;
            if let Some(pragma) = sync_switch(need_full, full_sync) {
                match sqlx::query(pragma).execute(&mut self.conn).await {
                    Ok(_) => full_sync = need_full,
                    Err(e) => {
                        switched = false;
                        tracing::error!(error = %e, pragma, "cannot switch SQLite's synchronous mode");
                    }
                }
            }
            let result = if may_commit(need_full, switched) {
                self.commit(&batch).await
            } else {
                Err(StoreError::NotDurable(
                    "see the previous error in the log".into(),
                ))
            };
            self.answer(&mut batch, result).await;
        }
        let _ = self.conn.close().await;
    }

    /// Answers every request of a committed (or failed) batch.
    async fn answer(&mut self, batch: &mut Vec<Request>, result: Result<Outcome, StoreError>) {
        let first_id = self.next_id;
        match result {
            Ok(Outcome { counts, duplicate }) => {
                let accepted = duplicate.iter().filter(|d| !**d).count();
                wake_targets(&self.wakers, batch, &duplicate);
                let mut counts = counts.into_iter();
                let mut duplicate = duplicate.into_iter();
                self.next_id += accepted as i64;
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .events
                    .fetch_add(accepted as u64, Ordering::Relaxed);
                self.stats
                    .max_batch
                    .fetch_max(accepted as u64, Ordering::Relaxed);
                let mut id = first_id;
                for req in batch.drain(..) {
                    match req {
                        Request::Accept { reply, .. } => {
                            if duplicate.next().unwrap_or(false) {
                                let _ = reply.send(Ok(Accepted::Duplicate));
                            } else {
                                let _ = reply.send(Ok(Accepted::New(id)));
                                id += 1;
                            }
                        }
                        Request::Probe { reply } | Request::Barrier { reply } => {
                            let _ = reply.send(Ok(()));
                        }
                        Request::Op { reply, .. } => {
                            let _ = reply.send(Ok(counts.next().unwrap_or(0)));
                        }
                        Request::Close => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "store commit failed; answering 503");
                for req in batch.drain(..) {
                    match req {
                        Request::Accept { reply, .. } => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Request::Probe { reply } | Request::Barrier { reply } => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Request::Op { reply, .. } => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Request::Close => {}
                    }
                }
                // Ids of a failed batch may be reused: nothing was written.
                if let Ok(id) =
                    sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) + 1 FROM events")
                        .fetch_one(&mut self.conn)
                        .await
                {
                    self.next_id = id;
                }
            }
        }
    }

    /// Writes `batch` in one transaction; answers the rows changed per op,
    /// and which accepts were duplicates.
    async fn commit(&mut self, batch: &[Request]) -> Result<Outcome, StoreError> {
        let now = self.clock.now_ms();
        let first_id = self.next_id;
        let mut tx = self.conn.begin().await?;
        let accepts: Vec<(&NewEvent, &[NewDelivery])> = batch
            .iter()
            .filter_map(|r| match r {
                Request::Accept {
                    event, deliveries, ..
                } => Some((event, deliveries.as_slice())),
                _ => None,
            })
            .collect();
        // Resends of an event accepted in the last 24 h (also earlier in
        // this batch) store nothing. A key older than that is taken over.
        // One statement per chunk of distinct keys; it answers the keys it
        // inserted or took over.
        let keys: Vec<Option<&str>> = accepts.iter().map(|(e, _)| e.dedupe.as_deref()).collect();
        let mut distinct: Vec<&str> = Vec::with_capacity(keys.len());
        let mut listed = HashSet::with_capacity(keys.len());
        for key in keys.iter().flatten() {
            if listed.insert(*key) {
                distinct.push(key);
            }
        }
        let mut fresh: HashSet<String> = HashSet::with_capacity(distinct.len());
        for chunk in distinct.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO seen (key, seen_at) ");
            q.push_values(chunk, |mut row, key| {
                row.push_bind(*key).push_bind(now);
            });
            q.push(
                " ON CONFLICT(key) DO UPDATE SET seen_at = excluded.seen_at WHERE seen.seen_at < ",
            );
            q.push_bind(now.saturating_sub(DEDUPE_WINDOW_MS));
            q.push(" RETURNING key");
            fresh.extend(q.build_query_scalar::<String>().fetch_all(&mut *tx).await?);
        }
        let duplicate = duplicates(&keys, &fresh);
        let events: Vec<(i64, &NewEvent, &[NewDelivery])> = accepts
            .iter()
            .zip(&duplicate)
            .filter(|(_, dup)| !**dup)
            .enumerate()
            .map(|(i, ((e, d), _))| (first_id + i as i64, *e, *d))
            .collect();
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (id, received_at, website_id, name, timestamp, body, conversation) ",
            )
            .push_values(chunk, |mut row, (id, e, _)| {
                row.push_bind(*id)
                    .push_bind(e.received_at_ms)
                    .push_bind(e.website_id.as_str())
                    .push_bind(e.name.as_str())
                    .push_bind(e.timestamp_ms)
                    .push_bind(e.body.as_str())
                    .push_bind(e.conversation.as_deref());
            })
            .build()
            .execute(&mut *tx)
            .await?;
        }
        let deliveries: Vec<(i64, &NewDelivery)> = events
            .iter()
            .flat_map(|(id, _, ds)| ds.iter().map(move |d| (*id, d)))
            .collect();
        for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
            QueryBuilder::<Sqlite>::new(
                "INSERT INTO deliveries (event_id, route, target, template, next_attempt_at, created_at, updated_at, queued_at) ",
            )
            .push_values(chunk, |mut row, (id, d)| {
                row.push_bind(*id)
                    .push_bind(d.route.as_str())
                    .push_bind(d.target.as_str())
                    .push_bind(d.template.as_deref())
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(now);
            })
            .build()
            .execute(&mut *tx)
            .await?;
        }
        if batch.iter().any(|r| matches!(r, Request::Probe { .. })) {
            sqlx::query("INSERT INTO meta (key, value) VALUES ('ready_probe', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
                .bind(now.to_string())
                .execute(&mut *tx)
                .await?;
        }
        // Ops apply in the order they came; a run of consecutive `Delivered`
        // (a fast target's results) is one statement rather than one each.
        let ops: Vec<&Op> = batch
            .iter()
            .filter_map(|r| match r {
                Request::Op { op, .. } => Some(op),
                _ => None,
            })
            .collect();
        let mut counts = Vec::with_capacity(ops.len());
        let mut rest = ops.as_slice();
        while let Some((first, _)) = rest.split_first() {
            let run = rest
                .iter()
                .take_while(|op| matches!(op, Op::Delivered { .. }))
                .count();
            if run > 1 {
                for chunk in rest[..run].chunks(ROWS_PER_STATEMENT) {
                    counts.extend(attempts::mark_delivered(&mut tx, chunk, now).await?);
                }
                rest = &rest[run..];
            } else {
                counts.push(apply_op(&mut tx, first, now).await?);
                rest = &rest[1..];
            }
        }
        tx.commit().await?;
        Ok(Outcome { counts, duplicate })
    }
}

/// What a committed batch did: rows changed per op, and per accept whether
/// it was a duplicate (in the batch's order).
struct Outcome {
    counts: Vec<u64>,
    duplicate: Vec<bool>,
}

/// Wakes the workers that a committed batch gave work to (`duplicate`:
/// per accept, in order, whether it stored nothing).
fn wake_targets(wakers: &Wakers, batch: &[Request], duplicate: &[bool]) {
    let mut duplicate = duplicate.iter();
    for req in batch {
        match req {
            Request::Accept { deliveries, .. } => {
                if duplicate.next().copied().unwrap_or(false) {
                    continue;
                }
                for d in deliveries {
                    wakers.wake(&d.target);
                }
            }
            Request::Op {
                op: Op::Replay {
                    target: Some(t), ..
                },
                ..
            } => wakers.wake(t),
            Request::Op {
                op: Op::Replay { target: None, .. },
                ..
            } => wakers.wake_all(),
            Request::Op {
                op: Op::MovePending { from, to, .. },
                ..
            } => wakers.wake(to.as_deref().unwrap_or(from)),
            _ => {}
        }
    }
}

async fn apply_op(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    op: &Op,
    now: i64,
) -> Result<u64, StoreError> {
    let done = match op {
        // The result of an attempt: the row's change, then its history.
        Op::Delivered { attempts, status, .. } => {
            let update = sqlx::query_scalar("UPDATE deliveries SET state = 'delivered', attempts = ?, last_status = ?, last_error = NULL, attempt_seq = attempt_seq + 1, updated_at = ? WHERE id = ? RETURNING attempt_seq")
                .bind(attempts)
                .bind(status.map(i64::from))
                .bind(now);
            return attempts::apply_result(tx, op, update).await;
        }
        Op::Retry { attempts, next_attempt_at_ms, status, error, .. } => {
            let update = sqlx::query_scalar("UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_status = ?, last_error = ?, attempt_seq = attempt_seq + 1, updated_at = ? WHERE id = ? AND state = 'pending' RETURNING attempt_seq")
                .bind(attempts)
                .bind(next_attempt_at_ms)
                .bind(status.map(i64::from))
                .bind(error)
                .bind(now);
            return attempts::apply_result(tx, op, update).await;
        }
        Op::Dead { attempts, status, error, .. } => {
            let update = sqlx::query_scalar("UPDATE deliveries SET state = 'dead', attempts = ?, last_status = ?, last_error = ?, attempt_seq = attempt_seq + 1, updated_at = ? WHERE id = ? AND state = 'pending' RETURNING attempt_seq")
                .bind(attempts)
                .bind(status.map(i64::from))
                .bind(error)
                .bind(now);
            return attempts::apply_result(tx, op, update).await;
        }
        // Due at once (0 is before any clock's now) and with a fresh
        // max_age: a replay is a new start.
        Op::Replay { id, target } => {
            sqlx::query("UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = 0, queued_at = ?1, updated_at = ?1 WHERE state = 'dead' AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR target = ?3)")
                .bind(now)
                .bind(id)
                .bind(target)
                .execute(&mut **tx)
                .await?
        }
        Op::PurgeDead { before_ms } => {
            sqlx::query("DELETE FROM deliveries WHERE state = 'dead' AND updated_at < ?")
                .bind(before_ms)
                .execute(&mut **tx)
                .await?
        }
        Op::MovePending { from, template, to, to_template } => {
            sqlx::query("UPDATE deliveries SET target = COALESCE(?1, target), template = COALESCE(?2, template), updated_at = ?3 WHERE state = 'pending' AND target = ?4 AND (?5 IS NULL OR template = ?5)")
                .bind(to)
                .bind(to_template)
                .bind(now)
                .bind(from)
                .bind(template)
                .execute(&mut **tx)
                .await?
        }
        Op::PurgePending { target, template } => {
            sqlx::query("DELETE FROM deliveries WHERE state = 'pending' AND target = ?1 AND (?2 IS NULL OR template = ?2)")
                .bind(target)
                .bind(template)
                .execute(&mut **tx)
                .await?
        }
        Op::PruneDelivered { after_id, up_to_id, before_ms } => {
            sqlx::query("DELETE FROM deliveries WHERE id > ? AND id <= ? AND state = 'delivered' AND updated_at < ?")
                .bind(after_id)
                .bind(up_to_id)
                .bind(before_ms)
                .execute(&mut **tx)
                .await?
        }
        Op::SetThread { target, conversation, thread } => {
            sqlx::query("INSERT INTO threads (target, conversation, thread, state, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(target, conversation) DO UPDATE SET thread = excluded.thread, state = excluded.state, updated_at = excluded.updated_at")
                .bind(target)
                .bind(conversation)
                .bind(&thread.thread)
                .bind(thread.state.as_str())
                .bind(now)
                .execute(&mut **tx)
                .await?
        }
        Op::ForgetThread { target, conversation } => {
            sqlx::query("DELETE FROM threads WHERE target = ? AND conversation = ?")
                .bind(target)
                .bind(conversation)
                .execute(&mut **tx)
                .await?
        }
        Op::Remember { key } => {
            sqlx::query("INSERT INTO seen (key, seen_at) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET seen_at = excluded.seen_at")
                .bind(key)
                .bind(now)
                .execute(&mut **tx)
                .await?
        }
        Op::PruneKeys { before_ms } => {
            sqlx::query("DELETE FROM seen WHERE id IN (SELECT id FROM seen WHERE seen_at < ? ORDER BY seen_at LIMIT 500)")
                .bind(before_ms)
                .execute(&mut **tx)
                .await?
        }
        Op::PruneEvents { after_id, up_to_id, before_ms } => {
            sqlx::query("DELETE FROM events WHERE id > ? AND id <= ? AND received_at < ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)")
                .bind(after_id)
                .bind(up_to_id)
                .bind(before_ms)
                .execute(&mut **tx)
                .await?
        }
    };
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (holds accepted events, FULL in force) → pragma to run; then whether
    /// the batch may commit if that pragma fails.
    #[test]
    fn synchronous_mode_table() {
        let cases = [
            (true, true, None, true),
            (true, false, Some("PRAGMA synchronous = FULL"), false),
            (false, true, Some("PRAGMA synchronous = NORMAL"), true),
            (false, false, None, true),
        ];
        for (need_full, full_now, pragma, commit_if_switch_fails) in cases {
            assert_eq!(
                sync_switch(need_full, full_now),
                pragma,
                "{need_full} {full_now}"
            );
            let switched = pragma.is_none();
            assert!(may_commit(need_full, switched) || pragma.is_some());
            if pragma.is_some() {
                assert_eq!(
                    may_commit(need_full, false),
                    commit_if_switch_fails,
                    "{need_full} {full_now}"
                );
                assert!(may_commit(need_full, true));
            }
        }
    }
}
