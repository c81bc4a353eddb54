//! `send`: render one event for one target, send it now, and say what the
//! relay would make of the answer.

use std::path::Path;
use std::process::ExitCode;

use super::{load_event, unknown_target};
use crate::app::Relay;
use crate::clock::Clock;
use crate::delivery::classify::{Outcome, excerpt};
use crate::model::TargetKind;

pub(super) async fn run(
    relay: &Relay,
    target_name: &str,
    path: &Path,
    template: Option<&str>,
) -> ExitCode {
    let cfg = &relay.config;
    let Some(index) = cfg.target_index(target_name) else {
        return unknown_target(relay, target_name);
    };
    let target = &cfg.targets[index];
    let event = match load_event(path) {
        Ok(e) => e,
        Err(code) => return code,
    };
    if target.kind != TargetKind::Stdout && target.url.is_none() {
        eprintln!(
            "error: target `{target_name}` is disabled (its url is empty)\n  hint: set the url's environment variable"
        );
        return ExitCode::from(2);
    }
    let template = template.map(str::to_owned).or_else(|| {
        cfg.router
            .route_all(event.value())
            .into_iter()
            .find(|d| d.target == index)
            .and_then(|d| cfg.router.routes()[d.route].template.clone())
    });
    let req = match relay.prepare_for(target, template.as_deref(), event.value()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: {e}\n  hint: no route sends this event to `{target_name}`? pass --template NAME"
            );
            return ExitCode::from(1);
        }
    };
    let transport = match crate::delivery::transport::HttpTransport::new() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let now = Clock::system().now_ms();
    let (outcome, answer) = crate::delivery::send_once(&transport, target, &req, now).await;
    let url = req.url.as_ref().map_or("(stdout)", |u| u.redacted());
    if let Some(a) = &answer {
        println!("{} {url} → HTTP {}", req.method, a.status);
        let excerpt = excerpt(&a.body);
        if !excerpt.is_empty() {
            println!("{excerpt}");
        }
    }
    match outcome {
        Outcome::Delivered => {
            println!("delivered");
            ExitCode::SUCCESS
        }
        Outcome::Retry { reason, .. } => {
            println!("not delivered (the relay would retry): {reason}");
            ExitCode::from(1)
        }
        Outcome::ThreadGone { reason } => {
            println!("not delivered (the relay would start a new thread): {reason}");
            ExitCode::from(1)
        }
        Outcome::Failed { reason, disable } => {
            let what = if disable {
                "the relay would pause this target"
            } else {
                "the relay would dead-letter it"
            };
            println!("not delivered ({what}): {reason}");
            ExitCode::from(1)
        }
    }
}
