//! The attempt of a chat target that posts as a bot or keeps a thread per
//! conversation: which step the conversation is at (post to the channel,
//! create its thread, reply in it, start the thread from its first message,
//! archive it once resolved), the request for it ([`chat::request`]), and
//! what the answer means for the conversation's thread — recorded in the
//! store before the rows it carried are marked delivered, so a restart
//! finds the same threads.
//!
//! A thread that is gone (deleted, locked) is forgotten and the
//! conversation's rows go to a new thread, whose first message says it
//! continues an earlier one. Several due messages of one conversation go
//! as one where they fit (`coalesce`).
//!
//! Must not: decide what an answer means (`decide` does), or pick rows
//! (`line` does).

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Context;
use super::decide::{Verdict, decide};
use super::limiter::TargetLimiter;
use super::send::{self, Exchanged, Step, conclude, exchange, prepare, unrenderable};
use crate::config::Target;
use crate::model::{TargetKind, Threads};
use crate::store::{Op, PendingDelivery, ThreadRef, ThreadState};
use crate::targets::chat::{self, ChannelKind, Step as ChatStep};
use crate::targets::{Body, OutgoingRequest};

/// What a worker knows of its target's conversations (a cache of the
/// store's map, which only this worker writes) and channel.
#[derive(Default)]
pub(super) struct Convs {
    threads: HashMap<String, Option<ThreadRef>>,
    /// Conversations whose thread went away: their next thread says it
    /// continues an earlier one.
    replacing: HashSet<String>,
    /// A Discord bot's channel: forum or text.
    channel: Option<ChannelKind>,
    /// Discord bots: the pacing of each thread (Discord limits per route
    /// and channel); the worker's own limiter is the target's whole.
    buckets: HashMap<String, TargetLimiter>,
    /// A Discord webhook that turned out not to be a forum's (220003):
    /// threads are not possible, messages go to its channel.
    no_threads: bool,
    /// Discord bots: the global limit over all their threads' buckets.
    global: Option<TargetLimiter>,
}

/// Discord's global limit for a bot: requests per second, all routes
/// (research: two-way.md §3(b)).
const DISCORD_BOT_GLOBAL: u32 = 50;

