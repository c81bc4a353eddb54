//! Dates for templates and the CLI: Crisp timestamps are milliseconds since
//! the Unix epoch, shown in UTC. Pure.

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn split_ms(ms: i64) -> (i64, u32, u32, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (
        y,
        mo,
        d,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000),
    )
}

/// `2025-06-03T12:01:23.417Z`
pub fn format_iso8601(ms: i64) -> String {
    let (y, mo, d, h, mi, s, milli) = split_ms(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// `2025-06-03 12:01 UTC`
pub fn format_readable(ms: i64) -> String {
    let (y, mo, d, h, mi, _, _) = split_ms(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            format_iso8601(1_748_952_083_417),
            "2025-06-03T12:01:23.417Z"
        );
        assert_eq!(format_readable(1_748_952_083_417), "2025-06-03 12:01 UTC");
        assert_eq!(format_iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_iso8601(-1), "1969-12-31T23:59:59.999Z");
    }
}
