//! Loading a relay: the config file, the templates directory, and the
//! checks that join them. Also the one place that turns an event into its
//! deliveries and a delivery into its request, so `serve`, `check`, `render`
//! (and later the workers) all share one path.
//!
//! This is the only module besides the store and the server that touches the
//! file system; it must not do network I/O.

use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

use crate::config::{Config, ConfigErrors, Target};
use crate::event::Event;
use crate::render::{RenderError, Renderer, TemplateError, TemplateSource};
use crate::routing::Decision;
use crate::store::{NewDelivery, PendingGroup, TemplateFilter};
use crate::targets::{self, BuildError, OutgoingRequest};

/// Why a relay could not be loaded. Each says what and where.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error(
        "cannot read config file {path}: {source}\n  hint: pass the file with -c/--config, or create relay.yaml (see README)"
    )]
    ReadConfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(ConfigErrors),
    #[error(
        "cannot read templates directory {path}: {source}\n  hint: set `templates:` in the config to the directory holding your .hbs files"
    )]
    ReadTemplates {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Templates(Vec<TemplateError>),
}

/// A loaded, fully validated relay: configuration plus compiled templates.
#[derive(Debug)]
pub struct Relay {
    pub config: Config,
    pub renderer: Renderer,
    /// The config file it was loaded from (reload reads it again).
    pub path: PathBuf,
}

/// Why one delivery cannot be turned into a request.
#[derive(Debug, Error)]
pub enum PrepareError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl Relay {
    /// Reads `path` and its templates, with variables from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        Self::load_with_env(path, &|k| std::env::var(k).ok())
    }

    pub fn load_with_env(
        path: &Path,
        env: crate::config::EnvLookup<'_>,
    ) -> Result<Self, LoadError> {
        let (text, base) = read_config(path)?;
        let mut config = Config::parse(&text, &path.display().to_string(), &base, env)
            .map_err(LoadError::Config)?;
        let sources = read_templates(&config.templates_dir)?;
        let mut renderer = Renderer::new(&sources).map_err(LoadError::Templates)?;
        let thread_names: Vec<(String, String)> = config
            .targets
            .iter()
            .filter_map(|t| t.thread_name.clone().map(|n| (t.name.clone(), n)))
            .collect();
        renderer
            .add_thread_names(&thread_names)
            .map_err(LoadError::Templates)?;
        for (file, why) in renderer.ignored() {
            config.warnings.push(crate::config::ConfigError {
                file: config.templates_dir.join(file).display().to_string(),
                line: 1,
                column: 1,
                message: format!("template file ignored: {why}"),
                hint: Some("name templates NAME.hbs, NAME.<kind>.hbs or NAME.<kind>.json.hbs, with <kind> one of discord, slack, webhook, stdout; _NAME.hbs is a partial".into()),
            });
        }
        let names = renderer.names();
        let dir = config.templates_dir.clone();
        config
            .check_templates(
                |name, kind| renderer.resolve(name, kind).map(|r| r.file),
                |name, kind| {
                    crate::render::candidates(name, kind)
                        .into_iter()
                        .map(|(key, _)| dir.join(format!("{key}.hbs")).display().to_string())
                        .collect()
                },
                &names,
            )
            .map_err(LoadError::Config)?;
        Ok(Self {
            config,
            renderer,
            path: path.to_owned(),
        })
    }

    /// The deliveries `event` gets (enabled targets only), in route order.
    pub fn plan(&self, event: &Event) -> Vec<NewDelivery> {
        self.config
            .router
            .route(event.value())
            .into_iter()
            .map(|d| self.new_delivery(d))
            .collect()
    }

    fn new_delivery(&self, d: Decision) -> NewDelivery {
        let route = &self.config.router.routes()[d.route];
        NewDelivery {
            route: route.name.clone(),
            target: self.config.targets[d.target].name.clone(),
            template: route.template.clone(),
        }
    }

    /// Renders and builds the request for one decision.
    pub fn prepare(&self, d: Decision, event: &Value) -> Result<OutgoingRequest, PrepareError> {
        let route = &self.config.router.routes()[d.route];
        let target = &self.config.targets[d.target];
        self.prepare_for(target, route.template.as_deref(), event)
    }

    /// Renders and builds the request for `target` with `template`.
    pub fn prepare_for(
        &self,
        target: &Target,
        template: Option<&str>,
        event: &Value,
    ) -> Result<OutgoingRequest, PrepareError> {
        let rendered = self.renderer.render(template, target.kind, event)?;
        Ok(targets::build(target, rendered, event)?)
    }
}

/// The text of the config file at `path` and the directory its relative
/// paths start from.
fn read_config(path: &Path) -> Result<(String, PathBuf), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::ReadConfig {
        path: path.display().to_string(),
        source,
    })?;
    Ok((
        text,
        path.parent().map(Path::to_path_buf).unwrap_or_default(),
    ))
}

