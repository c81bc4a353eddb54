//! Long-lived connections that bring agents' replies in: the Discord
//! Gateway of each Discord bot target with `replies: true`. A person's
//! message in a conversation's thread is stored as a reply to Crisp (with
//! its delivery to the `crisp` target) — once: Discord message ids are the
//! dedupe keys. After a new Gateway session (a start, or a session Discord
//! would not resume), the threads of conversations active in the last day
//! are read through REST for the messages posted meanwhile.
//!
//! Must not: decide what a message is (`replies::discord` does), or send
//! replies to Crisp (the `crisp` target's worker does).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::app::Relay;
use crate::clock::Clock;
use crate::config::{Replies, Target};
use crate::delivery::transport::Transport;
use crate::replies::{self, discord};
use crate::store::{Accepted, Store};

/// How far back a new session looks for replies it may have missed.
pub const CATCH_UP_WINDOW_MS: i64 = 23 * 3600 * 1000;

/// Messages per catch-up request (small, so an answer stays under what the
/// transport reads of one).
const CATCH_UP_PAGE: &str = "25";

/// What the listeners share.
#[derive(Clone)]
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub transport: Arc<dyn Transport>,
    pub clock: Clock,
}

/// Starts a listener for each Discord target of `relay` with replies; they
/// stop with `stop`.
pub fn start(relay: &Relay, parts: &Parts, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    relay
        .config
        .targets
        .iter()
        .filter(|t| t.enabled && matches!(t.replies, Some(Replies::Discord)))
        .filter_map(|t| {
            let bot = t.bot.clone()?;
            let cfg = discord::GatewayConfig {
                token: bot.token.clone(),
                api: bot.api.clone(),
                intents: discord::GUILDS | discord::GUILD_MESSAGES | discord::MESSAGE_CONTENT,
            };
            Some(tokio::spawn(leased(
                t.clone(),
                cfg,
                parts.clone(),
                stop.child_token(),
            )))
        })
        .collect()
}

/// Runs the target's listener while this process holds its lease
/// (`gateway:NAME`): with several replicas, one Gateway connection per bot,
/// taken over by another replica if this one dies.
async fn leased(
    target: Target,
    cfg: discord::GatewayConfig,
    parts: Parts,
    stop: CancellationToken,
) {
    let name = format!("gateway:{}", target.name);
    while let Some(held) = crate::lease::hold(&parts.store, &name, &stop, || {}).await {
        parts.metrics.lease_held(&name, true);
        let run = stop.child_token();
        let watch = {
            let (lost, run) = (held.lost().clone(), run.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = lost.cancelled() => run.cancel(),
                    () = run.cancelled() => {}
                }
            })
        };
        listen(target.clone(), cfg.clone(), parts.clone(), run).await;
        watch.abort();
        parts.metrics.lease_held(&name, false);
        if stop.is_cancelled() {
            held.release(parts.store.as_ref()).await;
            return;
        }
        if !held.lost().is_cancelled() {
            // The listener ended by itself (it logs why): give the lease up.
            held.release(parts.store.as_ref()).await;
            return;
        }
    }
}

async fn listen(
    target: Target,
    cfg: discord::GatewayConfig,
    parts: Parts,
    stop: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel(256);
    let gateway = tokio::spawn(discord::run(cfg.clone(), tx, stop.clone()));
    let mut own: Option<String> = None;
    info!(target_name = %target.name, "reading replies from the Discord Gateway");
    while let Some(event) = rx.recv().await {
        match event {
            discord::GatewayEvent::Ready { bot_user_id } => {
                own = bot_user_id;
                catch_up(&target, &cfg, &parts, own.as_deref(), &stop).await;
            }
            discord::GatewayEvent::Resumed => {}
            discord::GatewayEvent::Message(m) => {
                take(&target, &parts, &m, own.as_deref(), &stop).await;
            }
            discord::GatewayEvent::Fatal(reason) => {
                error!(target_name = %target.name, %reason, "replies from Discord stopped");
                break;
            }
        }
    }
    let _ = gateway.await;
}

/// Stores the replies `m` makes, if it is a person's message in a
/// conversation's thread. A store that refuses is tried again every second
/// until it takes them or the relay stops.
async fn take(
    target: &Target,
    parts: &Parts,
    m: &discord::Message,
    own: Option<&str>,
    stop: &CancellationToken,
) {
    if !discord::is_person(m, own) {
        return;
    }
    let conversation = loop {
        match parts
            .store
            .conversation_of(&target.name, &m.channel_id)
            .await
        {
            Ok(Some(c)) => break c,
            Ok(None) => return,
            Err(e) => {
                warn!(target_name = %target.name, error = %e, "cannot look up the thread of a Discord reply; trying again in 1s");
                if pause(stop).await {
                    return;
                }
            }
        }
    };
    for (reply, dedupe) in discord::replies_from(m, &conversation, &target.name) {
        loop {
            let (event, deliveries) = replies::stored(&reply, dedupe.clone(), parts.clock.now_ms());
            match parts.store.accept(event, deliveries).await {
                Ok(Accepted::New(_)) => {
                    parts.metrics.reply("discord", "accepted");
                    info!(target_name = %target.name, %conversation, "an agent's reply in Discord, queued for Crisp");
                    break;
                }
                Ok(Accepted::Duplicate) => {
                    parts.metrics.reply("discord", "duplicate");
                    break;
                }
                Err(e) => {
                    warn!(target_name = %target.name, error = %e, "cannot store a Discord reply; trying again in 1s");
                    if pause(stop).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Reads the messages posted in the threads of recently active
/// conversations since [`CATCH_UP_WINDOW_MS`] ago, oldest first, and takes
/// the replies among them (those already taken are duplicates).
async fn catch_up(
    target: &Target,
    cfg: &discord::GatewayConfig,
    parts: &Parts,
    own: Option<&str>,
    stop: &CancellationToken,
) {
    let now = parts.clock.now_ms();
    let threads = match parts
        .store
        .active_threads(&target.name, now - CATCH_UP_WINDOW_MS)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            warn!(target_name = %target.name, error = %e, "cannot list the threads to catch up on");
            return;
        }
    };
    let mut taken = 0usize;
    for thread in threads {
        let mut after = discord::snowflake_at(now - CATCH_UP_WINDOW_MS);
        loop {
            let req = discord::messages_after_request(
                &cfg.api,
                &cfg.token,
                &thread,
                &after,
                CATCH_UP_PAGE,
            );
            let page = match parts.transport.send(&req, target.timeout).await {
                Ok(a) if (200..300).contains(&a.status) => discord::parse_messages(&a.body),
                Ok(a) => {
                    warn!(target_name = %target.name, %thread, status = a.status, "cannot read a thread to catch up on replies");
                    break;
                }
                Err(e) => {
                    warn!(target_name = %target.name, %thread, error = %e, "cannot read a thread to catch up on replies");
                    break;
                }
            };
            for m in &page {
                take(target, parts, m, own, stop).await;
                taken += 1;
            }
            match page.last() {
                Some(last) if page.len() >= 25 => after = last.id.clone(),
                _ => break,
            }
            // Well under Discord's 50 requests a second for a bot.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = stop.cancelled() => return,
            }
        }
        if stop.is_cancelled() {
            return;
        }
    }
    info!(target_name = %target.name, messages = taken, "caught up on the Discord threads of recent conversations");
}

/// Waits a second; `true` if the relay stops meanwhile.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => false,
        () = stop.cancelled() => true,
    }
}
