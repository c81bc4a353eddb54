//! The replica's single writer: every write this process makes to the
//! queue goes through this task, on its own connection. It takes every
//! request waiting on its two queues (ingest's, bounded by
//! `store.queue_capacity`; everything else's), commits them in one
//! transaction with few round trips (arrays through `unnest`, ids
//! allocated in one statement), then answers each.
//!
//! Ingest's queue is separate so that delivery results never take the room
//! that decides when ingest answers 503. A batch that fails (a lost
//! connection, say) is rolled back whole and each of its requests answered
//! with the error; the connection is dropped and a new one made for the
//! next batch. (A connection lost while `COMMIT` was on its way leaves the
//! outcome unknown: the requests are answered with the error, so ingest
//! answers 503 and Crisp's resend is then a duplicate by its key.)
//!
//! Batches holding accepted events take a transaction-scoped advisory lock
//! before allocating ids, so replicas commit new rows in id order and a
//! worker reading past an id never misses a row committed later below it.
//!
//! The statements of single ops are in `ops`; the lease check of fenced
//! ops in `leases`. This module must not read for anyone but itself.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, oneshot};

use super::notify::{ALL, CHANNEL, Wakers};
use super::{leases, ops};
use crate::clock::Clock;
use crate::store::{Accepted, DEDUPE_WINDOW_MS, Fence, NewDelivery, NewEvent, Op, StoreError};

/// Most requests folded into one transaction.
const MAX_BATCH: usize = 1024;

/// The advisory lock key that orders replicas' commits of new rows
/// ("crisp-in" in ASCII).
const INGEST_LOCK: i64 = 0x6372_6973_702d_696e;

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
    /// A change to rows; answers the number of rows changed. Under a
    /// `fence`, applied only while this replica holds that lease.
    Op {
        op: Op,
        fence: Option<Fence>,
        reply: Reply<u64>,
    },
    /// Answered once everything queued before it is committed.
    Barrier {
        reply: Reply<()>,
    },
    /// Commit what is queued, then refuse new requests and stop.
    Close,
}

/// Group-commit counters.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub max_batch: AtomicU64,
}

pub(super) struct Writer {
    pub conn: Option<PgConnection>,
    pub options: PgConnectOptions,
    pub accepts: mpsc::Receiver<Request>,
    pub ops: mpsc::Receiver<Request>,
    pub stats: Arc<StoreStats>,
    pub wakers: Wakers,
    pub clock: Clock,
    /// This replica's name, the holder of its leases.
    pub replica: Arc<str>,
}

/// What a committed batch did: per accept its id (`None`: a duplicate),
/// per op its answer, and the targets given work.
struct Outcome {
    ids: Vec<Option<i64>>,
    ops: Vec<Result<u64, StoreError>>,
    woken: Vec<String>,
}

