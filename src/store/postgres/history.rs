//! Reads of the history for the console, on the read pool: recent
//! deliveries (filtered, newest first, by keyset), a delivery's attempts,
//! and the conversations' threads with their activity. Same results as the
//! SQLite engine's.
//!
//! Each read is bounded by its limit; deliveries are walked backwards by
//! their primary key (or found through `events_conversation`), attempts by
//! theirs. This module must not write.

use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::PgStore;
use crate::store::history::{REPLY_EVENT, clamp_limit, session_of};
use crate::store::{
    AttemptRow, ConversationRow, DeliveryFilter, DeliverySummary, StoreError, ThreadState,
};

const RECENT: &str = "SELECT d.id, d.event_id, e.name, e.conversation, d.route, d.target, d.template, d.state, \
     d.attempts, d.created_at, d.updated_at, d.last_status, d.last_error \
     FROM deliveries d JOIN events e ON e.id = d.event_id WHERE true";

const ATTEMPTS: &str = "SELECT delivery_id, attempt, at_ms, latency_ms, status, error, outcome \
     FROM attempts WHERE delivery_id = $1 ORDER BY seq";

/// The threads with their last activity and the replies delivered for
/// their conversation (stored replies are events named [`REPLY_EVENT`]).
fn conversations_sql() -> String {
    format!(
        "SELECT target, conversation, thread, state, created_at, GREATEST(updated_at, COALESCE(last_event, 0)) AS active, replies FROM (\
         SELECT t.target, t.conversation, t.thread, t.state, t.created_at, t.updated_at, \
         (SELECT MAX(e.received_at) FROM events e WHERE e.conversation = t.conversation) AS last_event, \
         (SELECT COUNT(*) FROM events e JOIN deliveries d ON d.event_id = e.id \
          WHERE e.conversation = t.conversation AND e.name = '{REPLY_EVENT}' \
          AND d.state = 'delivered') AS replies \
         FROM threads t WHERE ($1::text IS NULL OR t.target = $1)) AS c \
         ORDER BY active DESC, target, conversation LIMIT $2"
    )
}

/// The `WHERE` and `ORDER BY` of [`RECENT`] for `f`.
fn push_filter(q: &mut QueryBuilder<Postgres>, f: &DeliveryFilter) {
    if let Some(t) = &f.target {
        q.push(" AND d.target = ").push_bind(t.as_str());
    }
    if let Some(s) = f.state {
        q.push(format_args!(" AND d.state = '{}'", s.as_str()));
    }
    if let Some(e) = &f.event {
        q.push(" AND e.name = ").push_bind(e.as_str());
    }
    if let Some(since) = f.since_ms {
        q.push(" AND d.created_at >= ").push_bind(since);
    }
    if let Some(until) = f.until_ms {
        q.push(" AND d.created_at < ").push_bind(until);
    }
    if let Some(c) = &f.conversation {
        q.push(" AND e.conversation = ").push_bind(c.as_str());
    }
    if let Some(before) = f.before_id {
        q.push(" AND d.id < ").push_bind(before);
    }
    q.push(" ORDER BY d.id DESC LIMIT ").push_bind(f.rows());
}

fn summary(r: &PgRow) -> Result<DeliverySummary, sqlx::Error> {
    let conversation: Option<String> = r.try_get(3)?;
    Ok(DeliverySummary {
        id: r.try_get(0)?,
        event_id: r.try_get(1)?,
        event: r.try_get(2)?,
        session_id: conversation.as_deref().map(|c| session_of(c).to_owned()),
        conversation,
        route: r.try_get(4)?,
        target: r.try_get(5)?,
        template: r.try_get(6)?,
        state: r.try_get(7)?,
        attempts: r.try_get(8)?,
        created_at_ms: r.try_get(9)?,
        updated_at_ms: r.try_get(10)?,
        last_status: r.try_get(11)?,
        last_error: r.try_get(12)?,
    })
}

impl PgStore {
    pub(super) async fn read_recent_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliverySummary>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new(RECENT);
        push_filter(&mut q, filter);
        let rows = q.build().fetch_all(&self.reads).await?;
        rows.iter()
            .map(summary)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn read_attempts_of(&self, id: i64) -> Result<Vec<AttemptRow>, StoreError> {
        let rows = sqlx::query(ATTEMPTS)
            .bind(id)
            .fetch_all(&self.reads)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    delivery_id: r.try_get(0)?,
                    attempt: r.try_get(1)?,
                    at_ms: r.try_get(2)?,
                    latency_ms: r.try_get(3)?,
                    status: r.try_get(4)?,
                    error: r.try_get(5)?,
                    outcome: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn read_conversations(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ConversationRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(conversations_sql()))
            .bind(target)
            .bind(clamp_limit(limit))
            .fetch_all(&self.reads)
            .await?;
        rows.iter()
            .map(|r| {
                let conversation: String = r.try_get(1)?;
                Ok(ConversationRow {
                    target: r.try_get(0)?,
                    session_id: session_of(&conversation).to_owned(),
                    conversation,
                    thread: r.try_get(2)?,
                    state: ThreadState::parse(r.try_get::<&str, _>(3)?),
                    created_at_ms: r.try_get(4)?,
                    last_activity_ms: r.try_get(5)?,
                    replies: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
