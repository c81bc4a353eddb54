//! Who may do what on the console and the API: one pure function,
//! [`decide`], from the facts of a request to a [`Decision`], with its table
//! test. The caller reads the headers, checks the credential (a bearer token
//! or a session cookie) and says what it found; nothing here does I/O or
//! sees a secret.
//!
//! The rules:
//! - The login page and the stylesheet/script are open to anyone (there is
//!   nothing secret in them), but a login POST carrying a foreign `Origin`
//!   is refused (login CSRF).
//! - A state-changing request (anything but GET/HEAD) always needs a
//!   credential; with no `admin.token` configured, actions are refused with
//!   a message saying to set it.
//! - A state-changing request authenticated by the session cookie must come
//!   from the console's own pages: its `Origin` equals the request's `Host`
//!   (or, without `Origin`, `Sec-Fetch-Site: same-origin`). A foreign or
//!   missing origin is refused (CSRF). `Authorization: Bearer` needs no
//!   origin: browsers never send it on their own, so it is a script's.
//! - Reading (GET/HEAD) is open on a loopback listener; on any other
//!   listener it needs a credential too.
//! - A wrong bearer token is refused outright; a stale or forged cookie
//!   counts as no credential (log in again).

/// What the request carried to prove who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    None,
    /// `Authorization: Bearer …`; `true` when it is the token.
    Bearer(bool),
    /// The session cookie; `true` when its MAC and age check out.
    Cookie(bool),
}

/// Where a state-changing request says it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// No `Origin` header.
    Absent,
    /// `Origin`'s host (and port) is the request's `Host`.
    SameAsHost,
    /// Another site, or `null`.
    Other,
}

/// The facts [`decide`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The admin listener is bound to a loopback address.
    pub loopback: bool,
    /// `admin.token` is set.
    pub token_configured: bool,
    pub credential: Credential,
    /// GET or HEAD.
    pub safe: bool,
    pub origin: Origin,
    /// `Sec-Fetch-Site: same-origin` was sent.
    pub fetch_same_origin: bool,
    /// The login page, its form's POST, or the static assets.
    pub public: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential where one is needed: pages go to the login page, the
    /// API answers 401.
    NeedCredential,
    /// A bearer token that is not the token (401).
    BadToken,
    /// No `admin.token` configured, so nobody may act (403).
    NoTokenConfigured,
    /// A cookie-authenticated change from another origin (403).
    CrossOrigin,
}

