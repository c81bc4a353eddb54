//! The JSON API under `/api/v1/`: the console's data and actions for
//! scripts. Same access rule as the pages (`auth`); POSTs take JSON.
//! Errors are `{"error": "..."}` with 400 (bad input, said precisely), 401
//! or 403 (see `auth`), 404 (unknown path or dead letter), 405 (with
//! `Allow`), 500 (the store failed).

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ActionError, Allowed, Body, Console, Ctx, ReplayWhat, data, filter, history, with_body,
};

/// The OpenAPI description of this API (`GET /api/v1/openapi.json`).
pub(super) const OPENAPI: &str = include_str!("assets/openapi.json");

/// The methods `path` answers, or `None` when it is not an endpoint.
pub(super) fn allowed(path: &str) -> Option<Allowed> {
    let rest = path.strip_prefix("/api/v1/")?;
    Some(match rest {
        "overview" | "deadletters" | "config" | "deliveries" | "conversations" | "openapi.json" => {
            Allowed::Get
        }
        "deadletters/replay" | "deadletters/purge" | "reload" => Allowed::Post,
        other => {
            let id = other
                .strip_prefix("deadletters/")
                .or_else(|| other.strip_prefix("deliveries/"))?;
            id.parse::<i64>().ok()?;
            Allowed::Get
        }
    })
}

