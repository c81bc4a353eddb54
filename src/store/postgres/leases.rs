//! Leases: which replica runs a target's worker (or a reply listener).
//!
//! Owns the `leases` table's statements: take a free or expired lease with
//! a higher token, renew it, give it up, give up all of this replica's at
//! close, and the check a fenced write makes inside the writer's
//! transaction. Expiry is the database's `now()`, never the store's clock:
//! it is the one clock every replica shares, so no replica's clock drift
//! can make two holders at once.
//!
//! The check takes the lease row `FOR SHARE`, so a replica taking the
//! lease over (an `UPDATE` of that row) waits until the fenced write has
//! committed, and a write checked after a takeover sees the new holder.
//!
//! This module must not touch the queue's rows.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};

use crate::store::{Fence, StoreError};

/// Milliseconds of a lease term, for `$n * interval '1 millisecond'`.
fn term_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// Takes lease `name` for `me` if nobody holds it or it has expired: a new
/// grant, with a token above every earlier one.
pub(super) async fn acquire(
    pool: &PgPool,
    name: &str,
    me: &str,
    lease: Duration,
) -> Result<Option<Fence>, StoreError> {
    let token: Option<i64> = sqlx::query_scalar(
        "INSERT INTO leases (name, holder, token, expires_at) \
         VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond') \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = leases.token + 1, \
         expires_at = excluded.expires_at \
         WHERE leases.holder IS NULL OR leases.expires_at <= now() \
         RETURNING token",
    )
    .bind(name)
    .bind(me)
    .bind(term_ms(lease))
    .fetch_optional(pool)
    .await?;
    Ok(token.map(|token| Fence {
        name: name.into(),
        token,
    }))
}

/// Extends `fence`'s lease by a whole term if `me` still holds it with
/// that token and it has not expired.
pub(super) async fn renew(
    pool: &PgPool,
    fence: &Fence,
    me: &str,
    lease: Duration,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE leases SET expires_at = now() + $4 * interval '1 millisecond' \
         WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()",
    )
    .bind(&*fence.name)
    .bind(me)
    .bind(fence.token)
    .bind(term_ms(lease))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives `fence`'s lease up at once (if it is still `me`'s with that token).
pub(super) async fn release(pool: &PgPool, fence: &Fence, me: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE leases SET holder = NULL, expires_at = now() \
         WHERE name = $1 AND holder = $2 AND token = $3",
    )
    .bind(&*fence.name)
    .bind(me)
    .bind(fence.token)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives up every lease `me` holds (at close).
pub(super) async fn release_all(pool: &PgPool, me: &str) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("UPDATE leases SET holder = NULL, expires_at = now() WHERE holder = $1")
            .bind(me)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// Inside the writer's transaction: the tokens with which `me` holds, now,
/// the leases among `names`, each row locked `FOR SHARE` until the commit.
pub(super) async fn held_tokens(
    conn: &mut PgConnection,
    names: &[&str],
    me: &str,
) -> Result<HashMap<String, i64>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, token FROM leases \
         WHERE name = ANY($1) AND holder = $2 AND expires_at > now() \
         ORDER BY name FOR SHARE",
    )
    .bind(names)
    .bind(me)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
