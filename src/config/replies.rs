//! `crisp:` (the REST API token for replies) and each target's `replies`:
//! which targets' threads are read for agents' replies, and the relay's own
//! [`CRISP_TARGET`] that sends them to Crisp, with its pace and retries.
//!
//! Research: two-way.md §1 (Crisp REST API: Basic auth, `X-Crisp-Tier`,
//! quotas of 5,000–10,000 requests a day), §4 (Slack Events API).

use std::time::Duration;

use super::ctx::Ctx;
use super::raw::{RawConfig, RawReplies, S};
use super::{CRISP_TARGET, CrispApi, CrispTier, Replies, Target};
use crate::model::{RateLimit, RetryPolicy, TargetKind, Threads};
use crate::secret::Secret;

/// Crisp's API unless `crisp.api_url` says otherwise.
pub const DEFAULT_CRISP_API: &str = "https://api.crisp.chat/v1";

/// The path of Slack's Events API on the ingest listener by default.
pub const DEFAULT_SLACK_EVENTS_PATH: &str = "/slack/events";

/// Replies are sent at most this fast unless `crisp.rate_limit` says
/// otherwise (Crisp documents daily quotas, not a rate; this keeps a burst
/// of replies from spending them in seconds).
pub const DEFAULT_CRISP_RATE: RateLimit = RateLimit {
    requests: 10,
    per: Duration::from_secs(1),
    burst: 10,
};

/// Validates `crisp` and every target's `replies` (setting
/// [`Target::replies`]); appends the [`CRISP_TARGET`] when replies are on.
pub(super) fn validate(
    ctx: &mut Ctx,
    raw: &RawConfig,
    targets: &mut Vec<Target>,
) -> Option<CrispApi> {
    let api = raw.crisp.as_ref().and_then(|c| crisp_api(ctx, c));
    let mut any = false;
    for (name, t) in &raw.targets {
        let Some(r) = &t.value.replies else {
            continue;
        };
        let Some(target) = targets.iter_mut().find(|x| &x.name == name) else {
            continue;
        };
        if let Some(replies) = target_replies(ctx, name, target, r, raw.crisp.is_some()) {
            match (&api, target.enabled) {
                (Some(_), true) => {
                    target.replies = Some(replies);
                    any = true;
                }
                (None, _) if raw.crisp.is_some() => ctx.warn(
                    r,
                    format!("target `{name}`: replies are off: crisp.identifier or crisp.key is empty"),
                    Some("set CRISP_TOKEN_ID and CRISP_TOKEN_KEY (Crisp: Settings → Workspace Settings → Advanced configuration → API Token)".into()),
                ),
                _ => {}
            }
        }
    }
    if let Some(c) = &raw.crisp
        && raw.targets.contains_key(CRISP_TARGET)
    {
        ctx.err(
            c,
            format!("a target is named `{CRISP_TARGET}`, the name of the relay's own target for replies to Crisp"),
            Some(format!("rename the target `{CRISP_TARGET}`")),
        );
        return None;
    }
    if any && api.is_some() {
        let rate = match raw.crisp.as_ref().and_then(|c| c.value.rate_limit.as_ref()) {
            Some(rl) => super::target::rate_limit(ctx, "crisp", rl),
            None => DEFAULT_CRISP_RATE,
        };
        targets.push(crisp_target(rate));
    }
    api.filter(|_| any)
}

fn crisp_api(ctx: &mut Ctx, c: &S<super::raw::RawCrisp>) -> Option<CrispApi> {
    let raw = &c.value;
    let mut value = |field: &Option<S<String>>, what: &str| -> Option<String> {
        match field {
            None => {
                ctx.err(
                    c,
                    format!("crisp.{what} is missing"),
                    Some(format!(
                        "add `{what}: \"${{CRISP_TOKEN_{}:-}}\"` (Crisp: Settings → Workspace Settings → Advanced configuration → API Token)",
                        if what == "identifier" { "ID" } else { "KEY" }
                    )),
                );
                None
            }
            Some(v) => ctx.interp(v, &format!("crisp.{what}")),
        }
    };
    let identifier = value(&raw.identifier, "identifier");
    let key = value(&raw.key, "key");
    let tier = match &raw.tier {
        None => CrispTier::Website,
        Some(t) => match ctx.interp(t, "crisp.tier")?.as_str() {
            "website" => CrispTier::Website,
            "plugin" => CrispTier::Plugin,
            other => {
                ctx.err(
                    t,
                    format!("crisp.tier must be `website` or `plugin`, not `{other}`"),
                    Some("`website` for a token made in the Crisp app, `plugin` for a Marketplace plugin's token".into()),
                );
                return None;
            }
        },
    };
    let api_text = match &raw.api_url {
        None => DEFAULT_CRISP_API.to_owned(),
        Some(a) => ctx.interp(a, "crisp.api_url")?,
    };
    let api = match url::Url::parse(api_text.trim_end_matches('/')) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            ctx.err(
                raw.api_url.as_ref()?,
                format!("crisp.api_url `{api_text}` is not an http(s) URL"),
                Some(format!("the default is {DEFAULT_CRISP_API}")),
            );
            return None;
        }
    };
    let (identifier, key) = (identifier?, key?);
    if identifier.trim().is_empty() || key.trim().is_empty() {
        return None;
    }
    Some(CrispApi {
        identifier: Secret::new(identifier),
        key: Secret::new(key),
        tier,
        api,
    })
}

