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
use crate::targets::feedback::{self, Mark};

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
    let mark = match &decision.verdict {
        Verdict::Delivered => Some((Mark::Delivered, String::new())),
        Verdict::Dead { reason, .. } => Some((Mark::Failed, reason.clone())),
        _ => None,
    };
    let step = conclude(ctx, target, &group, decision, &x);
    if let Some((mark, reason)) = mark {
        tell_the_agent(ctx, &reply, mark, &reason);
    }
    step
}

/// Marks the reply in the chat (✅, or ⚠️ and a message saying why), in the
/// background and once: the reply itself is done either way.
fn tell_the_agent(ctx: &Context, reply: &Reply, mark: Mark, reason: &str) {
    let Some(source) = ctx
        .relay
        .config
        .targets
        .iter()
        .find(|t| t.name == reply.source.target)
    else {
        return;
    };
    let mut requests: Vec<_> = feedback::reaction(source, &reply.source, mark)
        .into_iter()
        .collect();
    if mark == Mark::Failed {
        requests.extend(feedback::failure_note(source, &reply.source, reason));
    }
    let transport = ctx.transport.clone();
    let (name, timeout) = (source.name.clone(), source.timeout);
    tokio::spawn(async move {
        for req in requests {
            // The chat's limits are shared with the target's own posts: a
            // 429 is waited out (what it asks, at most 30 s), five times.
            for _ in 0..5 {
                match transport.send(&req, timeout).await {
                    Ok(a) if a.status == 429 => {
                        let wait = a
                            .headers
                            .iter()
                            .find(|(k, _)| k == "retry-after")
                            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                            .filter(|s| s.is_finite() && *s >= 0.0)
                            .map_or(1.0, |s| s.min(30.0));
                        tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
                    }
                    Ok(a) if (200..300).contains(&a.status) && !a.body.contains("\"ok\":false") => {
                        break;
                    }
                    Ok(a) => {
                        warn!(target_name = %name, status = a.status, "could not mark the reply in the chat");
                        break;
                    }
                    Err(e) => {
                        warn!(target_name = %name, error = %e, "could not mark the reply in the chat");
                        break;
                    }
                }
            }
        }
    });
}