impl Refusal {
    /// What the person or script is told (never a secret).
    pub fn message(self) -> &'static str {
        match self {
            Self::NeedCredential => "log in first (or send Authorization: Bearer <admin.token>)",
            Self::BadToken => "the bearer token is not admin.token",
            Self::NoTokenConfigured => {
                "the console is read-only: set admin.token in the configuration (e.g. `token: \"${CRISP_RELAY_ADMIN_TOKEN}\"` with a value from `openssl rand -hex 32`) and reload"
            }
            Self::CrossOrigin => {
                "refused: this request did not come from the console's own pages (its Origin is not this host); reload the page and try again"
            }
        }
    }

    /// The HTTP status for the API.
    pub fn status(self) -> u16 {
        match self {
            Self::NeedCredential | Self::BadToken => 401,
            Self::NoTokenConfigured | Self::CrossOrigin => 403,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Refuse(Refusal),
}

/// The access rule (see the module's doc).
pub fn decide(f: &Facts) -> Decision {
    use Decision::{Allow, Refuse};
    if f.public {
        return if !f.safe && f.origin == Origin::Other {
            Refuse(Refusal::CrossOrigin)
        } else {
            Allow
        };
    }
    if f.credential == Credential::Bearer(false) {
        return Refuse(Refusal::BadToken);
    }
    let authenticated = match f.credential {
        Credential::Bearer(ok) | Credential::Cookie(ok) => ok && f.token_configured,
        Credential::None => false,
    };
    if !f.safe {
        if !f.token_configured {
            return Refuse(Refusal::NoTokenConfigured);
        }
        if !authenticated {
            return Refuse(Refusal::NeedCredential);
        }
        if matches!(f.credential, Credential::Cookie(_)) {
            let same = match f.origin {
                Origin::SameAsHost => true,
                Origin::Absent => f.fetch_same_origin,
                Origin::Other => false,
            };
            if !same {
                return Refuse(Refusal::CrossOrigin);
            }
        }
        return Allow;
    }
    if f.loopback || authenticated {
        Allow
    } else if !f.token_configured {
        Refuse(Refusal::NoTokenConfigured)
    } else {
        Refuse(Refusal::NeedCredential)
    }
}

/// Compares an `Origin` header (`scheme://host[:port]`) with the request's
/// `Host` header, ASCII case-insensitively.
pub fn origin_of(origin: Option<&str>, host: Option<&str>) -> Origin {
    let Some(origin) = origin else {
        return Origin::Absent;
    };
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (authority, host) {
        (Some(a), Some(h)) if !a.is_empty() && a.eq_ignore_ascii_case(h.trim()) => {
            Origin::SameAsHost
        }
        _ => Origin::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Credential::{Bearer, Cookie};
    use Origin::{Absent, Other, SameAsHost};

    const ALLOW: Decision = Decision::Allow;
    const LOGIN: Decision = Decision::Refuse(Refusal::NeedCredential);
    const BAD: Decision = Decision::Refuse(Refusal::BadToken);
    const NOTOKEN: Decision = Decision::Refuse(Refusal::NoTokenConfigured);
    const CSRF: Decision = Decision::Refuse(Refusal::CrossOrigin);

    #[test]
    fn access_table() {
        // (loopback, token configured, credential, safe, origin,
        //  Sec-Fetch-Site same-origin, public, expected)
        #[rustfmt::skip]
        let cases = [
            // Reading on loopback: open, with or without a token.
            (true, false, Credential::None, true, Absent, false, false, ALLOW),
            (true, true, Credential::None, true, Absent, false, false, ALLOW),
            (true, true, Cookie(false), true, Absent, false, false, ALLOW),
            (true, true, Bearer(false), true, Absent, false, false, BAD),
            // Reading elsewhere: a credential is needed.
            (false, true, Credential::None, true, Absent, false, false, LOGIN),
            (false, true, Cookie(false), true, Absent, false, false, LOGIN),
            (false, true, Cookie(true), true, Other, false, false, ALLOW),
            (false, true, Bearer(true), true, Absent, false, false, ALLOW),
            (false, true, Bearer(false), true, Absent, false, false, BAD),
            (false, false, Credential::None, true, Absent, false, false, NOTOKEN),
            // A cookie minted under no token cannot count.
            (false, false, Cookie(true), true, Absent, false, false, NOTOKEN),
            // The login page and assets: open, even off loopback.
            (false, true, Credential::None, true, Absent, false, true, ALLOW),
            (false, false, Credential::None, true, Absent, false, true, ALLOW),
            (false, true, Credential::None, false, Absent, false, true, ALLOW),
            (false, true, Credential::None, false, SameAsHost, false, true, ALLOW),
            (false, true, Credential::None, false, Other, false, true, CSRF),
            // Actions: always a credential, even on loopback.
            (true, false, Credential::None, false, SameAsHost, true, false, NOTOKEN),
            (true, false, Bearer(true), false, Absent, false, false, NOTOKEN),
            (true, true, Credential::None, false, SameAsHost, true, false, LOGIN),
            (true, true, Cookie(false), false, SameAsHost, true, false, LOGIN),
            (true, true, Bearer(false), false, Absent, false, false, BAD),
            // Bearer: no origin needed (scripts).
            (true, true, Bearer(true), false, Absent, false, false, ALLOW),
            (false, true, Bearer(true), false, Other, false, false, ALLOW),
            // Cookie: same origin only.
            (true, true, Cookie(true), false, SameAsHost, false, false, ALLOW),
            (false, true, Cookie(true), false, SameAsHost, false, false, ALLOW),
            (true, true, Cookie(true), false, Absent, true, false, ALLOW),
            (true, true, Cookie(true), false, Absent, false, false, CSRF),
            (true, true, Cookie(true), false, Other, false, false, CSRF),
            (true, true, Cookie(true), false, Other, true, false, CSRF),
        ];
        for (i, (loopback, token, credential, safe, origin, same, public, want)) in
            cases.into_iter().enumerate()
        {
            let facts = Facts {
                loopback,
                token_configured: token,
                credential,
                safe,
                origin,
                fetch_same_origin: same,
                public,
            };
            assert_eq!(decide(&facts), want, "case {i}: {facts:?}");
        }
    }

    #[test]
    fn origin_table() {
        let cases = [
            (None, Some("127.0.0.1:9090"), Absent),
            (
                Some("http://127.0.0.1:9090"),
                Some("127.0.0.1:9090"),
                SameAsHost,
            ),
            (
                Some("https://Relay.Example.com"),
                Some("relay.example.com"),
                SameAsHost,
            ),
            (Some("http://127.0.0.1:9091"), Some("127.0.0.1:9090"), Other),
            (
                Some("https://evil.example"),
                Some("relay.example.com"),
                Other,
            ),
            (Some("null"), Some("relay.example.com"), Other),
            (Some("http://relay.example.com"), None, Other),
            (Some("http://"), Some(""), Other),
        ];
        for (origin, host, want) in cases {
            assert_eq!(origin_of(origin, host), want, "{origin:?} vs {host:?}");
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        assert!(Refusal::NoTokenConfigured.message().contains("admin.token"));
        assert_eq!(Refusal::NeedCredential.status(), 401);
        assert_eq!(Refusal::CrossOrigin.status(), 403);
    }
}
