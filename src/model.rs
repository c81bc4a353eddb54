//! The vocabulary of destinations: the target kinds, their quotas and retry
//! policies, their defaults, and the shape each kind's URL must have.
//!
//! A leaf: it imports nothing from the crate, so the config (which builds
//! these values), the targets (which shape requests by kind) and delivery
//! (which paces and retries by them) can all depend on it without depending
//! on each other. Pure: no I/O, no clock.

use std::fmt;
use std::time::Duration;

/// The kinds of target the relay can deliver to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Discord,
    Slack,
    Webhook,
    Stdout,
    /// The relay's own target for agents' replies, sent to Crisp's REST API
    /// (not a kind a user writes: it exists when `crisp` and `replies` are
    /// configured).
    Crisp,
}

impl TargetKind {
    pub const ALL: [TargetKind; 4] = [Self::Discord, Self::Slack, Self::Webhook, Self::Stdout];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discord => "discord",
            Self::Slack => "slack",
            Self::Webhook => "webhook",
            Self::Stdout => "stdout",
            Self::Crisp => "crisp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether a route sending to this kind must name a template (chat
    /// destinations need a message; webhooks and stdout fall back to the
    /// original event).
    pub fn needs_template(self) -> bool {
        matches!(self, Self::Discord | Self::Slack)
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a chat target groups messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threads {
    /// Every message to the channel (webhooks' default).
    #[default]
    None,
    /// One thread per Crisp conversation (`website_id`, `data.session_id`).
    PerConversation,
}

/// The default name of a conversation's Discord thread (Handlebars, plain
/// text): the visitor's nickname and where they write from.
pub const DEFAULT_THREAD_NAME: &str =
    "{{default data.user.nickname \"Visitor\"}} · {{origin data.origin}}";

/// The most characters a Discord thread name may have (channel names are
/// 1–100 characters; that the bound applies to `thread_name` is
/// UNCONFIRMED, so names are cut to it).
pub const THREAD_NAME_MAX: usize = 100;

/// Default API base URLs for bot targets.
pub fn default_api_url(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Slack => "https://slack.com/api",
        _ => "https://discord.com/api/v10",
    }
}

/// A quota: `requests` per `per`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
}

/// Retry policy for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// The longest wait between two attempts; also the cap on any wait a
    /// destination asks for (`Retry-After`, `retry_after`,
    /// `X-RateLimit-Reset-After`), so a hostile or broken answer can delay a
    /// target by this much at most.
    pub max_backoff: Duration,
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// The most attempts `retry.max_attempts` may ask for.
pub const MAX_ATTEMPTS: u32 = 1000;

/// Defaults from research/targets.md: Discord 5 per 2 s per webhook, Slack
/// 1 per second, webhooks unlimited.
pub fn default_rate_limit(kind: TargetKind) -> Option<RateLimit> {
    match kind {
        TargetKind::Discord => Some(RateLimit {
            requests: 5,
            per: Duration::from_secs(2),
            burst: 5,
        }),
        // No burst: Slack allows "short bursts" but does not say how
        // short, and a burst's catch-up sends arrive under a second apart.
        TargetKind::Slack => Some(RateLimit {
            requests: 1,
            per: Duration::from_secs(1),
            burst: 1,
        }),
        TargetKind::Webhook | TargetKind::Stdout | TargetKind::Crisp => None,
    }
}

/// A destination URL checked for its kind: the URL to send to (normalised)
/// and how many leading path segments identify the destination without its
/// token (the rest is secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl {
    pub url: url::Url,
    pub public_segments: usize,
}

/// Checks a destination URL for `kind`. The error never contains the URL
/// (it holds a token).
pub fn check_url(kind: TargetKind, text: &str) -> Result<CheckedUrl, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    match kind {
        TargetKind::Discord => normalise_discord_url(url),
        TargetKind::Slack => Ok(CheckedUrl {
            url,
            public_segments: 1,
        }),
        _ => Ok(CheckedUrl {
            url,
            public_segments: 0,
        }),
    }
}

/// What a valid URL looks like, for hints.
pub fn url_example(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Discord => {
            "a Discord webhook URL looks like https://discord.com/api/webhooks/ID/TOKEN (channel settings → Integrations → Webhooks)"
        }
        TargetKind::Slack => {
            "a Slack incoming webhook URL looks like https://hooks.slack.com/services/T…/B…/…"
        }
        _ => "write an http:// or https:// URL",
    }
}

/// Discord Execute Webhook (research/targets.md §1): requires
/// `/webhooks/{id}/{token}`, pins API v10 when the URL has no version (the
/// default version is deprecated v6), and adds `wait=true` so a message
/// Discord drops is an error rather than a silent 204.
fn normalise_discord_url(mut url: url::Url) -> Result<CheckedUrl, String> {
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| s.map(str::to_owned).collect())
        .unwrap_or_default();
    let Some(at) = segments.iter().position(|s| s == "webhooks") else {
        return Err("the path has no `/webhooks/ID/TOKEN` part".into());
    };
    let (id, token) = (segments.get(at + 1), segments.get(at + 2));
    match (id, token) {
        (Some(id), Some(token))
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !token.is_empty() => {}
        _ => return Err("expected `/webhooks/ID/TOKEN` with a numeric ID".into()),
    }
    let mut segments = segments;
    let mut keep = at + 2; // up to and including the id
    if at > 0 && segments[at - 1] == "api" {
        segments.insert(at, "v10".into());
        keep += 1;
    }
    url.set_path(&segments.join("/"));
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "wait")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("wait", "true");
    Ok(CheckedUrl {
        url,
        public_segments: keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discord_urls_are_normalised() {
        let u = |s: &str| check_url(TargetKind::Discord, s);
        let n = u("https://discord.com/api/webhooks/123/tok").unwrap();
        assert_eq!(
            n.url.as_str(),
            "https://discord.com/api/v10/webhooks/123/tok?wait=true"
        );
        assert_eq!(n.public_segments, 4);
        let n = u("https://discord.com/api/v9/webhooks/123/tok?thread_id=5&wait=false").unwrap();
        assert_eq!(
            n.url.as_str(),
            "https://discord.com/api/v9/webhooks/123/tok?thread_id=5&wait=true"
        );
        for bad in [
            "https://discord.com/api/webhooks/abc/tok",
            "https://discord.com/api/webhooks/123",
            "https://example.com/hook",
            "ftp://discord.com/api/webhooks/1/t",
            "not a url",
        ] {
            let err = u(bad).unwrap_err();
            assert!(!err.contains("tok"), "{err}");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in TargetKind::ALL {
            assert_eq!(TargetKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TargetKind::parse("teams"), None);
    }
}
