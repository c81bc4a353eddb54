//! Verifying signed requests: Crisp Plugin Hooks (`X-Crisp-Signature`) and
//! Slack's Events API (`X-Slack-Signature`). Both are HMAC-SHA256 over the
//! raw body and a timestamp, hex-encoded, compared in constant time, with a
//! replay window of five minutes either way.
//!
//! Research: two-way.md §2 (Crisp: `[{timestamp};{body}]`, hex; the unit of
//! the timestamp is not documented, so seconds and milliseconds are both
//! read) and §4 (Slack: `v0=` + hex over `v0:{timestamp}:{body}`, seconds,
//! 300 s). Pure: the caller reads the headers and the clock.
//!
//! Must not: say why a signature failed to the sender (the caller answers
//! 401 without detail), or log the secret.

use ring::hmac;

use crate::secret::constant_time_eq;

/// How far a signed request's timestamp may be from now, either way.
pub const REPLAY_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Why a signed request is refused (for the log; the sender gets a bare
/// 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature or timestamp header is missing")]
    Missing,
    #[error("the timestamp is not a number")]
    BadTimestamp,
    #[error("the timestamp is more than 5 minutes from now (a replay, or a clock off)")]
    Stale,
    #[error("the signature is not in the expected form")]
    BadEncoding,
    #[error("the signature does not match")]
    Mismatch,
}

/// A Crisp Plugin Hook: `X-Crisp-Request-Timestamp` and `X-Crisp-Signature`
/// (hex HMAC-SHA256 of `[{timestamp};{body}]` with the plugin's secret).
pub fn crisp(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_ms: i64,
) -> Result<(), SignatureError> {
    let (ts, sig) = timestamp.zip(signature).ok_or(SignatureError::Missing)?;
    let at = crisp_timestamp_ms(ts.trim()).ok_or(SignatureError::BadTimestamp)?;
    fresh(at, now_ms)?;
    let given = hex(sig.trim()).ok_or(SignatureError::BadEncoding)?;
    let tag = mac(secret, &[b"[", ts.trim().as_bytes(), b";", body, b"]"]);
    matches(&tag, &given)
}

/// A Slack request: `X-Slack-Request-Timestamp` (seconds) and
/// `X-Slack-Signature` (`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`
/// with the app's signing secret).
pub fn slack(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_ms: i64,
) -> Result<(), SignatureError> {
    let (ts, sig) = timestamp.zip(signature).ok_or(SignatureError::Missing)?;
    let secs: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    fresh(secs.saturating_mul(1000), now_ms)?;
    let given = sig
        .trim()
        .strip_prefix("v0=")
        .and_then(hex)
        .ok_or(SignatureError::BadEncoding)?;
    let tag = mac(secret, &[b"v0:", ts.trim().as_bytes(), b":", body]);
    matches(&tag, &given)
}

/// The hex HMAC-SHA256 a sender would put in the header: for the tests and
/// the fakes that sign like Crisp and Slack.
pub fn sign_crisp(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    to_hex(mac(secret, &[b"[", timestamp.as_bytes(), b";", body, b"]"]).as_ref())
}

/// `v0=` + hex, as Slack signs.
pub fn sign_slack(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        to_hex(mac(secret, &[b"v0:", timestamp.as_bytes(), b":", body]).as_ref())
    )
}

/// A Crisp timestamp in milliseconds: values under 10^11 are seconds
/// (10^11 s is the year 5138; 10^11 ms is 1973).
fn crisp_timestamp_ms(raw: &str) -> Option<i64> {
    let n: i64 = raw.parse().ok()?;
    Some(if n.abs() < 100_000_000_000 {
        n.saturating_mul(1000)
    } else {
        n
    })
}

