//! The Deliveries and Conversations pages: `/ui/deliveries` (a filter and
//! a page of deliveries, newest first, "Older" by keyset), a delivery's
//! detail with its attempts (`/ui/deliveries/ID`, the event's body only
//! with `?body=1`) and `/ui/conversations`. A bad filter value answers 400
//! with the form and a message naming the field.

use hyper::{Response, StatusCode};
use serde_json::json;

use super::filter::{FilterError, parse_filter};
use super::pages::Page;
use super::{ActionError, Body, Console, Ctx, history};
use crate::model::Threads;
use crate::store::DeliveryState;

/// The filter's fields as typed, echoed back into the form.
fn form_values(ctx: &Ctx<'_>) -> serde_json::Value {
    let v = |name| ctx.query_param(name).unwrap_or_default();
    json!({
        "target": v("target"),
        "state": v("state"),
        "event": v("event"),
        "since": v("since"),
        "until": v("until"),
        "conversation": v("conversation"),
    })
}

fn target_names(console: &Console, selected: Option<&str>) -> Vec<serde_json::Value> {
    let mut names: Vec<String> = console
        .deps
        .live
        .get()
        .config
        .targets
        .iter()
        .map(|t| t.name.clone())
        .collect();
    if let Some(t) = selected.filter(|t| !t.is_empty())
        && !names.iter().any(|n| n == t)
    {
        names.push(t.to_owned());
    }
    names
        .iter()
        .map(|n| json!({"name": n, "selected": Some(n.as_str()) == selected}))
        .collect()
}

/// `/ui/deliveries?…` with the filter of `ctx` and `before_id`.
fn older_link(ctx: &Ctx<'_>, before_id: i64) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for name in [
        "target",
        "state",
        "event",
        "since",
        "until",
        "conversation",
        "limit",
    ] {
        if let Some(v) = ctx.query_param(name).filter(|v| !v.is_empty()) {
            s.append_pair(name, &v);
        }
    }
    s.append_pair("before_id", &before_id.to_string());
    format!("/ui/deliveries?{}", s.finish())
}

pub(super) async fn deliveries(
    console: &Console,
    page: &Page<'_>,
    ctx: &Ctx<'_>,
) -> Response<Body> {
    let form = form_values(ctx);
    let target = form["target"].as_str().map(str::to_owned);
    let state = form["state"].as_str().unwrap_or_default().to_owned();
    let states: Vec<_> = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Dead,
    ]
    .iter()
    .map(|s| json!({"name": s.as_str(), "selected": s.as_str() == state}))
    .collect();
    let mut data = json!({
        "form": form,
        "states": states,
        "target_names": target_names(console, target.as_deref()),
        "rows": [],
        "older": null,
        "filter_error": null,
    });
    let filter = match parse_filter(ctx.query.unwrap_or("")) {
        Ok(f) => f,
        Err(FilterError { field, expected }) => {
            data["filter_error"] = json!(format!(
                "Bad value for {field}: expected {}.",
                expected.replace('`', "")
            ));
            return page.render(StatusCode::BAD_REQUEST, "deliveries", "Deliveries", data);
        }
    };
    match history::deliveries(&console.deps, &filter).await {
        Ok(p) => {
            data["older"] = json!(p.next_before_id.map(|id| older_link(ctx, id)));
            data["rows"] = json!(p.deliveries);
            page.render(StatusCode::OK, "deliveries", "Deliveries", data)
        }
        Err(e) => page.action_failed(&ActionError::Store(e)),
    }
}

pub(super) async fn delivery(
    console: &Console,
    page: &Page<'_>,
    ctx: &Ctx<'_>,
    id: i64,
) -> Response<Body> {
    let body = matches!(ctx.query_param("body").as_deref(), Some("1" | "true"));
    match history::delivery(&console.deps, id, body).await {
        Ok(Some(d)) => {
            let link = d.delivery.conversation.as_ref().map(|c| {
                let q: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("conversation", c)
                    .finish();
                format!("/ui/deliveries?{q}")
            });
            page.render(
                StatusCode::OK,
                "delivery",
                &format!("Delivery #{id}"),
                json!({"d": d.delivery, "attempts": d.attempts, "body": d.body, "rendered": d.rendered, "conversation_link": link}),
            )
        }
        Ok(None) => page.error(
            StatusCode::NOT_FOUND,
            &format!("There is no delivery #{id} (deleted by retention or a purge?)."),
            None,
        ),
        Err(e) => page.action_failed(&ActionError::Store(e)),
    }
}

pub(super) async fn conversations(
    console: &Console,
    page: &Page<'_>,
    ctx: &Ctx<'_>,
) -> Response<Body> {
    let target = ctx.query_param("target").filter(|t| !t.is_empty());
    let rows = match history::conversations(&console.deps, target.as_deref()).await {
        Ok(r) => r,
        Err(e) => return page.action_failed(&ActionError::Store(e)),
    };
    let threads_used = !rows.is_empty()
        || console
            .deps
            .live
            .get()
            .config
            .targets
            .iter()
            .any(|t| t.threads == Threads::PerConversation);
    let rows: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("conversation", &r.conversation)
                .finish();
            let mut v = json!(r);
            v["link"] = json!(format!("/ui/deliveries?{q}"));
            v
        })
        .collect();
    page.render(
        StatusCode::OK,
        "conversations",
        "Conversations",
        json!({
            "rows": rows,
            "threads_used": threads_used,
            "target_names": target_names(console, target.as_deref()),
        }),
    )
}
