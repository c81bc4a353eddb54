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
use crate::store::NewDelivery;
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
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::ReadConfig {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config = Config::parse(&text, &path.display().to_string(), &base, env)
            .map_err(LoadError::Config)?;
        let sources = read_templates(&config.templates_dir)?;
        let renderer = Renderer::new(&sources).map_err(LoadError::Templates)?;
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