impl Writer {
    pub(super) async fn run(mut self) {
        let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
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
            let result = self.commit_on_connection(&batch).await;
            self.answer(&mut batch, result);
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Commits `batch` on the writer's connection, connecting first if the
    /// last batch lost it. After any failure the connection is dropped
    /// (the server rolls back what it had), so nothing half-done lingers.
    async fn commit_on_connection(&mut self, batch: &[Request]) -> Result<Outcome, StoreError> {
        if !batch.iter().any(|r| !matches!(r, Request::Close)) {
            return Ok(Outcome {
                ids: Vec::new(),
                ops: Vec::new(),
                woken: Vec::new(),
            });
        }
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(super::connect(&self.options).await?),
        };
        let result = commit(conn, batch, self.clock.now_ms(), &self.replica).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Answers every request of a committed (or failed) batch.
    fn answer(&self, batch: &mut Vec<Request>, result: Result<Outcome, StoreError>) {
        match result {
            Ok(Outcome { ids, ops, woken }) => {
                for t in &woken {
                    self.wakers.wake(t);
                }
                let accepted = ids.iter().flatten().count() as u64;
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats.events.fetch_add(accepted, Ordering::Relaxed);
                self.stats.max_batch.fetch_max(accepted, Ordering::Relaxed);
                let mut ids = ids.into_iter();
                let mut ops = ops.into_iter();
                for req in batch.drain(..) {
                    match req {
                        Request::Accept { reply, .. } => {
                            let _ = reply.send(Ok(match ids.next().flatten() {
                                Some(id) => Accepted::New(id),
                                None => Accepted::Duplicate,
                            }));
                        }
                        Request::Probe { reply } | Request::Barrier { reply } => {
                            let _ = reply.send(Ok(()));
                        }
                        Request::Op { reply, .. } => {
                            let _ = reply.send(ops.next().unwrap_or(Ok(0)));
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
            }
        }
    }
}

/// For each accept in `accepts` (by its dedupe key), whether it is the
/// first of the batch with its key; and the distinct keys, sorted (so
/// concurrent batches lock `seen` rows in one order).
fn first_keys(keys: &[Option<&str>]) -> (Vec<bool>, Vec<String>) {
    let mut taken = HashSet::new();
    let first = keys
        .iter()
        .map(|k| k.is_none_or(|k| taken.insert(k)))
        .collect();
    let mut distinct: Vec<String> = taken.into_iter().map(str::to_owned).collect();
    distinct.sort();
    (first, distinct)
}

/// Writes `batch` in one transaction on `conn`.
async fn commit(
    conn: &mut PgConnection,
    batch: &[Request],
    now: i64,
    me: &str,
) -> Result<Outcome, StoreError> {
    let mut tx = conn.begin().await?;
    let accepts: Vec<(&NewEvent, &[NewDelivery])> = batch
        .iter()
        .filter_map(|r| match r {
            Request::Accept {
                event, deliveries, ..
            } => Some((event, deliveries.as_slice())),
            _ => None,
        })
        .collect();
    let mut woken: Vec<String> = Vec::new();
    let mut ids: Vec<Option<i64>> = Vec::with_capacity(accepts.len());
    if !accepts.is_empty() {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(INGEST_LOCK)
            .execute(&mut *tx)
            .await?;
        // Resends of an event accepted in the last 24 h (also earlier in
        // this batch) store nothing. A key older than that is taken over.
        let keys: Vec<Option<&str>> = accepts.iter().map(|(e, _)| e.dedupe.as_deref()).collect();
        let (first, distinct) = first_keys(&keys);
        let fresh: HashSet<String> = if distinct.is_empty() {
            HashSet::new()
        } else {
            sqlx::query_scalar(
                "INSERT INTO seen (key, seen_at) SELECT k, $2 FROM unnest($1::text[]) AS k \
                 ON CONFLICT (key) DO UPDATE SET seen_at = excluded.seen_at \
                 WHERE seen.seen_at < $3 RETURNING key",
            )
            .bind(&distinct)
            .bind(now)
            .bind(now.saturating_sub(DEDUPE_WINDOW_MS))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect()
        };
        let new: Vec<bool> = keys
            .iter()
            .zip(&first)
            .map(|(k, first)| *first && k.is_none_or(|k| fresh.contains(k)))
            .collect();
        let count = new.iter().filter(|n| **n).count();
        let mut allocated: Vec<i64> = if count == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar("SELECT nextval('events_id_seq') FROM generate_series(1, $1)")
                .bind(count as i64)
                .fetch_all(&mut *tx)
                .await?
        };
        allocated.sort_unstable();
        let mut next = allocated.into_iter();
        ids = new
            .iter()
            .map(|n| if *n { next.next() } else { None })
            .collect();
        if count > 0 {
            insert_rows(&mut tx, &accepts, &ids, now).await?;
        }
        for ((_, deliveries), id) in accepts.iter().zip(&ids) {
            if id.is_some() {
                woken.extend(deliveries.iter().map(|d| d.target.clone()));
            }
        }
    }
    if batch.iter().any(|r| matches!(r, Request::Probe { .. })) {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('ready_probe', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now.to_string())
        .execute(&mut *tx)
        .await?;
    }
    let ops: Vec<(&Op, Option<&Fence>)> = batch
        .iter()
        .filter_map(|r| match r {
            Request::Op { op, fence, .. } => Some((op, fence.as_ref())),
            _ => None,
        })
        .collect();
    // Fenced ops apply only while their lease is this replica's, with
    // their token; the others of the batch commit regardless.
    let mut names: Vec<&str> = ops
        .iter()
        .filter_map(|(_, f)| f.map(|f| &*f.name))
        .collect();
    names.sort_unstable();
    names.dedup();
    let held = if names.is_empty() {
        HashMap::new()
    } else {
        leases::held_tokens(&mut tx, &names, me).await?
    };
    let allowed: Vec<bool> = ops
        .iter()
        .map(|(_, f)| f.is_none_or(|f| held.get(&*f.name) == Some(&f.token)))
        .collect();
    let to_apply: Vec<&Op> = ops
        .iter()
        .zip(&allowed)
        .filter(|(_, ok)| **ok)
        .map(|((op, _), _)| *op)
        .collect();
    let counts = ops::apply_all(&mut tx, &to_apply, now).await?;
    for op in &to_apply {
        match op {
            Op::Replay {
                target: Some(t), ..
            } => woken.push(t.clone()),
            Op::Replay { target: None, .. } => woken.push(ALL.to_owned()),
            Op::MovePending { from, to, .. } => {
                woken.push(to.as_deref().unwrap_or(from).to_owned())
            }
            _ => {}
        }
    }
    woken.sort_unstable();
    woken.dedup();
    if !woken.is_empty() {
        // Delivered to the other replicas at commit (and not at all if the
        // transaction rolls back).
        sqlx::query("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t")
            .bind(CHANNEL)
            .bind(&woken)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let mut counts = counts.into_iter();
    let answers = ops
        .iter()
        .zip(&allowed)
        .map(|((_, fence), ok)| match (ok, fence) {
            (true, _) => Ok(counts.next().unwrap_or(0)),
            (false, Some(f)) => Err(StoreError::LeaseLost(f.name.to_string())),
            (false, None) => Ok(0),
        })
        .collect();
    Ok(Outcome {
        ids,
        ops: answers,
        woken,
    })
}

/// Inserts the new events (those with an id) and their deliveries: one
/// statement each, arrays through `unnest`, deliveries in the batch's
/// order (their ids are the queue's order).
async fn insert_rows(
    tx: &mut PgConnection,
    accepts: &[(&NewEvent, &[NewDelivery])],
    ids: &[Option<i64>],
    now: i64,
) -> Result<(), StoreError> {
    let new: Vec<(i64, &NewEvent, &[NewDelivery])> = accepts
        .iter()
        .zip(ids)
        .filter_map(|((e, d), id)| id.map(|id| (id, *e, *d)))
        .collect();
    let col = |f: fn(&NewEvent) -> i64| new.iter().map(|(_, e, _)| f(e)).collect::<Vec<i64>>();
    let text = |f: fn(&NewEvent) -> &str| new.iter().map(|(_, e, _)| f(e)).collect::<Vec<&str>>();
    sqlx::query(
        "INSERT INTO events (id, received_at, website_id, name, timestamp, body, conversation) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[])",
    )
    .bind(new.iter().map(|(id, _, _)| *id).collect::<Vec<i64>>())
    .bind(col(|e| e.received_at_ms))
    .bind(text(|e| &e.website_id))
    .bind(text(|e| &e.name))
    .bind(col(|e| e.timestamp_ms))
    .bind(text(|e| &e.body))
    .bind(
        new.iter()
            .map(|(_, e, _)| e.conversation.as_deref())
            .collect::<Vec<Option<&str>>>(),
    )
    .execute(&mut *tx)
    .await?;
    let rows: Vec<(i64, &NewDelivery)> = new
        .iter()
        .flat_map(|(id, _, ds)| ds.iter().map(move |d| (*id, d)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO deliveries (event_id, route, target, template, next_attempt_at, created_at, updated_at, queued_at) \
         SELECT e, r, t, tp, $5, $5, $5, $5 \
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(e, r, t, tp, n) \
         ORDER BY n",
    )
    .bind(rows.iter().map(|(id, _)| *id).collect::<Vec<i64>>())
    .bind(rows.iter().map(|(_, d)| d.route.as_str()).collect::<Vec<&str>>())
    .bind(rows.iter().map(|(_, d)| d.target.as_str()).collect::<Vec<&str>>())
    .bind(
        rows.iter()
            .map(|(_, d)| d.template.as_deref())
            .collect::<Vec<Option<&str>>>(),
    )
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::first_keys;

    #[test]
    fn the_first_of_a_key_in_a_batch_wins() {
        let (first, distinct) = first_keys(&[Some("b"), None, Some("a"), Some("b"), None]);
        assert_eq!(first, vec![true, true, true, false, true]);
        assert_eq!(distinct, vec!["a".to_owned(), "b".to_owned()]);
    }
}
