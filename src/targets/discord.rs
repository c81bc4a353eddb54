//! Discord Execute Webhook: URL shape, body wrapping, mention safety and
//! Discord's length limits (research/targets.md §1).

use serde_json::{Map, Value, json};

use super::{BuildError, object};
use crate::config::Target;
use crate::model::TargetKind;
use crate::render::Rendered;
use crate::text::{fit_string, text_len};

pub const CONTENT_MAX: usize = 2000;
pub const EMBEDS_MAX: usize = 10;
pub const TITLE_MAX: usize = 256;
pub const DESCRIPTION_MAX: usize = 4096;
pub const FIELDS_MAX: usize = 25;
pub const FIELD_NAME_MAX: usize = 256;
pub const FIELD_VALUE_MAX: usize = 1024;
pub const FOOTER_MAX: usize = 2048;
pub const AUTHOR_MAX: usize = 256;
pub const EMBEDS_TOTAL_MAX: usize = 6000;
pub const USERNAME_MAX: usize = 80;

/// The JSON body for `rendered`: text becomes `content`; `username` and
/// `avatar_url` come from the target unless the template set them;
/// `allowed_mentions: {"parse": []}` is added unless the template set its own;
/// everything is fitted to Discord's limits.
pub fn body(target: &Target, rendered: Rendered) -> Result<Value, BuildError> {
    let mut map = match rendered {
        Rendered::Text(text) => {
            let mut m = Map::new();
            m.insert("content".into(), Value::String(text));
            m
        }
        Rendered::Json(v) => object(TargetKind::Discord, v)?,
        Rendered::Event => {
            return Err(BuildError::Invalid(
                "a Discord target needs a template".into(),
            ));
        }
    };
    if let Some(name) = &target.username {
        map.entry("username")
            .or_insert_with(|| Value::String(name.clone()));
    }
    if let Some(avatar) = &target.avatar_url {
        map.entry("avatar_url")
            .or_insert_with(|| Value::String(avatar.clone()));
    }
    match map.get("allowed_mentions") {
        Some(Value::Object(_)) => {}
        _ => {
            map.insert("allowed_mentions".into(), json!({"parse": []}));
        }
    }
    fit(&mut map);
    let has_content = map
        .get("content")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.trim().is_empty());
    let has_embeds = map
        .get("embeds")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    let has_other = ["components", "poll"].iter().any(|k| map.contains_key(*k));
    if !has_content && !has_embeds && !has_other {
        return Err(BuildError::Invalid("Discord body has neither `content` nor `embeds` (Discord answers 50006 \"Cannot send an empty message\")".into()));
    }
    Ok(Value::Object(map))
}

/// Fits a Discord body to its documented limits, in place.
pub fn fit(map: &mut Map<String, Value>) {
    if let Some(c) = map.get_mut("content") {
        fit_string(c, CONTENT_MAX);
    }
    if let Some(u) = map.get_mut("username") {
        fit_string(u, USERNAME_MAX);
    }
    let Some(Value::Array(embeds)) = map.get_mut("embeds") else {
        return;
    };
    embeds.truncate(EMBEDS_MAX);
    for embed in embeds.iter_mut() {
        let Value::Object(e) = embed else { continue };
        if let Some(v) = e.get_mut("title") {
            fit_string(v, TITLE_MAX);
        }
        if let Some(v) = e.get_mut("description") {
            fit_string(v, DESCRIPTION_MAX);
        }
        if let Some(Value::Object(a)) = e.get_mut("author")
            && let Some(v) = a.get_mut("name")
        {
            fit_string(v, AUTHOR_MAX);
        }
        if let Some(Value::Object(f)) = e.get_mut("footer")
            && let Some(v) = f.get_mut("text")
        {
            fit_string(v, FOOTER_MAX);
        }
        if let Some(Value::Array(fields)) = e.get_mut("fields") {
            fields.truncate(FIELDS_MAX);
            for field in fields.iter_mut() {
                if let Value::Object(f) = field {
                    if let Some(v) = f.get_mut("name") {
                        fit_string(v, FIELD_NAME_MAX);
                    }
                    if let Some(v) = f.get_mut("value") {
                        fit_string(v, FIELD_VALUE_MAX);
                    }
                }
            }
        }
    }
    // The 6000 total across all embeds: cap every text at the largest length
    // C for which the capped total fits (water-filling), so short texts such
    // as titles and field names stay whole and long ones share the cuts.
    let mut texts = embed_texts(embeds);
    let lens: Vec<usize> = texts
        .iter()
        .map(|v| text_len(v.as_str().unwrap_or("")))
        .collect();
    if lens.iter().sum::<usize>() <= EMBEDS_TOTAL_MAX {
        return;
    }
    let capped_total = |cap: usize| lens.iter().map(|&l| l.min(cap)).sum::<usize>();
    let (mut lo, mut hi) = (0usize, lens.iter().copied().max().unwrap_or(0));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if capped_total(mid) <= EMBEDS_TOTAL_MAX {
            lo = mid
        } else {
            hi = mid - 1
        }
    }
    for (v, &len) in texts.iter_mut().zip(&lens) {
        if len > lo {
            fit_string(v, lo);
        }
    }
}

/// Mutable references to every string counted in the 6000-unit total.
fn embed_texts(embeds: &mut [Value]) -> Vec<&mut Value> {
    let mut out = Vec::new();
    for embed in embeds.iter_mut() {
        let Value::Object(e) = embed else { continue };
        for (key, value) in e.iter_mut() {
            match (key.as_str(), value) {
                ("title" | "description", v @ Value::String(_)) => out.push(v),
                ("author", Value::Object(a)) => {
                    out.extend(a.get_mut("name").filter(|v| v.is_string()))
                }
                ("footer", Value::Object(f)) => {
                    out.extend(f.get_mut("text").filter(|v| v.is_string()))
                }
                ("fields", Value::Array(fields)) => {
                    for field in fields.iter_mut() {
                        if let Value::Object(f) = field {
                            for (k, v) in f.iter_mut() {
                                if (k == "name" || k == "value") && v.is_string() {
                                    out.push(v);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The total counted against the 6000 limit (for tests and `check`).
pub fn embeds_total(body: &Value) -> usize {
    let mut body = body.clone();
    match body.get_mut("embeds") {
        Some(Value::Array(e)) => embed_texts(e)
            .iter()
            .map(|v| text_len(v.as_str().unwrap_or("")))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_limits() {
        let long = "x".repeat(5000);
        let fields: Vec<Value> = (0..30)
            .map(|_| json!({"name": long, "value": long}))
            .collect();
        let mut map = json!({
            "content": long,
            "embeds": (0..12).map(|_| json!({"title": long, "description": long, "fields": fields, "footer": {"text": long}, "author": {"name": long}})).collect::<Vec<_>>()
        });
        let Value::Object(m) = &mut map else { panic!() };
        fit(m);
        assert_eq!(text_len(map["content"].as_str().unwrap()), CONTENT_MAX);
        assert_eq!(map["embeds"].as_array().unwrap().len(), EMBEDS_MAX);
        assert!(
            embeds_total(&map) <= EMBEDS_TOTAL_MAX,
            "{}",
            embeds_total(&map)
        );
        let e = &map["embeds"][0];
        assert!(text_len(e["title"].as_str().unwrap()) <= TITLE_MAX);
        assert!(e["fields"].as_array().unwrap().len() <= FIELDS_MAX);
    }
}
