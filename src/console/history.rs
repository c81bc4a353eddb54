//! What the Deliveries and Conversations pages and their API show, read
//! from the store's history into view structs (times as ISO 8601). Reads
//! only. Secrets never enter a view: a delivery carries its target's name,
//! never its URL; errors are stored already redacted.

use serde::Serialize;

use super::Deps;
use super::data::pretty;
use crate::render::format_iso8601;
use crate::store::{
    AttemptRow, ConversationRow, DeliveryFilter, DeliverySummary, StoreError, history::MAX_LIMIT,
};

/// One delivery as listed.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: i64,
    pub event: String,
    pub conversation: Option<String>,
    pub session_id: Option<String>,
    pub route: String,
    pub target: String,
    pub template: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub created_at: String,
    pub updated_at: String,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

impl From<DeliverySummary> for DeliveryView {
    fn from(d: DeliverySummary) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            event: d.event,
            conversation: d.conversation,
            session_id: d.session_id,
            route: d.route,
            target: d.target,
            template: d.template,
            state: d.state,
            attempts: d.attempts,
            created_at: format_iso8601(d.created_at_ms),
            updated_at: format_iso8601(d.updated_at_ms),
            last_status: d.last_status,
            last_error: d.last_error,
        }
    }
}

/// One page of deliveries and the `before_id` of the next one.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    /// `None` on the last page.
    pub next_before_id: Option<i64>,
}

pub async fn deliveries(deps: &Deps, filter: &DeliveryFilter) -> Result<DeliveryPage, StoreError> {
    let rows = deps.store.recent_deliveries(filter).await?;
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= filter.rows();
    let next_before_id = if full {
        rows.last().map(|d| d.id)
    } else {
        None
    };
    Ok(DeliveryPage {
        deliveries: rows.into_iter().map(DeliveryView::from).collect(),
        next_before_id,
    })
}

/// One attempt as shown.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub attempt: i64,
    pub at: String,
    pub latency_ms: Option<i64>,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub outcome: String,
}

impl From<AttemptRow> for AttemptView {
    fn from(a: AttemptRow) -> Self {
        Self {
            attempt: a.attempt,
            at: format_iso8601(a.at_ms),
            latency_ms: a.latency_ms,
            status: a.status,
            error: a.error,
            outcome: a.outcome,
        }
    }
}

/// One delivery with its attempts (and its event's body when asked).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryDetail {
    pub delivery: DeliveryView,
    /// The attempts kept (the last `ATTEMPTS_KEPT`), oldest first.
    pub attempts: Vec<AttemptView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// What the target's template makes of the event with the config in
    /// force now (the body only: never the URL or headers), when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rendered: Option<String>,
}

/// Delivery `id`, or `None` if the store no longer has it.
pub async fn delivery(
    deps: &Deps,
    id: i64,
    body: bool,
) -> Result<Option<DeliveryDetail>, StoreError> {
    // The store has no "get one delivery": the newest row below `id + 1`
    // is `id` itself when it still exists, else an older one (checked).
    let filter = DeliveryFilter {
        before_id: Some(id.saturating_add(1)),
        limit: Some(1),
        ..DeliveryFilter::default()
    };
    let Some(d) = deps
        .store
        .recent_deliveries(&filter)
        .await?
        .into_iter()
        .find(|d| d.id == id)
    else {
        return Ok(None);
    };
    let attempts = deps.store.attempts_of(id).await?;
    let (body, rendered) = if body {
        match deps.store.event_body(d.event_id).await? {
            Some(text) => (
                Some(pretty(&text)),
                Some(render_now(
                    deps,
                    &d.target,
                    d.template.as_deref(),
                    &text,
                    d.created_at_ms,
                )),
            ),
            None => (Some("(the event is no longer stored)".into()), None),
        }
    } else {
        (None, None)
    };
    Ok(Some(DeliveryDetail {
        delivery: d.into(),
        attempts: attempts.into_iter().map(AttemptView::from).collect(),
        body,
        rendered,
    }))
}

/// The body the target's template makes of a stored event with the config
/// in force now, or why it cannot (the target or template is gone, the
/// template fails). Only the body: the URL and headers hold secrets.
fn render_now(
    deps: &Deps,
    target: &str,
    template: Option<&str>,
    event: &str,
    received_at_ms: i64,
) -> String {
    let relay = deps.live.get();
    let Some(t) = relay.config.targets.iter().find(|t| t.name == target) else {
        return format!("(target {target} is no longer configured)");
    };
    let value = match serde_json::from_str(event) {
        Ok(v) => v,
        Err(e) => return format!("(the stored event is not JSON: {e})"),
    };
    let event = match crate::event::Event::from_value(value, received_at_ms) {
        Ok(e) => e,
        Err(e) => return format!("(the stored event is invalid: {e})"),
    };
    match relay.prepare_for(t, template, event.value()) {
        Ok(req) => match req.body {
            crate::targets::Body::Json(v) => {
                serde_json::to_string_pretty(&v).unwrap_or_else(|e| e.to_string())
            }
            crate::targets::Body::Text(t) => t,
        },
        Err(e) => format!("(cannot render it now: {e})"),
    }
}

/// One conversation's thread as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationView {
    pub target: String,
    pub conversation: String,
    pub session_id: String,
    pub thread: String,
    pub state: String,
    pub created_at: String,
    pub last_activity: String,
    pub replies: i64,
}

impl From<ConversationRow> for ConversationView {
    fn from(c: ConversationRow) -> Self {
        Self {
            target: c.target,
            conversation: c.conversation,
            session_id: c.session_id,
            thread: c.thread,
            state: c.state.as_str().to_owned(),
            created_at: format_iso8601(c.created_at_ms),
            last_activity: format_iso8601(c.last_activity_ms),
            replies: c.replies,
        }
    }
}

pub async fn conversations(
    deps: &Deps,
    target: Option<&str>,
) -> Result<Vec<ConversationView>, StoreError> {
    Ok(deps
        .store
        .conversations(target, MAX_LIMIT)
        .await?
        .into_iter()
        .map(ConversationView::from)
        .collect())
}
