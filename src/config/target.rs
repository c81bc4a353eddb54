//! Validation of one `targets.NAME` entry: its kind, URL, headers, quota,
//! retry policy, timeout and batch size.

use std::time::Duration;

use super::ctx::Ctx;
use super::raw::{BoolOrString, RawTarget, S};
use super::{Bot, MAX_BATCH, Target};
use crate::model::{
    MAX_ATTEMPTS, RateLimit, RetryPolicy, TargetKind, Threads, check_url, default_rate_limit,
    url_example,
};
use crate::secret::{Secret, WebhookUrl};
use crate::suggest::did_you_mean;

pub(super) fn validate_target(ctx: &mut Ctx, name: &str, raw: &S<RawTarget>) -> Option<Target> {
    let t = &raw.value;
    let kinds: Vec<&str> = TargetKind::ALL.iter().map(|k| k.as_str()).collect();
    let Some(kind) = TargetKind::parse(&t.kind.value) else {
        let hint = did_you_mean(&t.kind.value, kinds.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("kinds are: {}", kinds.join(", ")));
        ctx.err(
            &t.kind,
            format!("target `{name}`: unknown kind `{}`", t.kind.value),
            Some(hint),
        );
        return None;
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        ctx.err(
            raw,
            format!("target name `{name}` may only use letters, digits, `-` and `_`"),
            None,
        );
    }
    let only = |ctx: &mut Ctx, field: &str, present: bool, allowed: &[TargetKind]| {
        if present && !allowed.contains(&kind) {
            let list: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
            ctx.err(
                raw,
                format!(
                    "target `{name}` (kind {kind}): `{field}` is only for {} targets",
                    list.join(", ")
                ),
                Some(format!("remove `{field}`")),
            );
        }
    };
    only(
        ctx,
        "url",
        t.url.is_some(),
        &[TargetKind::Discord, TargetKind::Slack, TargetKind::Webhook],
    );
    only(
        ctx,
        "username",
        t.username.is_some(),
        &[TargetKind::Discord],
    );
    only(
        ctx,
        "avatar_url",
        t.avatar_url.is_some(),
        &[TargetKind::Discord],
    );
    only(ctx, "headers", t.headers.is_some(), &[TargetKind::Webhook]);
    only(ctx, "method", t.method.is_some(), &[TargetKind::Webhook]);
    only(ctx, "batch", t.batch.is_some(), &[TargetKind::Webhook]);
    let chat = [TargetKind::Discord, TargetKind::Slack];
    only(ctx, "token", t.token.is_some(), &chat);
    only(ctx, "channel", t.channel.is_some(), &chat);
    only(ctx, "api_url", t.api_url.is_some(), &chat);
    only(ctx, "threads", t.threads.is_some(), &chat);
    only(ctx, "coalesce", t.coalesce.is_some(), &chat);
    only(
        ctx,
        "thread_name",
        t.thread_name.is_some(),
        &[TargetKind::Discord],
    );
    if let (Some(_), Some(token)) = (&t.url, &t.token) {
        ctx.err(
            token,
            format!("target `{name}` has both `url` and `token`"),
            Some("a target posts through a webhook (`url`) or as a bot (`token` + `channel`): remove one".into()),
        );
        return None;
    }

    // `enabled: false` (or a variable that says so) switches any target
    // off, stdout included; an empty url switches off a URL target.
    let mut enabled = match &t.enabled {
        None => true,
        Some(e) => match &e.value {
            BoolOrString::Bool(b) => *b,
            BoolOrString::String(text) => {
                let v = ctx.interp(
                    &S {
                        referenced: e.referenced,
                        defined: e.defined,
                        value: text.clone(),
                    },
                    &format!("target `{name}` enabled"),
                )?;
                match parse_bool(&v) {
                    Some(b) => b,
                    None => {
                        ctx.err(
                            e,
                            format!("target `{name}`: enabled must be true or false, not `{v}`"),
                            Some("e.g. `enabled: \"${CRISP_CONSOLE:-false}\"`".into()),
                        );
                        true
                    }
                }
            }
        },
    };
    let switched_off = !enabled;
    let mut bot = None;
    let url = match (&t.url, kind) {
        (_, TargetKind::Stdout) => None,
        (None, _) if t.token.is_some() => {
            bot = validate_bot(ctx, name, kind, raw, &mut enabled)?;
            None
        }
        (None, _) => {
            let hint = if chat.contains(&kind) {
                "add `url: \"${...}\"` (a webhook), or `token` and `channel` (a bot); an empty one disables the target".to_owned()
            } else {
                "add `url: \"${...}\"`; an empty url disables the target".into()
            };
            ctx.err(
                raw,
                format!("target `{name}` (kind {kind}) has no `url`"),
                Some(hint),
            );
            return None;
        }
        // Switched off: the url is not used, so neither its variables nor
        // its shape are checked.
        (Some(_), _) if !enabled => None,
        (Some(u), _) => {
            let text = ctx.interp(u, &format!("target `{name}` url"))?;
            if text.trim().is_empty() {
                enabled = false;
                None
            } else {
                match check_url(kind, &text) {
                    Ok(c) => Some(WebhookUrl::new(c.url, c.public_segments)),
                    Err(why) => {
                        // Never echo the URL: it holds the token.
                        ctx.err(
                            u,
                            format!("target `{name}`: invalid {kind} url: {why}"),
                            Some(url_example(kind).into()),
                        );
                        return None;
                    }
                }
            }
        }
    };
    let username = match &t.username {
        Some(u) => Some(ctx.interp(u, &format!("target `{name}` username"))?),
        None => None,
    };
    let avatar_url = match &t.avatar_url {
        Some(u) => Some(ctx.interp(u, &format!("target `{name}` avatar_url"))?),
        None => None,
    };
    let mut headers = Vec::new();
    // A target switched off sends nothing: its header variables need not be
    // set.
    if let Some(h) = t.headers.as_ref().filter(|_| !switched_off) {
        for (k, v) in &h.value {
            if http_header_name_ok(k) {
                if let Some(val) = ctx.interp(v, &format!("target `{name}` header `{k}`")) {
                    let emptied = super::interp::empty_defaults(&v.value, ctx.env);
                    if enabled && !emptied.is_empty() {
                        ctx.warn(
                            v,
                            format!(
                                "target `{name}` header `{k}`: {} is unset or empty, so the header is sent without it",
                                emptied.iter().map(|n| format!("`${{{n}:-}}`")).collect::<Vec<_>>().join(", ")
                            ),
                            Some(format!("set {} or remove the header", emptied.join(", "))),
                        );
                    }
                    if val.contains(['\r', '\n']) {
                        ctx.err(
                            v,
                            format!("target `{name}` header `{k}`: value contains a line break"),
                            None,
                        );
                    }
                    headers.push((k.clone(), Secret::new(val)));
                }
            } else {
                ctx.err(
                    h,
                    format!("target `{name}`: `{k}` is not a valid header name"),
                    Some("header names use letters, digits and `-`".into()),
                );
            }
        }
    }
    let method = match &t.method {
        None => "POST",
        Some(m) => match m.value.to_ascii_uppercase().as_str() {
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            _ => {
                ctx.err(
                    m,
                    format!("target `{name}`: method `{}` is not supported", m.value),
                    Some("use POST, PUT or PATCH".into()),
                );
                "POST"
            }
        },
    };
    let rate_limit = match &t.rate_limit {
        Some(rl) => Some(rate_limit(ctx, &format!("target `{name}`"), rl)),
        None => default_rate_limit(kind),
    };
    let mut retry = RetryPolicy::default();
    if let Some(r) = &t.retry {
        let r = &r.value;
        if let Some(n) = &r.max_attempts {
            if n.value == 0 || n.value > u64::from(MAX_ATTEMPTS) {
                ctx.err(
                    n,
                    format!(
                        "target `{name}`: retry.max_attempts must be from 1 to {MAX_ATTEMPTS}, not {}",
                        n.value
                    ),
                    Some("retry.max_age bounds how long a delivery is retried".into()),
                );
            }
            retry.max_attempts = n.value.clamp(1, u64::from(MAX_ATTEMPTS)) as u32;
        }
        retry.initial_backoff = ctx.duration(
            &r.initial_backoff,
            &format!("target `{name}` retry.initial_backoff"),
            retry.initial_backoff,
        );
        retry.max_backoff = ctx.duration(
            &r.max_backoff,
            &format!("target `{name}` retry.max_backoff"),
            retry.max_backoff,
        );
        retry.max_age = ctx.duration(
            &r.max_age,
            &format!("target `{name}` retry.max_age"),
            retry.max_age,
        );
        if kind.needs_template()
            && let Some(set) = &r.max_backoff
            && retry.max_backoff < CHAT_MIN_BACKOFF
        {
            ctx.warn(
                set,
                format!(
                    "target `{name}`: retry.max_backoff {:?} also caps the waits {kind} asks for (Retry-After, rate-limit resets); below {}s, sends may come too early and be refused with 429",
                    retry.max_backoff,
                    CHAT_MIN_BACKOFF.as_secs()
                ),
                Some(format!("use at least `{}s`", CHAT_MIN_BACKOFF.as_secs())),
            );
        }
        if retry.max_backoff < retry.initial_backoff {
            ctx.err(
                t.retry.as_ref()?,
                format!("target `{name}`: retry.max_backoff is shorter than retry.initial_backoff"),
                None,
            );
        }
    }
    let timeout = ctx.duration(
        &t.timeout,
        &format!("target `{name}` timeout"),
        Duration::from_secs(10),
    );
    if timeout.is_zero() {
        ctx.err(
            t.timeout.as_ref()?,
            format!("target `{name}`: timeout must be longer than 0"),
            None,
        );
    }
    let batch = match &t.batch {
        None => 1,
        Some(b) if (1..=MAX_BATCH).contains(&b.value) => b.value as usize,
        Some(b) => {
            ctx.err(
                b,
                format!(
                    "target `{name}`: batch must be from 1 to {MAX_BATCH}, not {}",
                    b.value
                ),
                Some("1 sends one request per delivery; N sends up to N as one JSON array".into()),
            );
            1
        }
    };
    let disabled_reason = match (enabled, switched_off) {
        (true, _) => "",
        (false, true) => "`enabled` is false",
        (false, false) => "its url is empty",
    };
    let threads = match &t.threads {
        None => Threads::None,
        Some(v) => match v.value.as_str() {
            "none" => Threads::None,
            "per_conversation" => Threads::PerConversation,
            other => {
                let hint = did_you_mean(other, ["none", "per_conversation"]).map_or_else(
                    || "use `none` or `per_conversation`".to_owned(),
                    |s| format!("did you mean `{s}`?"),
                );
                ctx.err(v, format!("target `{name}`: threads must be `none` or `per_conversation`, not `{other}`"), Some(hint));
                Threads::None
            }
        },
    };
    if threads == Threads::PerConversation && kind == TargetKind::Slack && t.url.is_some() {
        ctx.err(
            t.threads.as_ref()?,
            format!("target `{name}`: a Slack incoming webhook cannot start threads the relay can continue (its answer carries no message id)"),
            Some("post as a Slack app's bot instead: `token: \"${SLACK_BOT_TOKEN}\"` and `channel: C…` (scope chat:write), without `url`".into()),
        );
    }
    let thread_name = match (&t.thread_name, threads, kind) {
        (Some(n), Threads::None, _) => {
            ctx.err(
                n,
                format!("target `{name}`: thread_name names threads, but threads is `none`"),
                Some("add `threads: per_conversation`, or remove thread_name".into()),
            );
            None
        }
        (Some(n), _, _) => Some(n.value.clone()),
        (None, Threads::PerConversation, TargetKind::Discord) => {
            Some(crate::model::DEFAULT_THREAD_NAME.to_owned())
        }
        (None, _, _) => None,
    };
    let coalesce = t.coalesce.as_ref().is_none_or(|c| c.value);
    Some(Target {
        name: name.to_owned(),
        kind,
        url,
        enabled,
        disabled_reason,
        bot,
        threads,
        thread_name,
        coalesce,
        replies: None,
        username,
        avatar_url,
        headers,
        method,
        rate_limit,
        retry,
        timeout,
        batch,
    })
}

