//! Body checks of the thread fake beyond the webhook fake's message checks:
//! `allowed_mentions` (`message.mdx` §Allowed Mentions Object), thread names
//! (`channel.mdx`: "1-100 character channel name") and snowflakes. The
//! `_errors` codes inside the 50035 are guesses (UNCONFIRMED).

use serde_json::Value;

use crate::fakes::discord::{Reject, field_error};

fn at<'a>(prefix: &[&'a str], field: &'a str) -> Vec<&'a str> {
    let mut p = prefix.to_vec();
    p.push(field);
    p
}

/// `parse` holds only `roles`, `users`, `everyone`; `users` and `roles` at
/// most 100 ids each; `parse` containing `users` (`roles`) excludes a
/// non-empty `users` (`roles`) list ("mutually exclusive... causing a
/// validation error"; an empty or null list is fine).
pub(super) fn allowed_mentions(msg: &Value, prefix: &[&str]) -> Result<(), Reject> {
    let Some(am) = msg.get("allowed_mentions").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let path = at(prefix, "allowed_mentions");
    let parse: Vec<&str> = am
        .get("parse")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or("")).collect())
        .unwrap_or_default();
    if let Some(bad) = parse
        .iter()
        .find(|p| !matches!(**p, "roles" | "users" | "everyone"))
    {
        return Err(field_error(
            &at(&path, "parse"),
            "BASE_TYPE_CHOICES",
            &format!("Value must be one of ('roles', 'users', 'everyone'), not {bad:?}."),
        ));
    }
    for kind in ["users", "roles"] {
        let n = am.get(kind).and_then(Value::as_array).map_or(0, Vec::len);
        if n > 100 {
            return Err(field_error(
                &at(&path, kind),
                "BASE_TYPE_MAX_LENGTH",
                "Must be 100 or fewer in length.",
            ));
        }
        if n > 0 && parse.contains(&kind) {
            return Err(field_error(
                &path,
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                &format!("parse:[\"{kind}\"] and {kind}: [ids...] are mutually exclusive."),
            ));
        }
    }
    Ok(())
}

/// A thread name: a string of 1 to 100 characters once trimmed.
pub(super) fn thread_name<'a>(name: Option<&'a Value>, field: &str) -> Result<&'a str, Reject> {
    let Some(name) = name.and_then(Value::as_str) else {
        return Err(field_error(
            &[field],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        ));
    };
    let n = name.trim().chars().count();
    if !(1..=100).contains(&n) {
        return Err(field_error(
            &[field],
            "BASE_TYPE_BAD_LENGTH",
            "Must be between 1 and 100 in length.",
        ));
    }
    Ok(name)
}

/// A snowflake: decimal digits.
pub(super) fn snowflake(value: &str, field: &str) -> Result<(), Reject> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    Err(field_error(
        &[field],
        "NUMBER_TYPE_COERCE",
        &format!("Value \"{value}\" is not snowflake."),
    ))
}
