//! `render`: show what each target would receive for one event, without
//! sending anything. Secrets (URL tokens, header values) are redacted.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::load_event;
use crate::app::Relay;
use crate::targets::{Body, HeaderValue, OutgoingRequest};

/// One delivery as `render --json` prints it.
fn delivery_json(route: &str, target: &crate::config::Target, req: &OutgoingRequest) -> Value {
    let headers: serde_json::Map<String, Value> = req
        .headers
        .iter()
        .map(|(k, v)| {
            let shown = match v {
                HeaderValue::Plain(s) => (*s).to_owned(),
                HeaderValue::Secret(_) => "***".to_owned(),
            };
            (k.clone(), Value::String(shown))
        })
        .collect();
    let body = match &req.body {
        Body::Json(v) => v.clone(),
        Body::Text(t) => Value::String(t.clone()),
    };
    let mut out = json!({
        "route": route,
        "target": target.name,
        "kind": target.kind.as_str(),
        "method": req.method,
        "url": req.url.as_ref().map(|u| u.redacted().to_owned()),
        "headers": headers,
        "body": body,
    });
    if !target.enabled {
        out["disabled"] = Value::Bool(true);
    }
    out
}

pub(super) fn run(relay: &Relay, path: &Path, as_json: bool) -> ExitCode {
    let event = match load_event(path) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let decisions = relay.config.router.route_all(event.value());
    let mut stdout = std::io::stdout().lock();
    if decisions.is_empty() && !as_json {
        let _ = writeln!(
            stdout,
            "no route matches event `{}`: Crisp gets 200 and nothing is sent",
            event.name()
        );
    }
    let mut failed = false;
    for d in decisions {
        let route = &relay.config.router.routes()[d.route];
        let target = &relay.config.targets[d.target];
        match relay.previews(target, route.template.as_deref(), event.value()) {
            Ok(previews) => {
                for p in previews {
                    let mut j = delivery_json(&route.name, target, &p.request);
                    if let Some(thread) = p.thread {
                        j["thread"] = Value::String(thread.into());
                    }
                    if as_json {
                        let _ = writeln!(stdout, "{j}");
                    } else {
                        let _ = write_human(&mut stdout, &j);
                    }
                }
            }
            Err(e) => {
                failed = true;
                eprintln!(
                    "error: route `{}` → target `{}`: {e}",
                    route.name, target.name
                );
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn write_human(out: &mut impl Write, j: &Value) -> std::io::Result<()> {
    let s = |k: &str| j[k].as_str().unwrap_or("").to_owned();
    let disabled = if j.get("disabled").is_some() {
        "  (disabled)"
    } else {
        ""
    };
    let thread = match j.get("thread").and_then(Value::as_str) {
        Some("create") => "  — first message of a conversation: creates its thread",
        Some("reply") => "  — later message of the conversation: into its thread",
        Some("channel") => "  — to the channel",
        _ => "",
    };
    writeln!(
        out,
        "── route {} → target {} ({}){disabled}{thread}",
        s("route"),
        s("target"),
        s("kind")
    )?;
    if let Some(url) = j["url"].as_str() {
        writeln!(out, "{} {url}", s("method"))?;
    }
    if let Some(h) = j["headers"].as_object() {
        for (k, v) in h {
            writeln!(out, "{k}: {}", v.as_str().unwrap_or(""))?;
        }
    }
    match &j["body"] {
        Value::String(t) => writeln!(out, "\n{t}\n"),
        v => writeln!(
            out,
            "\n{}\n",
            serde_json::to_string_pretty(v).unwrap_or_default()
        ),
    }
}
