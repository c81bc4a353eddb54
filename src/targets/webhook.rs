//! Generic HTTP webhooks: a JSON template's body, text wrapped as
//! `{"text": ...}`, or the original Crisp event when no template applies.

use serde_json::{Value, json};

use super::BuildError;
use crate::render::Rendered;

pub fn body(rendered: Rendered, event: &Value) -> Result<Value, BuildError> {
    Ok(match rendered {
        Rendered::Json(v) => v,
        Rendered::Text(t) => json!({ "text": t }),
        Rendered::Event => event.clone(),
    })
}
