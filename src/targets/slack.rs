//! Slack incoming webhooks: body wrapping and Block Kit limits
//! (research/targets.md §2).

use serde_json::{Map, Value};

use super::{BuildError, object};
use crate::model::TargetKind;
use crate::render::Rendered;
use crate::text::fit_slack_string;

pub const TEXT_MAX: usize = 40_000;
pub const BLOCKS_MAX: usize = 50;
pub const BLOCK_TEXT_MAX: usize = 3000;
pub const HEADER_TEXT_MAX: usize = 150;
pub const SECTION_FIELDS_MAX: usize = 10;
pub const FIELD_TEXT_MAX: usize = 2000;
pub const CONTEXT_ELEMENTS_MAX: usize = 10;
pub const BUTTON_TEXT_MAX: usize = 75;

/// The JSON body for `rendered`: text becomes `text`. `link_names` and
/// `parse` are removed (they turn plain `@channel` into live mentions), and
/// the body is fitted to Slack's limits.
pub fn body(rendered: Rendered) -> Result<Value, BuildError> {
    let mut map = match rendered {
        Rendered::Text(text) => {
            let mut m = Map::new();
            m.insert("text".into(), Value::String(text));
            m
        }
        Rendered::Json(v) => object(TargetKind::Slack, v)?,
        Rendered::Event => {
            return Err(BuildError::Invalid(
                "a Slack target needs a template".into(),
            ));
        }
    };
    map.remove("link_names");
    map.remove("parse");
    fit(&mut map);
    let has_text = map
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.trim().is_empty());
    let has_blocks = map
        .get("blocks")
        .and_then(Value::as_array)
        .is_some_and(|b| !b.is_empty());
    let has_attachments = map
        .get("attachments")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_text && !has_blocks && !has_attachments {
        return Err(BuildError::Invalid(
            "Slack body has neither `text` nor `blocks` (Slack answers `no_text`)".into(),
        ));
    }
    Ok(Value::Object(map))
}

/// Fits a Slack body to its limits, in place.
pub fn fit(map: &mut Map<String, Value>) {
    if let Some(t) = map.get_mut("text") {
        fit_slack_string(t, TEXT_MAX);
    }
    let Some(Value::Array(blocks)) = map.get_mut("blocks") else {
        return;
    };
    blocks.truncate(BLOCKS_MAX);
    for block in blocks.iter_mut() {
        let Value::Object(b) = block else { continue };
        let kind = b
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let text_max = if kind == "header" {
            HEADER_TEXT_MAX
        } else {
            BLOCK_TEXT_MAX
        };
        fit_text_object(b.get_mut("text"), text_max);
        if let Some(Value::Array(fields)) = b.get_mut("fields") {
            fields.truncate(SECTION_FIELDS_MAX);
            for f in fields.iter_mut() {
                fit_text_object(Some(f), FIELD_TEXT_MAX);
            }
        }
        if let Some(Value::Array(elements)) = b.get_mut("elements") {
            if kind == "context" {
                elements.truncate(CONTEXT_ELEMENTS_MAX);
            }
            for el in elements.iter_mut() {
                let is_button = el.get("type").and_then(Value::as_str) == Some("button");
                if is_button {
                    fit_text_object(el.get_mut("text"), BUTTON_TEXT_MAX);
                } else {
                    fit_text_object(Some(el), BLOCK_TEXT_MAX);
                }
            }
        }
        if let Some(Value::Object(acc)) = b.get_mut("accessory")
            && acc.get("type").and_then(Value::as_str) == Some("button")
        {
            fit_text_object(acc.get_mut("text"), BUTTON_TEXT_MAX);
        }
    }
}

/// A text object `{type, text}`: fit its `text`.
fn fit_text_object(obj: Option<&mut Value>, max: usize) {
    if let Some(Value::Object(o)) = obj
        && let Some(t) = o.get_mut("text")
    {
        fit_slack_string(t, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::text_len;
    use serde_json::json;

    #[test]
    fn fits_and_strips() {
        let long = "é".repeat(5000);
        let blocks: Vec<Value> = (0..60)
            .map(|_| json!({"type": "section", "text": {"type": "mrkdwn", "text": long},
                "fields": (0..12).map(|_| json!({"type": "mrkdwn", "text": long})).collect::<Vec<_>>()}))
            .collect();
        let v = body(Rendered::Json(
            json!({"text": "x", "link_names": 1, "parse": "full", "blocks": blocks,
            }),
        ))
        .unwrap();
        assert!(v.get("link_names").is_none() && v.get("parse").is_none());
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), BLOCKS_MAX);
        assert_eq!(
            text_len(blocks[0]["text"]["text"].as_str().unwrap()),
            BLOCK_TEXT_MAX
        );
        assert_eq!(
            blocks[0]["fields"].as_array().unwrap().len(),
            SECTION_FIELDS_MAX
        );
        assert!(body(Rendered::Text("  ".into())).is_err());
    }
}