/// A `rate_limit` mapping; `what` names its owner in messages (`target `x``).
pub(super) fn rate_limit(ctx: &mut Ctx, what: &str, rl: &S<super::raw::RawRateLimit>) -> RateLimit {
    let r = &rl.value;
    let per = ctx.duration(
        &Some(r.per.clone()),
        &format!("{what} rate_limit.per"),
        Duration::from_secs(1),
    );
    if r.requests.value == 0 || r.requests.value > u64::from(u32::MAX) {
        ctx.err(
            &r.requests,
            format!("{what}: rate_limit.requests must be at least 1"),
            Some("remove rate_limit for no limit".into()),
        );
    }
    if per.is_zero() {
        ctx.err(
            &r.per,
            format!("{what}: rate_limit.per must be longer than 0"),
            None,
        );
    }
    let requests = r.requests.value.clamp(1, u64::from(u32::MAX)) as u32;
    if let Some(b) = &r.burst
        && (b.value == 0 || b.value > u64::from(u32::MAX))
    {
        ctx.err(
            b,
            format!(
                "{what}: rate_limit.burst must be from 1 to {}, not {}",
                u32::MAX,
                b.value
            ),
            Some("1 sends one at a time; leave it out for a burst of `requests`".into()),
        );
    }
    let burst = r
        .burst
        .as_ref()
        .map_or(requests, |b| b.value.clamp(1, u64::from(u32::MAX)) as u32);
    RateLimit {
        requests,
        per,
        burst,
    }
}