/// One attempt at `group` (one conversation's due rows, in order; or one
/// row without a conversation).
#[allow(clippy::too_many_arguments)]
pub(super) async fn attempt(
    ctx: &Context,
    target: &Target,
    limiter: &mut TargetLimiter,
    rng: &mut fastrand::Rng,
    group: &[&PendingDelivery],
    convs: &mut Convs,
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Step {
    // Render in order; a first row that cannot be rendered is dead alone.
    let mut bodies = Vec::with_capacity(group.len());
    for d in group {
        match prepare(ctx, target, d).map(body_of) {
            Ok(b) => bodies.push(b),
            Err(reason) if bodies.is_empty() => return unrenderable(ctx, target, d, reason),
            Err(_) => break,
        }
    }
    let conversation = group[0]
        .conversation
        .clone()
        .filter(|_| target.threads == Threads::PerConversation && !convs.no_threads);
    let (mut body, n) = if conversation.is_some() && target.coalesce {
        chat::coalesce(target.kind, &bodies)
    } else {
        (bodies.swap_remove(0), 1)
    };
    let group = &group[..n];
    let rows = send::rows(group);

    // Which step the conversation is at.
    let known = match &conversation {
        Some(c) => match thread_of(ctx, target, c, convs).await {
            Ok(t) => t,
            Err(step) => return step,
        },
        None => None,
    };
    if let (Some(c), Some(t)) = (&conversation, &known)
        && t.state == ThreadState::Starting
    {
        // Its first message is posted; the thread is still to start.
        let name = thread_name(ctx, target, group[0]);
        let start = ChatStep::StartThread {
            message: t.thread.clone(),
            name,
        };
        match step_once(
            ctx,
            target,
            limiter,
            convs,
            &start,
            Value::Null,
            stop,
            abort,
        )
        .await
        {
            Ok(Ok(_)) => {
                let open = ThreadRef {
                    thread: t.thread.clone(),
                    state: ThreadState::Open,
                };
                if let Err(step) = set_thread(ctx, target, c, Some(open), convs).await {
                    return step;
                }
            }
            Ok(Err(x)) => return refused(ctx, target, group, x, rng),
            Err(step) => return step,
        }
    }
    let step = match (
        &conversation,
        convs
            .threads
            .get(conversation.as_deref().unwrap_or(""))
            .cloned()
            .flatten(),
    ) {
        // Without a conversation: the channel, or in a forum (where every
        // message is a post) a post of its own, named after the event.
        (None, _) if target.threads == Threads::PerConversation => {
            match in_a_forum(ctx, target, limiter, convs, stop, abort).await {
                Ok(Ok(true)) => ChatStep::Create {
                    name: lone_name(group[0]),
                },
                Ok(Ok(false)) => ChatStep::Channel,
                Ok(Err(x)) => return refused(ctx, target, group, x, rng),
                Err(step) => return step,
            }
        }
        (None, _) => ChatStep::Channel,
        (Some(_), Some(t)) => ChatStep::Reply { thread: t.thread },
        (Some(c), None) => {
            if convs.replacing.contains(c) {
                body = chat::continued(target.kind, body);
            }
            ChatStep::Create {
                name: thread_name(ctx, target, group[0]),
            }
        }
    };
    let x = match step_once(ctx, target, limiter, convs, &step, body, stop, abort).await {
        Ok(Ok(x)) | Ok(Err(x)) => x,
        Err(step) => return step,
    };
    let d = decide(
        target.kind,
        &target.retry,
        x.result.as_ref(),
        &x.hints,
        &rows,
        x.now_ms,
        rng,
    );
    // Threads on a webhook whose channel is not a forum: safe either way,
    // the messages go to the channel instead (and the target keeps going).
    let not_a_forum = x
        .result
        .as_ref()
        .is_ok_and(|a| super::codes::discord_code(a) == Some(220003));
    if not_a_forum && target.bot.is_none() && matches!(step, ChatStep::Create { .. }) {
        warn!(target_name = %target.name, "this Discord webhook is not in a forum channel, so it cannot start threads: its messages go to the channel instead (use a forum channel's webhook, or a bot, for a thread per conversation)");
        convs.no_threads = true;
        return Step::Retry(d.ops);
    }
    match (&d.verdict, &conversation, &step) {
        (Verdict::Delivered, Some(c), ChatStep::Create { name }) => {
            let answer = x.result.as_ref().map(|a| a.body.as_str()).unwrap_or("");
            match chat::thread_of(target, &step, answer) {
                Some(thread) => {
                    let starting = target.bot.is_some()
                        && target.kind == TargetKind::Discord
                        && convs.channel == Some(ChannelKind::Text);
                    let state = if starting {
                        ThreadState::Starting
                    } else {
                        ThreadState::Open
                    };
                    let made = ThreadRef {
                        thread: thread.clone(),
                        state,
                    };
                    if let Err(step) = set_thread(ctx, target, c, Some(made), convs).await {
                        return step;
                    }
                    convs.replacing.remove(c);
                    info!(target_name = %target.name, conversation = %c, thread = %thread, "thread started for the conversation");
                    if starting {
                        // Best now; if it fails, it is tried before the
                        // conversation's next message.
                        let start = ChatStep::StartThread {
                            message: thread.clone(),
                            name: name.clone(),
                        };
                        if let Ok(Ok(_)) = step_once(
                            ctx,
                            target,
                            limiter,
                            convs,
                            &start,
                            Value::Null,
                            stop,
                            abort,
                        )
                        .await
                        {
                            let open = ThreadRef {
                                thread,
                                state: ThreadState::Open,
                            };
                            let _ = set_thread(ctx, target, c, Some(open), convs).await;
                        }
                    }
                }
                None => {
                    warn!(target_name = %target.name, conversation = %c, "the answer names no thread; the conversation's next message starts another")
                }
            }
        }
        (Verdict::ThreadGone { reason }, Some(c), ChatStep::Reply { .. }) => {
            warn!(target_name = %target.name, conversation = %c, error = %reason, "the conversation's thread is gone; its messages go to a new thread");
            if let Err(step) = set_thread(ctx, target, c, None, convs).await {
                return step;
            }
            convs.replacing.insert(c.clone());
            return Step::Retry(d.ops);
        }
        // Posting reopened an archived thread.
        (Verdict::Delivered, Some(c), ChatStep::Reply { thread }) => {
            let archived = convs
                .threads
                .get(c)
                .cloned()
                .flatten()
                .is_some_and(|t| t.state == ThreadState::Archived);
            if archived {
                let open = ThreadRef {
                    thread: thread.clone(),
                    state: ThreadState::Open,
                };
                if let Err(step) = set_thread(ctx, target, c, Some(open), convs).await {
                    return step;
                }
            }
        }
        _ => {}
    }
    let delivered = matches!(d.verdict, Verdict::Delivered);
    let archive =
        delivered && resolved(group) && target.bot.is_some() && target.kind == TargetKind::Discord;
    let done = conclude(ctx, target, group, d, &x);
    if archive
        && let Some(c) = &conversation
        && let Some(t) = convs.threads.get(c).cloned().flatten()
    {
        let step = ChatStep::Archive {
            thread: t.thread.clone(),
        };
        if let Ok(Ok(_)) =
            step_once(ctx, target, limiter, convs, &step, Value::Null, stop, abort).await
        {
            let archived = ThreadRef {
                thread: t.thread,
                state: ThreadState::Archived,
            };
            let _ = set_thread(ctx, target, c, Some(archived), convs).await;
        }
    }
    done
}

/// Sends one step: `Ok(Ok)` answered 2xx, `Ok(Err)` answered otherwise (or
/// not at all), `Err` stopped. Learns a Discord bot's channel kind first
/// when the step needs it.
#[allow(clippy::too_many_arguments)]
async fn step_once(
    ctx: &Context,
    target: &Target,
    limiter: &mut TargetLimiter,
    convs: &mut Convs,
    step: &ChatStep,
    body: Value,
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Result<Result<Exchanged, Exchanged>, Step> {
    if matches!(step, ChatStep::Create { .. })
        && let Some(x) = learn_channel(ctx, target, limiter, convs, stop, abort).await?
    {
        return Ok(Err(x));
    }
    let req = match chat::request(target, body, step, convs.channel) {
        Ok(r) => r,
        Err(e) => return Ok(Err(built_error(ctx, e))),
    };
    // Discord bots: each thread (and the channel) is a bucket of its own.
    let bucket = match (&target.bot, target.kind, step) {
        (
            Some(_),
            TargetKind::Discord,
            ChatStep::Reply { thread } | ChatStep::Archive { thread },
        ) => Some(thread.clone()),
        _ => None,
    };
    let x = match bucket {
        Some(b) => {
            // Discord's global limit for a bot (50 requests per second, all
            // routes), then the thread's own bucket.
            let global = convs.global.get_or_insert_with(|| {
                TargetLimiter::new(Some(crate::model::RateLimit {
                    requests: DISCORD_BOT_GLOBAL,
                    per: std::time::Duration::from_secs(1),
                    burst: DISCORD_BOT_GLOBAL,
                }))
            });
            if global.wait(stop).await.is_none() {
                return Err(Step::Stop);
            }
            let rate = target.rate_limit;
            let l = convs
                .buckets
                .entry(b)
                .or_insert_with(|| TargetLimiter::new(rate));
            exchange(ctx, target, l, &req, stop, abort).await
        }
        None => exchange(ctx, target, limiter, &req, stop, abort).await,
    }
    .ok_or(Step::Stop)?;
    let ok = x
        .result
        .as_ref()
        .is_ok_and(|a| (200..300).contains(&a.status))
        && !slack_refused(target, &x);
    Ok(if ok { Ok(x) } else { Err(x) })
}

/// A Discord bot's channel kind, asked once (`GET /channels/{id}`) and
/// kept: `Ok(None)` known (or not a Discord bot), `Ok(Some)` the answer that
/// did not tell, `Err` stopped.
async fn learn_channel(
    ctx: &Context,
    target: &Target,
    limiter: &mut TargetLimiter,
    convs: &mut Convs,
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Result<Option<Exchanged>, Step> {
    let (Some(bot), TargetKind::Discord, None) = (&target.bot, target.kind, convs.channel) else {
        return Ok(None);
    };
    let x = exchange(ctx, target, limiter, &chat::channel_info(bot), stop, abort)
        .await
        .ok_or(Step::Stop)?;
    match x
        .result
        .as_ref()
        .ok()
        .filter(|a| (200..300).contains(&a.status))
        .and_then(|a| ChannelKind::from_answer(&a.body))
    {
        Some(kind) => {
            convs.channel = Some(kind);
            Ok(None)
        }
        None => Ok(Some(x)),
    }
}

/// Whether the threaded target's messages go to a forum, where a message
/// without a conversation needs a post of its own: a Discord webhook with
/// threads (until it turns out not to be a forum's), a Discord bot whose
/// channel is a forum.
async fn in_a_forum(
    ctx: &Context,
    target: &Target,
    limiter: &mut TargetLimiter,
    convs: &mut Convs,
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> Result<Result<bool, Exchanged>, Step> {
    Ok(Ok(match (&target.bot, target.kind) {
        (None, TargetKind::Discord) => !convs.no_threads,
        (Some(_), TargetKind::Discord) => {
            if let Some(x) = learn_channel(ctx, target, limiter, convs, stop, abort).await? {
                return Ok(Err(x));
            }
            convs.channel == Some(ChannelKind::Forum)
        }
        _ => false,
    }))
}

/// What a refused answer means for `group`, recorded.
fn refused(
    ctx: &Context,
    target: &Target,
    group: &[&PendingDelivery],
    x: Exchanged,
    rng: &mut fastrand::Rng,
) -> Step {
    let rows = send::rows(group);
    let d = decide(
        target.kind,
        &target.retry,
        x.result.as_ref(),
        &x.hints,
        &rows,
        x.now_ms,
        rng,
    );
    conclude(ctx, target, group, d, &x)
}

/// The name of a forum post for an event without a conversation: the
/// event's name (`people:profile:created`).
fn lone_name(d: &PendingDelivery) -> String {
    let event: Value = serde_json::from_str(&d.body).unwrap_or(Value::Null);
    chat::thread_name(event.get("event").and_then(Value::as_str).unwrap_or(""))
}

/// A Slack Web API answer of 200 that says `"ok": false`.
fn slack_refused(target: &Target, x: &Exchanged) -> bool {
    target.kind == TargetKind::Slack
        && x.result.as_ref().is_ok_and(|a| {
            serde_json::from_str::<Value>(&a.body)
                .ok()
                .and_then(|v| v.get("ok").and_then(Value::as_bool))
                == Some(false)
        })
}

/// An exchange standing for a request that could not be built.
fn built_error(ctx: &Context, e: String) -> Exchanged {
    Exchanged {
        result: Err(super::classify::TransportError::Build(e)),
        hints: Default::default(),
        latency: Default::default(),
        started_ms: None,
        now_ms: ctx.clock.now_ms(),
    }
}

/// The conversation's thread, from the cache or the store.
async fn thread_of(
    ctx: &Context,
    target: &Target,
    conversation: &str,
    convs: &mut Convs,
) -> Result<Option<ThreadRef>, Step> {
    if let Some(t) = convs.threads.get(conversation) {
        return Ok(t.clone());
    }
    match ctx.store.thread(&target.name, conversation).await {
        Ok(t) => {
            convs.threads.insert(conversation.to_owned(), t.clone());
            Ok(t)
        }
        Err(e) => {
            warn!(target_name = %target.name, error = %e, "cannot read the conversation's thread; trying again in 1s");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            Err(Step::Retry(Vec::new()))
        }
    }
}

/// Records the conversation's thread (or forgets it), committed before
/// anything else of the conversation is recorded.
async fn set_thread(
    ctx: &Context,
    target: &Target,
    conversation: &str,
    thread: Option<ThreadRef>,
    convs: &mut Convs,
) -> Result<(), Step> {
    let op = match &thread {
        Some(t) => Op::SetThread {
            target: target.name.clone(),
            conversation: conversation.to_owned(),
            thread: t.clone(),
        },
        None => Op::ForgetThread {
            target: target.name.clone(),
            conversation: conversation.to_owned(),
        },
    };
    match ctx.store.apply(op).await {
        Ok(_) => {
            convs.threads.insert(conversation.to_owned(), thread);
            Ok(())
        }
        Err(e) => {
            // The rows stay pending and are sent again (at-least-once: a
            // thread created meanwhile may be created twice).
            warn!(target_name = %target.name, error = %e, "cannot record the conversation's thread; trying again in 1s");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            Err(Step::Retry(Vec::new()))
        }
    }
}

/// The thread name for the conversation of `d`, rendered from the target's
/// `thread_name`.
fn thread_name(ctx: &Context, target: &Target, d: &PendingDelivery) -> String {
    let event: Value = serde_json::from_str(&d.body).unwrap_or(Value::Null);
    let rendered = ctx.relay.renderer.render_thread_name(&target.name, &event);
    chat::thread_name(&rendered.unwrap_or_default())
}

/// Whether the last of `group` resolves its conversation
/// (`session:set_state` to `resolved`).
fn resolved(group: &[&PendingDelivery]) -> bool {
    group.last().is_some_and(|d| {
        serde_json::from_str::<Value>(&d.body)
            .ok()
            .is_some_and(|v| {
                v.get("event").and_then(Value::as_str) == Some("session:set_state")
                    && v.pointer("/data/state").and_then(Value::as_str) == Some("resolved")
            })
    })
}

fn body_of(req: OutgoingRequest) -> Value {
    match req.body {
        Body::Json(v) => v,
        Body::Text(t) => Value::String(t),
    }
}
