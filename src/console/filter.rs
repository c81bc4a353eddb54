//! The Deliveries filter: a query string (`target`, `state`, `event`,
//! `since`, `until`, `conversation`, `before_id`, `limit`) read into a
//! [`DeliveryFilter`], or a [`FilterError`] naming the parameter and what it
//! expects. Pure. Empty values mean "no condition" (an HTML form sends every
//! field); unknown parameters are ignored (`body`, `done`, …).

use crate::store::history::MAX_LIMIT;
use crate::store::{DeliveryFilter, DeliveryState};

/// A parameter that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {expected}")]
pub struct FilterError {
    /// The query parameter, e.g. `state`.
    pub field: &'static str,
    /// What it expects, for people.
    pub expected: String,
}

fn bad(field: &'static str, expected: impl Into<String>) -> FilterError {
    FilterError {
        field,
        expected: expected.into(),
    }
}

/// Reads `query` (the part after `?`, undecoded) into a filter.
pub fn parse_filter(query: &str) -> Result<DeliveryFilter, FilterError> {
    let mut f = DeliveryFilter::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match k.as_ref() {
            "target" => f.target = Some(v.to_owned()),
            "event" => f.event = Some(v.to_owned()),
            "state" => {
                f.state = Some(
                    DeliveryState::parse(v)
                        .ok_or_else(|| bad("state", "one of `pending`, `delivered` or `dead`"))?,
                );
            }
            "since" => f.since_ms = Some(parse_time(v).ok_or_else(|| time_error("since"))?),
            "until" => f.until_ms = Some(parse_time(v).ok_or_else(|| time_error("until"))?),
            "conversation" => {
                if !v.contains('/') {
                    return Err(bad(
                        "conversation",
                        "`website_id/session_id`, as the Conversations page lists them",
                    ));
                }
                f.conversation = Some(v.to_owned());
            }
            "before_id" => {
                f.before_id = Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("before_id", "a positive delivery id"))?,
                );
            }
            "limit" => {
                f.limit = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| bad("limit", format!("a number from 1 to {MAX_LIMIT}")))?,
                );
            }
            _ => {}
        }
    }
    if let (Some(s), Some(u)) = (f.since_ms, f.until_ms)
        && s >= u
    {
        return Err(bad("until", "a time after `since`"));
    }
    Ok(f)
}

fn time_error(field: &'static str) -> FilterError {
    bad(
        field,
        "a UTC date and time such as `2026-12-02T10:30`, `2026-12-02T10:30:00Z` or `2026-12-02`",
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` (what `datetime-local` sends),
/// `…:SS`, `…:SS.fff`, each with an optional `Z`; read as UTC.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, ""));
    let num = |t: &str, len: usize| -> Option<i64> {
        (t.len() == len && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, mo, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1..=12).contains(&mo) {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=month_days[(mo - 1) as usize]).contains(&day) {
        return None;
    }
    let (mut h, mut mi, mut sec, mut ms) = (0, 0, 0, 0);
    if !time.is_empty() {
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut t = hms.split(':');
        h = num(t.next()?, 2)?;
        mi = num(t.next()?, 2)?;
        if let Some(x) = t.next() {
            sec = num(x, 2)?;
        }
        if t.next().is_some() || h > 23 || mi > 59 || sec > 59 {
            return None;
        }
        if !frac.is_empty() {
            if frac.len() > 3 {
                return None;
            }
            ms = num(frac, frac.len())? * 10_i64.pow(3 - frac.len() as u32);
        }
    }
    let days = days_from_civil(y, mo, day);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_table() {
        let ok = |q: &str| parse_filter(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert_eq!(ok(""), DeliveryFilter::default());
        assert_eq!(
            ok("target=&state=&event=&since=&until=&conversation="),
            DeliveryFilter::default()
        );
        let f = ok(
            "target=hook&state=dead&event=message%3Asend&conversation=w%2Fs&before_id=42&limit=10&body=1",
        );
        assert_eq!(
            f,
            DeliveryFilter {
                target: Some("hook".into()),
                state: Some(DeliveryState::Dead),
                event: Some("message:send".into()),
                conversation: Some("w/s".into()),
                before_id: Some(42),
                limit: Some(10),
                ..DeliveryFilter::default()
            }
        );
        let f = ok("since=2026-12-02T10%3A30&until=2026-12-03T00:00:00.5Z");
        assert_eq!(f.since_ms, Some(1_796_207_400_000));
        assert_eq!(f.until_ms, Some(1_796_256_000_500));
        assert_eq!(ok("since=1970-01-01").since_ms, Some(0));
        assert_eq!(ok("state=pending").state, Some(DeliveryState::Pending));
        assert_eq!(ok("state=delivered").state, Some(DeliveryState::Delivered));

        let bad_cases = [
            ("state=done", "state"),
            ("state=DEAD", "state"),
            ("since=yesterday", "since"),
            ("since=2026-02-30", "since"),
            ("until=2026-12-02T25:00", "until"),
            ("until=2026-12-02T10:30:00.1234", "until"),
            ("since=2026-12-03&until=2026-12-02", "until"),
            ("before_id=x", "before_id"),
            ("before_id=-1", "before_id"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=ten", "limit"),
            ("conversation=nosession", "conversation"),
        ];
        for (q, field) in bad_cases {
            let e = parse_filter(q).expect_err(q);
            assert_eq!(e.field, field, "{q}");
            assert!(e.to_string().starts_with(&format!("`{field}`: ")), "{e}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("2000-02-29"), Some(951_782_400_000));
        assert_eq!(parse_time("2001-02-29"), None);
        assert_eq!(
            parse_time("2025-06-03T12:01:23.417Z"),
            Some(1_748_952_083_417)
        );
        assert_eq!(parse_time("2025-06-03 12:01"), Some(1_748_952_060_000));
        for bad in [
            "",
            "2025",
            "2025-6-3",
            "2025-06-03T12",
            "2025-06-03T12:01:23:00",
            "x",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
