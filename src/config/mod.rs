//! `relay.yaml` → a typed, validated [`Config`].
//!
//! Owns the file's shape (strict: unknown keys are errors), `${VAR}` and
//! `${VAR:-default}` interpolation, units (`500ms`, `1MiB`), and every check a
//! user's mistake can trip, each reported with file, line, column and a hint.
//! Matchers are compiled here (through [`crate::routing`]) so nothing
//! downstream re-checks. This module does no I/O: the caller reads the file and
//! supplies the environment; template files are checked afterwards by
//! [`Config::check_templates`].
//!
//! Files: `raw` (the serde shape), `interp` (variables), `units`,
//! `diagnostics` (errors and their wording), `ctx` (where mistakes and
//! warnings are collected), `validate` (sections and routes), `target` (one
//! target). The validated types live here.

mod ctx;
mod diagnostics;
mod interp;
mod raw;
mod replies;
mod target;
mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diagnostics::{ConfigError, ConfigErrors};
pub use interp::EnvLookup;
pub use units::{parse_duration, parse_size};

use ctx::Ctx;
use diagnostics::yaml_error;
use raw::RawConfig;

use crate::model::{RateLimit, RetryPolicy, TargetKind, Threads};
use crate::routing::Router;
use crate::secret::{HookKey, Secret, WebhookUrl};
use crate::suggest::did_you_mean;

/// A validated destination.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    /// `None` for `stdout`, and for a target whose `url` is empty (disabled).
    pub url: Option<WebhookUrl>,
    pub enabled: bool,
    /// Why it is disabled, for messages (empty when enabled).
    pub disabled_reason: &'static str,
    /// Discord only: the name shown for the message.
    pub username: Option<String>,
    /// Discord only: the avatar shown for the message.
    pub avatar_url: Option<String>,
    /// Webhook only: extra headers; values may hold tokens.
    pub headers: Vec<(String, Secret)>,
    /// Webhook only: POST (default), PUT or PATCH.
    pub method: &'static str,
    /// `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    /// Webhook only: most deliveries sent together as one JSON array (1:
    /// one request per delivery, the default).
    pub batch: usize,
    /// Discord and Slack: posted by a bot (`token` + `channel`) rather than
    /// through `url`.
    pub bot: Option<Bot>,
    /// Discord and Slack: one thread per conversation, or none.
    pub threads: Threads,
    /// Discord with threads: the Handlebars source of a new thread's name.
    pub thread_name: Option<String>,
    /// Several queued messages of one conversation go as one where they
    /// fit (threads only).
    pub coalesce: bool,
    /// Bot targets with threads: agents' replies in the threads go back to
    /// Crisp. `None`: off.
    pub replies: Option<Replies>,
}

/// How a target's threads are read for agents' replies.
#[derive(Debug, Clone)]
pub enum Replies {
    /// Slack's Events API, posted to `path` on the ingest listener and
    /// signed with `signing_secret`.
    Slack {
        signing_secret: Secret,
        path: String,
    },
    /// Discord's Gateway, with the target's bot token.
    Discord,
}

/// Crisp's REST API, for sending agents' replies as operator messages.
#[derive(Debug, Clone)]
pub struct CrispApi {
    /// The token's identifier and key (Basic auth).
    pub identifier: Secret,
    pub key: Secret,
    pub tier: CrispTier,
    /// `https://api.crisp.chat/v1` unless tests or a proxy say otherwise.
    pub api: url::Url,
}

/// The `X-Crisp-Tier` of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrispTier {
    Website,
    Plugin,
}

impl CrispTier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Website => "website",
            Self::Plugin => "plugin",
        }
    }
}

/// The name of the relay's own target that sends replies to Crisp.
pub const CRISP_TARGET: &str = "crisp";

/// A chat target posted to by a bot.
#[derive(Debug, Clone)]
pub struct Bot {
    /// Discord: sent as `Bot <token>`; Slack: `Bearer <token>`.
    pub token: Secret,
    /// The channel's id (Discord snowflake, Slack `C…`/`G…`).
    pub channel: String,
    /// The API's base URL (`https://discord.com/api/v10`,
    /// `https://slack.com/api`; tests and proxies point it elsewhere).
    pub api: url::Url,
}

/// The largest `batch` a webhook target may ask for.
pub const MAX_BATCH: u64 = 1000;

/// The ingest listener's settings that apply to each new connection or
/// request (a reload changes them).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub path: String,
    pub keys: Vec<HookKey>,
    /// Crisp Plugin Hooks' signing secret: requests signed with it
    /// (`X-Crisp-Signature`) are accepted without `?key=`. `None`: off.
    pub plugin_secret: Option<Secret>,
    pub max_body: u64,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub shutdown_timeout: Duration,
}

/// The admin listener's settings that a reload changes.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// The web console's token; `None`: the console is read-only (and only
    /// on a loopback listener).
    pub token: Option<crate::secret::AdminToken>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How long delivered rows are kept.
    pub retention: Duration,
}

