//! The attempt of the relay's own `crisp` target: an agent's reply, read
//! from a chat thread, posted to Crisp as an operator message. Before the
//! send, what the reply will look like when Crisp sends it back through the
//! Website Hook (its text, in its conversation) is recorded; after Crisp's
//! answer, the message's fingerprint too — so that echo is never posted
//! into the thread again.
//!
//! Must not: decide what an answer means (`decide` does), or pick rows
//! (`line` does).

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Context;
use super::decide::{Verdict, decide};
use super::limiter::TargetLimiter;
use super::send::{self, Step, conclude, exchange, unrenderable};
use crate::config::Target;
use crate::store::{Op, PendingDelivery};
use crate::targets::crisp::{self, Reply};

/// One attempt at the reply `d`.
pub(super) async fn attempt(
    ctx: &Context,
    target: &Target,
    limiter: &mut TargetLimiter,
    rng: &mut fastrand::Rng,
    d: &PendingDelivery,
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Step {
    let reply = match serde_json::from_str(&d.body)
        .map_err(|e| format!("stored reply is not JSON: {e}"))
        .and_then(|v| Reply::from_envelope(&v))
    {
        Ok(r) => r,
        Err(reason) => return unrenderable(ctx, target, d, reason),
    };
    let Some(api) = ctx.relay.config.crisp.as_ref() else {
        return unrenderable(ctx, target, d, "`crisp` is no longer configured".into());
    };
    let req = match crisp::request(api, &reply) {
        Ok(r) => r,
        Err(reason) => return unrenderable(ctx, target, d, reason),
    };
    // Recorded before the send: Crisp's hook may come back before its
    // answer does.
    if let Err(e) = ctx
        .store
        .apply(Op::Remember {
            key: reply.echo_key(),
        })
        .await
    {
        warn!(target_name = %target.name, error = %e, "cannot record the reply before sending it; trying again in 1s");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        return Step::Retry(Vec::new());
    }
    let Some(x) = exchange(ctx, target, limiter, &req, stop, abort).await else {
        return Step::Stop;
    };
    let group = [d];
    let rows = send::rows(&group);
    let decision = decide(
        target.kind,
        &target.retry,
        x.result.as_ref(),
        &x.hints,
        &rows,
        x.now_ms,
        rng,
    );
    if matches!(decision.verdict, Verdict::Delivered)
        && let Some(fp) = x
            .result
            .as_ref()
            .ok()
            .and_then(|a| crisp::fingerprint(&a.body))
    {
        let key = crisp::echo_fingerprint_key(&reply.website_id, &reply.session_id, fp);
        if let Err(e) = ctx.store.apply(Op::Remember { key }).await {
            warn!(target_name = %target.name, error = %e, "cannot record the fingerprint of a reply; its echo is recognised by its text only");
        }
    }
    conclude(ctx, target, &group, decision, x.latency, x.now_ms)
}