/// A target's `replies`, if valid and not switched off by an empty secret.
fn target_replies(
    ctx: &mut Ctx,
    name: &str,
    target: &Target,
    r: &S<RawReplies>,
    crisp: bool,
) -> Option<Replies> {
    let bot_threads = matches!(target.kind, TargetKind::Discord | TargetKind::Slack)
        && target.threads == Threads::PerConversation;
    let has_bot = target.bot.is_some() || !target.enabled;
    if !bot_threads || !has_bot || target.url.is_some() {
        ctx.err(
            r,
            format!("target `{name}`: replies need a bot target (`token` + `channel`) with `threads: per_conversation`"),
            Some("replies are read from the conversation's thread, which only a bot can read".into()),
        );
        return None;
    }
    if !crisp {
        ctx.err(
            r,
            format!("target `{name}`: replies go to Crisp, but the config has no `crisp` section"),
            Some(
                "add `crisp: {identifier: \"${CRISP_TOKEN_ID:-}\", key: \"${CRISP_TOKEN_KEY:-}\"}`"
                    .into(),
            ),
        );
        return None;
    }
    match (&r.value, target.kind) {
        (RawReplies::On(false), _) => None,
        (RawReplies::On(true), TargetKind::Discord) => Some(Replies::Discord),
        (RawReplies::Slack(s), TargetKind::Slack) => {
            // Values read through the untagged `replies` carry no position:
            // messages point at `replies` itself.
            let at = |v: &S<String>| S {
                referenced: r.referenced,
                defined: r.defined,
                value: v.value.clone(),
            };
            let secret = ctx.interp(
                &at(&s.signing_secret),
                &format!("target `{name}` replies.signing_secret"),
            )?;
            let path = match &s.path {
                None => DEFAULT_SLACK_EVENTS_PATH.to_owned(),
                Some(p) => {
                    let v = ctx.interp(&at(p), &format!("target `{name}` replies.path"))?;
                    if !v.starts_with('/') || v.contains(['?', '#']) {
                        ctx.err(r, format!("target `{name}`: replies.path `{v}` must be a path starting with `/`"), Some(format!("e.g. `{DEFAULT_SLACK_EVENTS_PATH}`")));
                        return None;
                    }
                    v
                }
            };
            if secret.trim().is_empty() {
                ctx.warn(
                    r,
                    format!("target `{name}`: replies are off: replies.signing_secret is empty"),
                    Some("set it to the Slack app's Signing Secret (Basic Information → App Credentials)".into()),
                );
                return None;
            }
            Some(Replies::Slack {
                signing_secret: Secret::new(secret),
                path,
            })
        }
        (RawReplies::On(true), _) => {
            ctx.err(r, format!("target `{name}`: Slack replies come through the Events API: write `replies: {{signing_secret: \"${{SLACK_SIGNING_SECRET:-}}\"}}`"), None);
            None
        }
        (RawReplies::Slack(_), _) => {
            ctx.err(r, format!("target `{name}`: Discord replies come through the bot's Gateway connection: write `replies: true`"), None);
            None
        }
    }
}

/// The relay's own target for replies: one conversation's replies in order,
/// one at a time; conversations apart.
fn crisp_target(rate: RateLimit) -> Target {
    Target {
        name: CRISP_TARGET.to_owned(),
        kind: TargetKind::Crisp,
        url: None,
        enabled: true,
        disabled_reason: "",
        username: None,
        avatar_url: None,
        headers: Vec::new(),
        method: "POST",
        rate_limit: Some(rate),
        retry: RetryPolicy::default(),
        timeout: Duration::from_secs(10),
        batch: 1,
        bot: None,
        threads: Threads::PerConversation,
        thread_name: None,
        coalesce: false,
        replies: None,
    }
}
