//! Secret values: hook keys, webhook URLs and header values.
//!
//! Owns the newtypes that keep secrets out of logs, errors, metrics and `Debug`
//! output. A secret is only exposed at the one call site that needs it (the key
//! comparison, the request builder) through an explicitly named method. This
//! module must not log, and nothing here may implement `Display` with the
//! secret inside.

use std::fmt;

/// A string that must never be printed. `Debug` shows `"***"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// One accepted hook key (the `?key=` URL parameter Crisp sends).
#[derive(Clone)]
pub struct HookKey(Secret);

impl HookKey {
    pub fn new(key: String) -> Self {
        Self(Secret::new(key))
    }

    /// Compares `candidate` with this key in time that depends only on the
    /// key's length, never on where the first difference is.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.expose().as_bytes(), candidate)
    }
}

impl fmt::Debug for HookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookKey(***)")
    }
}

/// The web console's token (`admin.token`): what a script sends as
/// `Authorization: Bearer …` and what a person types on the login page. It
/// also keys the session cookies' HMAC, so a new token ends every session.
/// `Debug` shows `AdminToken(***)`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Secret);

impl AdminToken {
    /// The fewest characters `admin.token` may have.
    pub const MIN_LEN: usize = 16;

    pub fn new(token: String) -> Self {
        Self(Secret::new(token))
    }

    /// Compares `candidate` with the token in constant time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.expose().as_bytes(), candidate)
    }

    /// The token itself, for the one place that keys the session HMAC.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Constant-time equality of `secret` and `candidate`.
///
/// Runs over every byte of `secret` whatever `candidate` holds, so the time
/// taken reveals neither the common prefix nor the candidate's content. The
/// length of the secret is not hidden (it is not worth hiding: it is visible
/// from the configuration's shape anyway).
pub fn constant_time_eq(secret: &[u8], candidate: &[u8]) -> bool {
    let mut diff = (secret.len() ^ candidate.len()) as u64;
    for (i, s) in secret.iter().enumerate() {
        let c = candidate.get(i).copied().unwrap_or(!*s);
        diff |= u64::from(s ^ c);
    }
    std::hint::black_box(diff) == 0
}

/// A destination URL. Its path and query usually hold a token (Discord
/// `/webhooks/{id}/{token}`, Slack `/services/T/B/secret`), so `Debug` and
/// [`WebhookUrl::redacted`] show only what identifies the destination.
#[derive(Clone)]
pub struct WebhookUrl {
    url: url::Url,
    redacted: String,
}

impl WebhookUrl {
    /// Wraps a parsed URL; `keep_segments` path segments are shown by
    /// [`WebhookUrl::redacted`], the rest is replaced by `***`.
    pub fn new(url: url::Url, keep_segments: usize) -> Self {
        let redacted = redact_url(&url, keep_segments);
        Self { url, redacted }
    }

    /// The full URL with its token, for building the request only.
    pub fn expose(&self) -> &url::Url {
        &self.url
    }

    /// A form safe for logs, errors and `render` output.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted)
    }
}

/// `scheme://host[:port]/` plus the first `keep_segments` path segments; any
/// further segments become `***`, and so does the query. User info is dropped.
pub fn redact_url(url: &url::Url, keep_segments: usize) -> String {
    let mut out = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    for segment in segments.iter().take(keep_segments) {
        out.push('/');
        out.push_str(segment);
    }
    if segments.len() > keep_segments {
        out.push_str("/***");
    } else if segments.is_empty() {
        out.push('/');
    }
    if let Some(query) = url.query() {
        // Keep only the names of parameters the relay itself adds.
        let shown: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| match k.as_ref() {
                "wait" | "thread_id" => format!("{k}={v}"),
                _ => format!("{k}=***"),
            })
            .collect();
        out.push('?');
        out.push_str(&shown.join("&"));
    }
    out
}

/// A PostgreSQL connection URL (`store.url`): its password is a secret.
/// `Debug` and [`DatabaseUrl::redacted`] show it as `***`; `Serialize`
/// writes the redacted form (the reload diff).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: url::Url,
    redacted: String,
}

impl DatabaseUrl {
    /// Parses `text` as a `postgres://` (or `postgresql://`) URL with a
    /// host. The error never repeats the text (it may hold the password).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let url = url::Url::parse(text)
            .map_err(|_| "is not a URL like postgres://user:password@host:5432/database")?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err("must start with postgres:// (only PostgreSQL is supported)");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host (e.g. postgres://user:password@db:5432/relay)");
        }
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        // Query values (sslpassword, say) may be secret too: names only.
        let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        if names.is_empty() {
            shown.set_query(None);
        } else {
            let q: Vec<String> = names.iter().map(|k| format!("{k}=***")).collect();
            shown.set_query(Some(&q.join("&")));
        }
        Ok(Self {
            redacted: shown.to_string(),
            url,
        })
    }

    /// The URL itself, for the one place that connects.
    pub fn expose(&self) -> &url::Url {
        &self.url
    }

    /// The URL with its password and query values replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted)
    }
}

impl serde::Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_urls_never_show_their_password() {
        let u = DatabaseUrl::parse(
            "postgres://relay:s3cret@db:5432/relay?sslmode=require&sslpassword=p4ss",
        )
        .unwrap();
        for shown in [
            format!("{u:?}"),
            u.redacted().to_owned(),
            serde_json::to_string(&u).unwrap(),
        ] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("p4ss"),
                "{shown}"
            );
            assert!(shown.contains("relay:***@db:5432/relay"), "{shown}");
        }
        assert_eq!(u.expose().password(), Some("s3cret"));
        for bad in ["mysql://u:p@h/db", "postgres:///db", "not a url s3cret"] {
            let e = DatabaseUrl::parse(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    use super::*;

    #[test]
    fn constant_time_eq_table() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"secret", b"secret", true),
            (b"secret", b"Secret", false),
            (b"secret", b"secre", false),
            (b"secret", b"secrets", false),
            (b"secret", b"", false),
            (b"", b"", true),
            (b"a", b"\xff", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(constant_time_eq(a, b), *want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn redaction_hides_tokens() {
        let cases = [
            (
                "https://discord.com/api/webhooks/123/tok-EN_secret",
                3,
                "https://discord.com/api/webhooks/123/***",
            ),
            (
                "https://hooks.slack.com/services/T0/B0/XXXXsecret",
                1,
                "https://hooks.slack.com/services/***",
            ),
            (
                "https://user:pw@crm.example.com:8443/hook?token=abc&wait=true",
                0,
                "https://crm.example.com:8443/***?token=***&wait=true",
            ),
            ("http://127.0.0.1:9/", 0, "http://127.0.0.1:9/"),
        ];
        for (url, keep, want) in cases {
            let u = WebhookUrl::new(url::Url::parse(url).unwrap(), keep);
            assert_eq!(u.redacted(), want);
            assert!(!format!("{u:?}").contains("secret"));
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        let k = HookKey::new("hunter2".into());
        assert!(!format!("{k:?}").contains("hunter2"));
        let t = AdminToken::new("hunter2-hunter2-hunter2".into());
        assert_eq!(format!("{t:?}"), "AdminToken(***)");
        assert!(t.matches(b"hunter2-hunter2-hunter2"));
        assert!(!t.matches(b"hunter2-hunter2-hunter3"));
    }
}