/// The settings read only when the relay starts: the listeners and the
/// store. A reload compares this whole part of the old and new
/// configuration, and names every field that changed in a warning (they
/// take effect after a restart); everything else in [`Config`] applies at
/// once. A setting added here is compared without more code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Startup {
    #[serde(rename = "server.listen")]
    pub listen: SocketAddr,
    /// Concurrent ingest connections; more wait in the kernel's backlog.
    #[serde(rename = "server.max_connections")]
    pub max_connections: usize,
    /// `None`: no admin listener.
    #[serde(rename = "admin.listen")]
    pub admin_listen: Option<SocketAddr>,
    /// The SQLite file (when `store_url` is `None`).
    #[serde(rename = "store.path")]
    pub store_path: PathBuf,
    /// A PostgreSQL database instead of the SQLite file.
    #[serde(rename = "store.url")]
    pub store_url: Option<crate::secret::DatabaseUrl>,
    /// PostgreSQL only: how long a replica owns a target's worker without
    /// renewing its lease.
    #[serde(rename = "store.lease")]
    pub store_lease: std::time::Duration,
    /// How many accepted requests may wait for the next group commit before
    /// ingest answers 503.
    #[serde(rename = "store.queue_capacity")]
    pub queue_capacity: usize,
}

impl Startup {
    /// Where the store lives.
    pub fn store_location(&self) -> crate::store::Location {
        match &self.store_url {
            Some(url) => crate::store::Location::Postgres {
                url: url.clone(),
                lease: self.store_lease,
            },
            None => crate::store::Location::Sqlite(self.store_path.clone()),
        }
    }

    /// The names (as written in the file) of the settings that differ in
    /// `new`.
    pub fn changed(&self, new: &Startup) -> Vec<String> {
        match (serde_json::to_value(self), serde_json::to_value(new)) {
            (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) => old
                .into_iter()
                .filter(|(k, v)| new.get(k) != Some(v))
                .map(|(k, _)| k)
                .collect(),
            _ if self != new => vec!["start-up settings".to_owned()],
            _ => Vec::new(),
        }
    }
}

/// Where a route's template name was written, to report a missing template.
#[derive(Debug, Clone)]
struct TemplateRef {
    route: usize,
    line: u64,
    column: u64,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, as given (for messages).
    pub file: String,
    /// Read at start-up only (listeners, store).
    pub startup: Startup,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub templates_dir: PathBuf,
    pub targets: Vec<Target>,
    pub router: Router,
    /// Set when replies go back to Crisp (then `targets` ends with the
    /// [`CRISP_TARGET`]).
    pub crisp: Option<CrispApi>,
    template_refs: Vec<TemplateRef>,
    /// Valid but probably unintended settings (`check` prints them, `serve`
    /// logs them).
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Parses and validates `source` (the text of `file`). Relative paths are
    /// resolved against `base_dir` (the config file's directory).
    pub fn parse(
        source: &str,
        file: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
    ) -> Result<Config, ConfigErrors> {
        let raw: RawConfig =
            serde_saphyr::from_str(source).map_err(|e| ConfigErrors(vec![yaml_error(file, &e)]))?;
        let mut ctx = Ctx {
            file,
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let config = validate::validate(&mut ctx, raw, file, base_dir);
        match (config, ctx.errors.is_empty()) {
            (Some(c), true) => Ok(c),
            _ => Err(ConfigErrors(ctx.errors)),
        }
    }

    /// Only the start-up part of `source` (the listeners and the store),
    /// for commands that need no more: `deadletters` and `queue` need the
    /// store's path, `healthcheck` the admin address. The file must have
    /// the right shape, but variables used elsewhere (the hook key, webhook
    /// URLs) need not be set.
    pub fn parse_startup(
        source: &str,
        file: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
    ) -> Result<Startup, ConfigErrors> {
        let raw: RawConfig =
            serde_saphyr::from_str(source).map_err(|e| ConfigErrors(vec![yaml_error(file, &e)]))?;
        let mut ctx = Ctx {
            file,
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let startup = validate::validate_startup(&mut ctx, &raw, base_dir);
        match (startup, ctx.errors.is_empty()) {
            (Some(s), true) => Ok(s),
            _ => Err(ConfigErrors(ctx.errors)),
        }
    }

    /// Checks that each route's template resolves for each of its targets.
    /// `resolves(name, kind)` says whether a template exists; `known` lists
    /// the template names found, for hints.
    pub fn check_templates(
        &self,
        resolves: impl Fn(&str, TargetKind) -> Option<String>,
        missing_paths: impl Fn(&str, TargetKind) -> Vec<String>,
        known: &[String],
    ) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        for r in &self.template_refs {
            let route = &self.router.routes()[r.route];
            let Some(name) = &route.template else {
                continue;
            };
            for &t in &route.targets {
                let target = &self.targets[t];
                // Webhook and stdout targets fall back to the original event.
                if resolves(name, target.kind).is_some()
                    || matches!(target.kind, TargetKind::Webhook | TargetKind::Stdout)
                {
                    continue;
                }
                let hint = did_you_mean(
                    name,
                    known.iter().map(String::as_str).filter(|k| *k != name),
                )
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| {
                    Some(if known.is_empty() {
                        "create one of those files".to_owned()
                    } else {
                        format!(
                            "create one of those files, or use an existing template: {}",
                            known.join(", ")
                        )
                    })
                });
                errors.push(ConfigError {
                    file: self.file.clone(),
                    line: r.line,
                    column: r.column,
                    message: format!(
                        "route `{}`: no template `{name}` for target `{}` (kind {}); looked for {}",
                        route.name,
                        target.name,
                        target.kind,
                        missing_paths(name, target.kind).join(", ")
                    ),
                    hint,
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The targets that are enabled, for workers and start-up logs.
    pub fn enabled_targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.enabled)
    }

    pub fn target_index(&self, name: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.name == name)
    }
}