/// Only the start-up part of the config file at `path` (listeners, store):
/// see [`Config::parse_startup`].
pub fn load_startup(
    path: &Path,
    env: crate::config::EnvLookup<'_>,
) -> Result<crate::config::Startup, LoadError> {
    let (text, base) = read_config(path)?;
    Config::parse_startup(&text, &path.display().to_string(), &base, env).map_err(LoadError::Config)
}

/// Queued deliveries that a configuration cannot send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub target: String,
    pub template: Option<String>,
    pub count: i64,
    /// Why, in a user's words.
    pub why: String,
}

impl Relay {
    /// Which queued rows the worker of `target` can render: for a kind that
    /// needs a template, those naming one that resolves for it.
    pub fn template_filter(&self, target: &Target) -> TemplateFilter {
        if !target.kind.needs_template() {
            return TemplateFilter::Any;
        }
        TemplateFilter::OneOf(
            self.renderer
                .names()
                .into_iter()
                .filter(|n| self.renderer.resolve(n, target.kind).is_some())
                .collect(),
        )
    }

    /// The pending groups this configuration cannot send: their target is
    /// no longer configured, or their template does not exist for it. They
    /// stay queued (a worker skips them) and resume when the name comes
    /// back; `crisp-relay queue` moves or purges them.
    pub fn orphans(&self, groups: &[PendingGroup]) -> Vec<Orphan> {
        groups
            .iter()
            .filter_map(|g| {
                let why = match self.config.target_index(&g.target) {
                    None => "no target of this name in the configuration".to_owned(),
                    Some(i) => {
                        let target = &self.config.targets[i];
                        let sendable = match self.template_filter(target) {
                            TemplateFilter::Any => true,
                            TemplateFilter::OneOf(names) => {
                                g.template.as_ref().is_some_and(|t| names.contains(t))
                            }
                        };
                        if sendable {
                            return None;
                        }
                        match &g.template {
                            Some(t) => format!("no template `{t}` for {} targets", target.kind),
                            None => format!("{} targets need a template", target.kind),
                        }
                    }
                };
                Some(Orphan {
                    target: g.target.clone(),
                    template: g.template.clone(),
                    count: g.count,
                    why,
                })
            })
            .collect()
    }
}

/// A request a delivery would make, labelled for `render` and `check`.
#[derive(Debug)]
pub struct Preview {
    /// `None` for a plain delivery; with threads, `"create"` (the first
    /// message of a conversation) or `"reply"` (a later one); for a bot
    /// without threads, `"channel"`.
    pub thread: Option<&'static str>,
    pub request: OutgoingRequest,
}

/// The thread id shown in previews of a later message.
pub const PREVIEW_THREAD: &str = "THREAD_ID";

impl Relay {
    /// The request(s) `target` gets for `event` with `template`: one, or
    /// for a threaded target the first message of a conversation and a
    /// later one. A Discord bot's channel is assumed to be a forum (in a
    /// text channel the first message is posted, then a thread started
    /// from it).
    pub fn previews(
        &self,
        target: &Target,
        template: Option<&str>,
        event: &Value,
    ) -> Result<Vec<Preview>, PrepareError> {
        use crate::model::Threads;
        use crate::targets::chat::{self, ChannelKind, Step};
        let req = self.prepare_for(target, template, event)?;
        let threaded = target.threads == Threads::PerConversation
            && event
                .pointer("/data/session_id")
                .is_some_and(|s| s.is_string());
        // A disabled target has no URL or token to address: its body alone.
        if (target.bot.is_none() && !threaded) || !target.enabled {
            return Ok(vec![Preview {
                thread: None,
                request: req,
            }]);
        }
        let body = match req.body {
            crate::targets::Body::Json(v) => v,
            crate::targets::Body::Text(t) => Value::String(t),
        };
        let steps = if threaded {
            let name = chat::thread_name(
                &self
                    .renderer
                    .render_thread_name(&target.name, event)
                    .unwrap_or_default(),
            );
            vec![
                ("create", Step::Create { name }),
                (
                    "reply",
                    Step::Reply {
                        thread: PREVIEW_THREAD.into(),
                    },
                ),
            ]
        } else {
            vec![("channel", Step::Channel)]
        };
        steps
            .into_iter()
            .map(|(label, step)| {
                chat::request(target, body.clone(), &step, Some(ChannelKind::Forum))
                    .map(|request| Preview {
                        thread: Some(label),
                        request,
                    })
                    .map_err(|e| PrepareError::Build(BuildError::Invalid(e)))
            })
            .collect()
    }
}

/// Reads every `*.hbs` file in `dir` (not recursive), sorted by name.
fn read_templates(dir: &Path) -> Result<Vec<TemplateSource>, LoadError> {
    let err = |source| LoadError::ReadTemplates {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hbs") && p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(err)?;
            let file = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(TemplateSource { file, text })
        })
        .collect()
}
