//! A fake Crisp REST API for replies ([`FakeCrisp`]): `POST
//! /v1/website/{website_id}/conversation/{session_id}/message` with Basic
//! auth and `X-Crisp-Tier`, keeping every message it accepted.
//!
//! What it models (research: two-way.md §1.1, §1.2, §1.5): 401 `{"error":
//! true, "reason": "invalid_session"}` without the right `Authorization:
//! Basic base64(identifier:key)` (the reason string is UNCONFIRMED), 400
//! `invalid_data` without `X-Crisp-Tier`, a JSON body with `type`, `from`,
//! `origin` and `content`; success `{"error": false, "reason":
//! "dispatched", "data": {"fingerprint": N}}` with a new fingerprint each
//! time. Outages, 420/429 and other answers are programmed through the
//! server ([`FakeServer::fail_next`], [`FakeServer::always`]).

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use serde_json::{Value, json};

use super::{Canned, FakeServer, Kind, Received, Responder, State, canned};

/// One message the fake accepted.
#[derive(Debug, Clone)]
pub struct CrispMessage {
    pub website_id: String,
    pub session_id: String,
    pub body: Value,
    pub fingerprint: u64,
}

impl CrispMessage {
    pub fn content(&self) -> String {
        match &self.body["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    pub fn nickname(&self) -> &str {
        self.body["user"]["nickname"].as_str().unwrap_or("")
    }
}

struct World {
    authorization: String,
    messages: Vec<CrispMessage>,
    next_fingerprint: u64,
}

struct CrispApi {
    world: Mutex<World>,
}

impl CrispApi {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn crisp_error(status: u16, reason: &str) -> Canned {
    canned(
        status,
        &json!({"error": true, "reason": reason, "data": {}}).to_string(),
        &[],
    )
}

impl Responder for CrispApi {
    fn answer(&self, _st: &mut State, rec: &Received) -> Canned {
        let mut w = self.world();
        if rec.header("authorization") != Some(w.authorization.as_str()) {
            return crisp_error(401, "invalid_session");
        }
        if rec.header("x-crisp-tier").is_none() {
            return crisp_error(400, "invalid_data");
        }
        let segs: Vec<&str> = rec.path.trim_start_matches('/').split('/').collect();
        let ["v1", "website", website, "conversation", session, "message"] = segs.as_slice() else {
            return crisp_error(404, "not_found");
        };
        if rec.method != "POST" {
            return crisp_error(405, "not_allowed");
        }
        let Ok(body) = serde_json::from_slice::<Value>(&rec.body) else {
            return crisp_error(400, "invalid_data");
        };
        let ok = ["type", "from", "origin"]
            .iter()
            .all(|k| body[k].is_string())
            && !body["content"].is_null();
        if !ok {
            return crisp_error(400, "invalid_data");
        }
        w.next_fingerprint += 1;
        let fingerprint = w.next_fingerprint;
        w.messages.push(CrispMessage {
            website_id: website.to_string(),
            session_id: session.to_string(),
            body,
            fingerprint,
        });
        canned(
            201,
            &json!({"error": false, "reason": "dispatched", "data": {"fingerprint": fingerprint}})
                .to_string(),
            &[],
        )
    }
}

/// The fake Crisp API; derefs to its [`FakeServer`] for the record and the
/// programmed answers.
pub struct FakeCrisp {
    server: FakeServer,
    api: Arc<CrispApi>,
}

impl Deref for FakeCrisp {
    type Target = FakeServer;

    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeCrisp {
    /// Accepts the token `identifier:key`.
    pub async fn start(identifier: &str, key: &str) -> Self {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{identifier}:{key}"));
        let api = Arc::new(CrispApi {
            world: Mutex::new(World {
                authorization: format!("Basic {basic}"),
                messages: Vec::new(),
                next_fingerprint: 163_239_600,
            }),
        });
        let server = FakeServer::start(Kind::Custom(api.clone())).await;
        FakeCrisp { server, api }
    }

    /// `http://{addr}/v1`, the API's base.
    pub fn api_base(&self) -> String {
        self.url("/v1")
    }

    /// Every message accepted, in order.
    pub fn messages(&self) -> Vec<CrispMessage> {
        self.api.world().messages.clone()
    }
}