fn fresh(at_ms: i64, now_ms: i64) -> Result<(), SignatureError> {
    if at_ms.abs_diff(now_ms) > REPLAY_WINDOW_MS as u64 {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

fn matches(tag: &hmac::Tag, given: &[u8]) -> Result<(), SignatureError> {
    if constant_time_eq(tag.as_ref(), given) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Lower- or upper-case hex to bytes.
fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z
    const BODY: &[u8] = br#"{"event":"message:send"}"#;

    /// What, timestamp header, signature header, body, expected.
    type CrispCase<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a [u8],
        Result<(), SignatureError>,
    );
    /// What, timestamp header, signature header, expected.
    type SlackCase<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Result<(), SignatureError>,
    );

    #[test]
    fn slack_matches_its_documented_example() {
        // api.slack.com/authentication/verifying-requests-from-slack
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let ts = "1531420618";
        assert_eq!(
            sign_slack(secret, ts, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        assert_eq!(
            slack(
                secret,
                Some(ts),
                Some("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
                body,
                1_531_420_618_000
            ),
            Ok(())
        );
    }

    #[test]
    fn crisp_signatures_table() {
        let secret = b"plugin-secret";
        let secs = (NOW_MS / 1000).to_string();
        let ms = NOW_MS.to_string();
        let good_s = sign_crisp(secret, &secs, BODY);
        let good_ms = sign_crisp(secret, &ms, BODY);
        let stale = ((NOW_MS - REPLAY_WINDOW_MS - 1000) / 1000).to_string();
        let future = (NOW_MS + REPLAY_WINDOW_MS + 1000).to_string();
        let upper = good_s.to_uppercase();
        let cases: Vec<CrispCase> = vec![
            ("seconds", Some(&secs), Some(&good_s), BODY, Ok(())),
            ("milliseconds", Some(&ms), Some(&good_ms), BODY, Ok(())),
            ("upper-case hex", Some(&secs), Some(&upper), BODY, Ok(())),
            (
                "body changed",
                Some(&secs),
                Some(&good_s),
                b"{}",
                Err(SignatureError::Mismatch),
            ),
            (
                "timestamp changed",
                Some(&ms),
                Some(&good_s),
                BODY,
                Err(SignatureError::Mismatch),
            ),
            (
                "no signature",
                Some(&secs),
                None,
                BODY,
                Err(SignatureError::Missing),
            ),
            (
                "no timestamp",
                None,
                Some(&good_s),
                BODY,
                Err(SignatureError::Missing),
            ),
            (
                "not a number",
                Some("soon"),
                Some(&good_s),
                BODY,
                Err(SignatureError::BadTimestamp),
            ),
            (
                "stale",
                Some(&stale),
                Some(&good_s),
                BODY,
                Err(SignatureError::Stale),
            ),
            (
                "future",
                Some(&future),
                Some(&good_s),
                BODY,
                Err(SignatureError::Stale),
            ),
            (
                "not hex",
                Some(&secs),
                Some("zz"),
                BODY,
                Err(SignatureError::BadEncoding),
            ),
            (
                "odd length",
                Some(&secs),
                Some("abc"),
                BODY,
                Err(SignatureError::BadEncoding),
            ),
            (
                "truncated",
                Some(&secs),
                Some(&good_s[..62]),
                BODY,
                Err(SignatureError::Mismatch),
            ),
        ];
        for (what, ts, sig, body, want) in cases {
            assert_eq!(crisp(secret, ts, sig, body, NOW_MS), want, "{what}");
        }
        assert_eq!(
            crisp(b"other", Some(&secs), Some(&good_s), BODY, NOW_MS),
            Err(SignatureError::Mismatch),
            "another secret"
        );
    }

    #[test]
    fn slack_signatures_table() {
        let secret = b"signing-secret";
        let ts = (NOW_MS / 1000).to_string();
        let good = sign_slack(secret, &ts, BODY);
        let stale = (NOW_MS / 1000 - 301).to_string();
        let stale_sig = sign_slack(secret, &stale, BODY);
        let no_prefix = good.trim_start_matches("v0=").to_string();
        let in_ms = NOW_MS.to_string();
        let cases: Vec<SlackCase> = vec![
            ("good", Some(&ts), Some(&good), Ok(())),
            (
                "stale, though signed",
                Some(&stale),
                Some(&stale_sig),
                Err(SignatureError::Stale),
            ),
            (
                "no v0= prefix",
                Some(&ts),
                Some(&no_prefix),
                Err(SignatureError::BadEncoding),
            ),
            (
                "milliseconds are not Slack's",
                Some(&in_ms),
                Some(&good),
                Err(SignatureError::Stale),
            ),
            ("missing", Some(&ts), None, Err(SignatureError::Missing)),
        ];
        for (what, t, sig, want) in cases {
            assert_eq!(slack(secret, t, sig, BODY, NOW_MS), want, "{what}");
        }
    }
}