pub(super) async fn handle(console: &Console, ctx: &Ctx<'_>, body: &Bytes) -> Response<Body> {
    let deps = &console.deps;
    let rest = ctx.path.strip_prefix("/api/v1/").unwrap_or_default();
    match rest {
        "overview" => ok(&data::overview(deps).await),
        "openapi.json" => with_body(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(OPENAPI.as_bytes()),
        ),
        "deadletters" => {
            let target = ctx.query_param("target").filter(|t| !t.is_empty());
            match data::dead_letters(deps, target.as_deref()).await {
                Ok(rows) => ok(&json!({ "dead_letters": rows })),
                Err(e) => failed(&ActionError::Store(e)),
            }
        }
        "config" => ok(&data::config(deps)),
        "deliveries" => {
            let filter = match filter::parse_filter(ctx.query.unwrap_or("")) {
                Ok(f) => f,
                Err(e) => return bad_param(&e),
            };
            match history::deliveries(deps, &filter).await {
                Ok(page) => ok(&page),
                Err(e) => failed(&ActionError::Store(e)),
            }
        }
        "conversations" => {
            let target = ctx.query_param("target").filter(|t| !t.is_empty());
            match history::conversations(deps, target.as_deref()).await {
                Ok(rows) => ok(&json!({ "conversations": rows })),
                Err(e) => failed(&ActionError::Store(e)),
            }
        }
        "deadletters/replay" => {
            let what = match parse::<ReplayBody>(body).and_then(ReplayBody::into_what) {
                Ok(w) => w,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            match console.replay(&what, ctx.via).await {
                Ok(n) => ok(&json!({ "replayed": n })),
                Err(e) => failed(&e),
            }
        }
        "deadletters/purge" => {
            let p: PurgeBody = if body.iter().all(u8::is_ascii_whitespace) {
                PurgeBody::default()
            } else {
                match parse(body) {
                    Ok(p) => p,
                    Err(e) => return error(StatusCode::BAD_REQUEST, e),
                }
            };
            match console.purge(p.older_than.as_deref(), ctx.via).await {
                Ok(n) => ok(&json!({ "purged": n })),
                Err(e) => failed(&e),
            }
        }
        "reload" => match console.reload(ctx.via).await {
            Ok(()) => ok(&json!({ "reloaded": true })),
            Err(e) => failed(&e),
        },
        other if other.starts_with("deliveries/") => {
            let Some(id) = other
                .strip_prefix("deliveries/")
                .and_then(|i| i.parse::<i64>().ok())
            else {
                return error(StatusCode::NOT_FOUND, "no such API endpoint");
            };
            let body = matches!(ctx.query_param("body").as_deref(), Some("1" | "true"));
            match history::delivery(deps, id, body).await {
                Ok(Some(d)) => ok(&d),
                Ok(None) => error(StatusCode::NOT_FOUND, format!("no delivery {id}")),
                Err(e) => failed(&ActionError::Store(e)),
            }
        }
        other => {
            let Some(id) = other
                .strip_prefix("deadletters/")
                .and_then(|i| i.parse::<i64>().ok())
            else {
                return error(StatusCode::NOT_FOUND, "no such API endpoint");
            };
            let body = matches!(ctx.query_param("body").as_deref(), Some("1" | "true"));
            match data::dead_letter(deps, id, body).await {
                Ok(Some(row)) => ok(&row),
                Ok(None) => error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
                Err(e) => failed(&ActionError::Store(e)),
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    ids: Option<Vec<i64>>,
    target: Option<String>,
    all: Option<bool>,
}

impl ReplayBody {
    fn into_what(self) -> Result<ReplayWhat, String> {
        match (self.ids, self.target, self.all) {
            (Some(ids), None, None | Some(false)) if !ids.is_empty() => Ok(ReplayWhat::Ids(ids)),
            (Some(_), None, None | Some(false)) => {
                Err("`ids` is empty: list at least one dead letter id".into())
            }
            (None, Some(t), None | Some(false)) if !t.is_empty() => Ok(ReplayWhat::Target(t)),
            (None, None, Some(true)) => Ok(ReplayWhat::All),
            _ => Err(
                r#"give exactly one of {"ids": [1, 2]}, {"target": "NAME"} or {"all": true}"#
                    .into(),
            ),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    older_than: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not the JSON expected: {e}"))
}

fn ok(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_body(StatusCode::OK, "application/json", bytes),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        ),
    }
}

fn failed(e: &ActionError) -> Response<Body> {
    let status = match e {
        ActionError::BadRequest(_) | ActionError::Reload(_) => StatusCode::BAD_REQUEST,
        ActionError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// 400 naming the parameter: `{"error": ..., "parameter": ...}`.
fn bad_param(e: &filter::FilterError) -> Response<Body> {
    let body = json!({ "error": e.to_string(), "parameter": e.field }).to_string();
    with_body(StatusCode::BAD_REQUEST, "application/json", body)
}

/// `{"error": message}` with `status`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let body = json!({ "error": Value::String(message.into()) }).to_string();
    with_body(status, "application/json", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let cases = [
            ("/api/v1/overview", Some(Allowed::Get)),
            ("/api/v1/deadletters", Some(Allowed::Get)),
            ("/api/v1/deadletters/42", Some(Allowed::Get)),
            ("/api/v1/deadletters/replay", Some(Allowed::Post)),
            ("/api/v1/deadletters/purge", Some(Allowed::Post)),
            ("/api/v1/reload", Some(Allowed::Post)),
            ("/api/v1/config", Some(Allowed::Get)),
            ("/api/v1/deliveries", Some(Allowed::Get)),
            ("/api/v1/deliveries/7", Some(Allowed::Get)),
            ("/api/v1/deliveries/x", None),
            ("/api/v1/conversations", Some(Allowed::Get)),
            ("/api/v1/openapi.json", Some(Allowed::Get)),
            ("/api/v1/deadletters/x", None),
            ("/api/v1/nope", None),
            ("/api/v1/", None),
        ];
        for (path, want) in cases {
            assert_eq!(allowed(path), want, "{path}");
        }
    }

    /// The OpenAPI description names exactly the endpoints `allowed`
    /// answers, each with the method it takes.
    #[test]
    fn the_openapi_description_matches_the_endpoints() {
        let spec: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let paths = spec["paths"].as_object().expect("paths");
        let mut described = Vec::new();
        for (path, ops) in paths {
            let concrete = path.replace("{id}", "1");
            let methods: Vec<&str> = ops
                .as_object()
                .expect("operations")
                .keys()
                .map(String::as_str)
                .collect();
            let want = match methods.as_slice() {
                ["get"] => Allowed::Get,
                ["post"] => Allowed::Post,
                other => panic!("{path}: unexpected methods {other:?}"),
            };
            assert_eq!(allowed(&concrete), Some(want), "{path}");
            described.push(concrete);
        }
        // Every endpoint of the table above is described.
        for path in [
            "/api/v1/overview",
            "/api/v1/deadletters",
            "/api/v1/deadletters/1",
            "/api/v1/deadletters/replay",
            "/api/v1/deadletters/purge",
            "/api/v1/reload",
            "/api/v1/config",
            "/api/v1/deliveries",
            "/api/v1/deliveries/1",
            "/api/v1/conversations",
            "/api/v1/openapi.json",
        ] {
            assert!(
                described.iter().any(|d| d == path),
                "{path} is not described"
            );
        }
    }

    #[test]
    fn replay_bodies() {
        let what = |s: &str| {
            parse::<ReplayBody>(&Bytes::from(s.to_owned())).and_then(ReplayBody::into_what)
        };
        assert_eq!(what(r#"{"ids":[1,2]}"#), Ok(ReplayWhat::Ids(vec![1, 2])));
        assert_eq!(
            what(r#"{"target":"a"}"#),
            Ok(ReplayWhat::Target("a".into()))
        );
        assert_eq!(what(r#"{"all":true}"#), Ok(ReplayWhat::All));
        for bad in [
            r#"{}"#,
            r#"{"all":false}"#,
            r#"{"ids":[]}"#,
            r#"{"ids":[1],"all":true}"#,
            r#"{"id":1}"#,
            "{",
            r#"{"ids":["x"]}"#,
        ] {
            let e = what(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        let e = what(r#"{"id":1}"#).unwrap_err();
        assert!(e.contains("unknown field `id`"), "{e}");
    }
}
