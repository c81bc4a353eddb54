//! The console's session cookie, `crisp_relay_session`: `ISSUED.MAC`, where
//! `ISSUED` is the Unix milliseconds it was issued at and `MAC` the hex
//! HMAC-SHA256 of it keyed by `admin.token`. Nothing is stored server-side:
//! a cookie is valid while its MAC matches the token in force and it is
//! younger than [`SESSION_TTL_MS`]. A new token therefore ends every
//! session. Pure (the caller passes the clock's reading); compares in
//! constant time; never logs.

use ring::hmac;

use crate::secret::{AdminToken, constant_time_eq};

/// The cookie's name.
pub const COOKIE: &str = "crisp_relay_session";

/// How long a session lasts (12 h).
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// A session issued at `now_ms` under `token`: the cookie's value.
pub fn issue(token: &AdminToken, now_ms: i64) -> String {
    format!("{now_ms}.{}", mac_hex(token, now_ms))
}

/// Whether `value` is a session issued under `token` within the last
/// [`SESSION_TTL_MS`] (and not in the future, beyond a minute of slack).
pub fn verify(token: &AdminToken, value: &str, now_ms: i64) -> bool {
    let Some((issued, mac)) = value.split_once('.') else {
        return false;
    };
    let Ok(issued_ms) = issued.parse::<i64>() else {
        return false;
    };
    if issued_ms > now_ms.saturating_add(60_000)
        || now_ms.saturating_sub(issued_ms) > SESSION_TTL_MS
    {
        return false;
    }
    constant_time_eq(mac_hex(token, issued_ms).as_bytes(), mac.as_bytes())
}

/// The `Set-Cookie` value that starts a session. `Secure` is left off: the
/// relay serves plain HTTP and cannot tell whether a TLS proxy is in front
/// (see the README's "Web console").
pub fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL_MS / 1000
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn from_headers<'a>(cookie_headers: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    cookie_headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

fn mac_hex(token: &AdminToken, issued_ms: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.expose().as_bytes());
    let tag = hmac::sign(&key, format!("crisp-relay-session:{issued_ms}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> AdminToken {
        AdminToken::new(s.to_owned())
    }

    #[test]
    fn sessions_table() {
        let t = token("0123456789abcdef0123");
        let other = token("0123456789abcdef0124");
        let now = 1_750_000_000_000;
        let good = issue(&t, now);
        let cases: Vec<(&AdminToken, String, i64, bool)> = vec![
            (&t, good.clone(), now, true),
            (&t, good.clone(), now + SESSION_TTL_MS, true),
            (&t, good.clone(), now + SESSION_TTL_MS + 1, false),
            (&t, good.clone(), now - 60_000, true),
            (&t, good.clone(), now - 60_001, false),
            // Another token: every session ends.
            (&other, good.clone(), now, false),
            // Tampered issue time or MAC.
            (
                &t,
                good.replacen(&now.to_string(), &(now + 1).to_string(), 1),
                now,
                false,
            ),
            (&t, format!("{good}0"), now, false),
            (&t, String::new(), now, false),
            (&t, "garbage".into(), now, false),
            (
                &t,
                format!("x.{}", good.split_once('.').unwrap().1),
                now,
                false,
            ),
        ];
        for (i, (tok, value, at, want)) in cases.into_iter().enumerate() {
            assert_eq!(verify(tok, &value, at), want, "case {i}: {value}");
        }
        assert!(!good.contains("0123456789abcdef"));
    }

    #[test]
    fn cookie_headers() {
        let headers = ["a=1; crisp_relay_session=123.abc; b=2", "c=3"];
        assert_eq!(from_headers(headers.into_iter()), Some("123.abc"));
        assert_eq!(from_headers(["a=1", "x=y"].into_iter()), None);
        assert_eq!(
            from_headers(["other", "crisp_relay_session=\"9.f\""].into_iter()),
            Some("9.f")
        );
        let set = set_cookie("1.ab");
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "crisp_relay_session=1.ab",
        ] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set.contains("Secure"));
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
