//! Reads of the store's maps beside the queue: a conversation's thread,
//! which conversation a thread belongs to (for replies read from a thread), and whether a key was
//! recorded recently (echoes of replies).

use sqlx::Row;

use super::SqliteStore;
use crate::store::{DEDUPE_WINDOW_MS, StoreError, ThreadRef, ThreadState};

impl SqliteStore {
    pub(super) async fn read_thread(
        &self,
        target: &str,
        conversation: &str,
    ) -> Result<Option<ThreadRef>, StoreError> {
        let row =
            sqlx::query("SELECT thread, state FROM threads WHERE target = ? AND conversation = ?")
                .bind(target)
                .bind(conversation)
                .fetch_optional(&self.reads)
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
        let row = sqlx::query("SELECT conversation FROM threads WHERE target = ? AND thread = ?")
            .bind(target)
            .bind(thread)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub(super) async fn read_active_threads(
        &self,
        target: &str,
        since_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.thread FROM threads t WHERE t.target = ? AND EXISTS \
             (SELECT 1 FROM events e WHERE e.conversation = t.conversation AND e.received_at >= ?)",
        )
        .bind(target)
        .bind(since_ms)
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }

    pub(super) async fn read_remembered(&self, keys: &[String]) -> Result<bool, StoreError> {
        let since = self.clock.now_ms().saturating_sub(DEDUPE_WINDOW_MS);
        for key in keys {
            let found = sqlx::query("SELECT 1 FROM seen WHERE key = ? AND seen_at >= ?")
                .bind(key)
                .bind(since)
                .fetch_optional(&self.reads)
                .await?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