pub(super) fn http_header_name_ok(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Below this, `retry.max_backoff` on a Discord or Slack target cuts waits
/// those destinations commonly ask for (shared limits of up to a minute).
const CHAT_MIN_BACKOFF: Duration = Duration::from_secs(60);

/// `token`, `channel` and `api_url` of a bot target. An empty token
/// disables the target (like an empty url); `None` after an error.
fn validate_bot(
    ctx: &mut Ctx,
    name: &str,
    kind: TargetKind,
    raw: &S<RawTarget>,
    enabled: &mut bool,
) -> Option<Option<Bot>> {
    let t = &raw.value;
    let token_at = t.token.as_ref()?;
    let Some(channel_at) = &t.channel else {
        ctx.err(
            raw,
            format!("target `{name}`: a bot target needs `channel` with its `token`"),
            Some(match kind {
                TargetKind::Slack => "the channel's id: in Slack, channel details → About → Channel ID (C…)".into(),
                _ => "the channel's id: in Discord, Developer Mode on, right-click the channel → Copy Channel ID".to_owned(),
            }),
        );
        return None;
    };
    if !*enabled {
        // Switched off: the token is not used, so not required.
        return Some(None);
    }
    let token = ctx.interp(token_at, &format!("target `{name}` token"))?;
    if token.trim().is_empty() {
        *enabled = false;
        return Some(None);
    }
    let channel = ctx.interp(channel_at, &format!("target `{name}` channel"))?;
    let channel_ok = match kind {
        TargetKind::Discord => !channel.is_empty() && channel.bytes().all(|b| b.is_ascii_digit()),
        _ => {
            channel.len() >= 2
                && channel
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        }
    };
    if !channel_ok {
        ctx.err(
            channel_at,
            format!("target `{name}`: `{channel}` is not a {kind} channel id"),
            Some(match kind {
                TargetKind::Discord => {
                    "a Discord channel id is a number such as 123456789012345678".to_owned()
                }
                _ => "a Slack channel id looks like C0123456789 (not the #name)".to_owned(),
            }),
        );
        return None;
    }
    let api_text = match &t.api_url {
        Some(a) => ctx.interp(a, &format!("target `{name}` api_url"))?,
        None => crate::model::default_api_url(kind).to_owned(),
    };
    let api = match url::Url::parse(api_text.trim_end_matches('/')) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            ctx.err(
                t.api_url.as_ref()?,
                format!("target `{name}`: api_url `{api_text}` is not an http(s) URL"),
                Some(format!(
                    "the default is {}",
                    crate::model::default_api_url(kind)
                )),
            );
            return None;
        }
    };
    Some(Some(Bot {
        token: Secret::new(token),
        channel,
        api,
    }))
}

/// `true`/`false` as a variable may spell them.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}
