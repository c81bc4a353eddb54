//! `relay.yaml` → a typed, validated [`Config`].
//!
//! Owns the file's shape (strict: unknown keys are errors), `${VAR}` and
//! `${VAR:-default}` interpolation, units (`500ms`, `1MiB`), and every check a
//! user's mistake can trip, each reported with file, line, column and a hint.
//! Matchers are compiled here (through [`crate::routing`]) so nothing
//! downstream re-checks. This module does no I/O: the caller reads the file and
//! supplies the environment; template files are checked afterwards by
//! [`Config::check_templates`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;
use thiserror::Error;

use crate::model::{
    MAX_ATTEMPTS, RateLimit, RetryPolicy, TargetKind, check_url, default_rate_limit, url_example,
};
use crate::routing::{Condition, FieldPath, Route, Router, Test};
use crate::secret::{HookKey, Secret, WebhookUrl};
use crate::suggest::did_you_mean;

/// One mistake in the configuration, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every mistake found in one pass, so a user fixes them all at once.
#[derive(Debug, Clone, Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A validated destination.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    /// `None` for `stdout`, and for a target whose `url` is empty (disabled).
    pub url: Option<WebhookUrl>,
    pub enabled: bool,
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
}

/// The largest `batch` a webhook target may ask for.
pub const MAX_BATCH: u64 = 1000;

/// The ingest listener's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub path: String,
    pub keys: Vec<HookKey>,
    pub max_body: u64,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None`: no admin listener.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// How long delivered rows are kept.
    pub retention: Duration,
    /// How many accepted requests may wait for the next group commit before
    /// ingest answers 503.
    pub queue_capacity: usize,
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
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub templates_dir: PathBuf,
    pub targets: Vec<Target>,
    pub router: Router,
    template_refs: Vec<TemplateRef>,
}

// ---------------------------------------------------------------------------
// Raw shape: what serde reads, with positions. Never used past validation.

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: S<RawServer>,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    store: Option<RawStore>,
    #[serde(default)]
    templates: Option<S<String>>,
    #[serde(default)]
    targets: BTreeMap<String, S<RawTarget>>,
    #[serde(default)]
    routes: Vec<S<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    listen: Option<S<String>>,
    #[serde(default)]
    path: Option<S<String>>,
    #[serde(default)]
    keys: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    max_body: Option<S<StringOrNumber>>,
    #[serde(default)]
    header_read_timeout: Option<S<String>>,
    #[serde(default)]
    body_read_timeout: Option<S<String>>,
    #[serde(default)]
    max_connections: Option<S<u64>>,
    #[serde(default)]
    shutdown_timeout: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    listen: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    path: Option<S<String>>,
    #[serde(default)]
    retention: Option<S<String>>,
    #[serde(default)]
    queue_capacity: Option<S<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: S<String>,
    #[serde(default)]
    url: Option<S<String>>,
    #[serde(default)]
    username: Option<S<String>>,
    #[serde(default)]
    avatar_url: Option<S<String>>,
    #[serde(default)]
    headers: Option<S<BTreeMap<String, S<String>>>>,
    #[serde(default)]
    method: Option<S<String>>,
    #[serde(default)]
    rate_limit: Option<S<RawRateLimit>>,
    #[serde(default)]
    retry: Option<S<RawRetry>>,
    #[serde(default)]
    timeout: Option<S<String>>,
    #[serde(default)]
    batch: Option<S<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests: S<u64>,
    per: S<String>,
    #[serde(default)]
    burst: Option<S<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default)]
    max_attempts: Option<S<u64>>,
    #[serde(default)]
    initial_backoff: Option<S<String>>,
    #[serde(default)]
    max_backoff: Option<S<String>>,
    #[serde(default)]
    max_age: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: S<String>,
    #[serde(default, rename = "match")]
    matcher: Option<S<RawMatch>>,
    to: S<Vec<S<String>>>,
    #[serde(default)]
    template: Option<S<String>>,
    #[serde(default, rename = "continue")]
    continue_matching: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    Number(u64),
    String(String),
}

/// A `match` mapping: field paths to matchers, plus `any:` alternatives.
struct RawMatch(Vec<(S<String>, RawMatchValue)>);

enum RawMatchValue {
    Any(S<Vec<S<RawMatch>>>),
    Test(S<Value>),
}

impl<'de> Deserialize<'de> for RawMatch {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMatch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of field paths to values, e.g. {event: \"message:send\", data.from: user}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMatch, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<S<String>>()? {
                    let value = if key.value == "any" {
                        RawMatchValue::Any(map.next_value()?)
                    } else {
                        RawMatchValue::Test(map.next_value()?)
                    };
                    out.push((key, value));
                }
                Ok(RawMatch(out))
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------
// Validation.

/// Reads environment variables; tests pass a map instead of the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

struct Ctx<'a> {
    file: &'a str,
    env: EnvLookup<'a>,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn err<T>(&mut self, at: &S<T>, message: impl Into<String>, hint: Option<String>) {
        self.err_at(at.referenced.line(), at.referenced.column(), message, hint);
    }

    fn err_at(&mut self, line: u64, column: u64, message: impl Into<String>, hint: Option<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            hint,
        });
    }

    /// Interpolates `${VAR}` / `${VAR:-default}` in a string value.
    fn interp(&mut self, s: &S<String>, what: &str) -> Option<String> {
        match interpolate(&s.value, self.env) {
            Ok(v) => Some(v),
            Err(InterpError::Unset(var)) => {
                self.err(
                    s,
                    format!("{what}: environment variable `{var}` is not set"),
                    Some(format!(
                        "export {var}=..., or give a default: `${{{var}:-default}}`"
                    )),
                );
                None
            }
            Err(InterpError::Malformed(why)) => {
                self.err(
                    s,
                    format!("{what}: {why}"),
                    Some("write `${VAR}` or `${VAR:-default}`; `$$` is a literal `$`".into()),
                );
                None
            }
        }
    }

    fn duration(&mut self, s: &Option<S<String>>, what: &str, default: Duration) -> Duration {
        let Some(s) = s else { return default };
        let Some(text) = self.interp(s, what) else {
            return default;
        };
        match parse_duration(&text) {
            Ok(d) => d,
            Err(e) => {
                self.err(
                    s,
                    format!("{what}: {e}"),
                    Some("durations look like `500ms`, `2s`, `5m`, `24h` or `7d`".into()),
                );
                default
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum InterpError {
    Unset(String),
    Malformed(String),
}

/// Expands `${VAR}` (must be set) and `${VAR:-default}` (default when unset
/// or empty); `$$` is a literal `$`. Values are inserted as they are: they are
/// never parsed as YAML, so a secret with quotes or `#` cannot change the file.
fn interpolate(s: &str, env: EnvLookup<'_>) -> Result<String, InterpError> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                return Err(InterpError::Malformed(format!("unclosed `${{` in `{s}`")));
            };
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(InterpError::Malformed(format!(
                    "`${{{inner}}}` is not a variable reference"
                )));
            }
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(InterpError::Unset(name.to_owned())),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `500ms`, `2s`, `5m`, `24h`, `7d` (a whole number and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("`{s}` has no unit")),
        other => return Err(format!("unknown duration unit `{other}` in `{s}`")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Parses `1MiB`, `512KiB`, `2MB`, `64KB`, `1GiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit `{other}` in `{s}`")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Turns a serde-saphyr error into our format, adding "did you mean" hints to
/// unknown fields and rewording the parser's terse type messages.
fn yaml_error(file: &str, err: &serde_saphyr::Error) -> ConfigError {
    let plain = err.without_snippet();
    let (line, column) = plain
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let mut message = plain.to_string();
    // The crate may append its own location; ours is in front already.
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    let hint = unknown_name_hint(&message);
    ConfigError {
        file: file.to_owned(),
        line,
        column,
        message: reword_yaml_message(message),
        hint,
    }
}

/// Says in a user's words what serde-saphyr says in a parser's.
fn reword_yaml_message(message: String) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or_default()
            .trim_start_matches(':')
            .trim();
        return if key.is_empty() {
            "a key appears twice in this mapping".into()
        } else {
            format!("key `{key}` appears twice in this mapping")
        };
    }
    match message.as_str() {
        "expected sequence start" => "expected a list here, e.g. `[a, b]`".into(),
        "expected mapping start" => {
            "expected a mapping here (`key: value` lines or `{key: value}`)".into()
        }
        "invalid boolean" => "expected true or false".into(),
        "invalid u8" | "invalid u16" | "invalid u32" | "invalid u64" | "invalid usize" => {
            "expected a whole number (0 or more)".into()
        }
        _ => message,
    }
}

/// From serde's "unknown field `x`, expected one of a, b" (serde-saphyr's
/// form; serde's own is "expected one of `a`, `b`" or "expected `a`"), a hint
/// naming the closest expected field.
fn unknown_name_hint(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (got, expected) = rest.split_once('`')?;
    let expected = expected.trim_start_matches(',').trim_start();
    let list = expected
        .strip_prefix("expected one of ")
        .or_else(|| expected.strip_prefix("expected "))
        .unwrap_or_default();
    let names: Vec<&str> = list
        .split(',')
        .map(|n| n.trim().trim_matches('`'))
        .filter(|n| !n.is_empty())
        .collect();
    match did_you_mean(got, names.iter().copied()) {
        Some(s) => Some(format!("did you mean `{s}`?")),
        None if !names.is_empty() => Some(format!("allowed here: {}", names.join(", "))),
        None => None,
    }
}

fn socket_addr(
    ctx: &mut Ctx,
    s: &Option<S<String>>,
    what: &str,
    default: &str,
) -> Option<SocketAddr> {
    let Some(s) = s else {
        return default.parse().ok();
    };
    let text = ctx.interp(s, what)?;
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            ctx.err(
                s,
                format!("{what}: `{text}` is not an address"),
                Some("write IP:PORT, e.g. `0.0.0.0:8080` or `[::]:8080`".into()),
            );
            None
        }
    }
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
        };
        let config = validate(&mut ctx, raw, file, base_dir);
        match (config, ctx.errors.is_empty()) {
            (Some(c), true) => Ok(c),
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

fn validate(ctx: &mut Ctx, raw: RawConfig, _file: &str, base_dir: &Path) -> Option<Config> {
    let server = validate_server(ctx, &raw.server);
    let admin_listen = match &raw.admin {
        Some(a) => match &a.listen {
            Some(l) if l.value.is_empty() => None,
            other => socket_addr(ctx, other, "admin.listen", "127.0.0.1:9090"),
        },
        None => "127.0.0.1:9090".parse().ok(),
    };
    let store = validate_store(ctx, raw.store.as_ref(), base_dir);
    let templates_dir = match &raw.templates {
        Some(t) => ctx
            .interp(t, "templates")
            .map(|p| base_dir.join(p))
            .unwrap_or_default(),
        None => base_dir.join("templates"),
    };

    let mut targets = Vec::new();
    for (name, t) in &raw.targets {
        if let Some(target) = validate_target(ctx, name, t) {
            targets.push(target);
        }
    }
    let names: Vec<&str> = raw.targets.keys().map(String::as_str).collect();

    let mut routes = Vec::new();
    let mut template_refs = Vec::new();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for r in &raw.routes {
        let route = &r.value;
        let name_line = route.name.referenced.line();
        if let Some(&first) = seen.get(route.name.value.as_str()) {
            ctx.err(
                &route.name,
                format!(
                    "route name `{}` is used twice (first on line {first})",
                    route.name.value
                ),
                Some("give each route its own name".into()),
            );
        } else {
            seen.insert(&route.name.value, name_line);
        }
        let conditions = match &route.matcher {
            Some(m) => compile_match(ctx, &route.name.value, &m.value),
            None => Vec::new(),
        };
        if route.to.value.is_empty() {
            ctx.err(
                &route.to,
                format!("route `{}` sends to no target", route.name.value),
                Some(format!(
                    "list targets in `to:`; defined targets: {}",
                    names.join(", ")
                )),
            );
        }
        let mut route_targets = Vec::new();
        for to in &route.to.value {
            match targets.iter().position(|t: &Target| t.name == to.value) {
                Some(i) => route_targets.push(i),
                None if raw.targets.contains_key(&to.value) => {} // invalid target, already reported
                None => {
                    let hint = did_you_mean(&to.value, names.iter().copied())
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| format!("defined targets: {}", names.join(", ")));
                    ctx.err(
                        to,
                        format!(
                            "route `{}` names unknown target `{}`",
                            route.name.value, to.value
                        ),
                        Some(hint),
                    );
                }
            }
        }
        if let Some(t) = &route.template {
            if t.value.is_empty() || t.value.contains(['/', '\\']) || t.value.contains("..") {
                ctx.err(t, format!("route `{}`: `{}` is not a template name", route.name.value, t.value), Some("write a bare name such as `visitor_message`; files are looked up in the templates directory".into()));
            }
            template_refs.push(TemplateRef {
                route: routes.len(),
                line: t.referenced.line(),
                column: t.referenced.column(),
            });
        } else {
            for &i in &route_targets {
                let target: &Target = &targets[i];
                if matches!(target.kind, TargetKind::Discord | TargetKind::Slack) {
                    ctx.err(
                        r,
                        format!(
                            "route `{}` sends to {} target `{}` but names no template",
                            route.name.value, target.kind, target.name
                        ),
                        Some("add `template: NAME` (e.g. `template: visitor_message`)".into()),
                    );
                }
            }
        }
        routes.push(Route {
            name: route.name.value.clone(),
            conditions,
            targets: route_targets,
            template: route.template.as_ref().map(|t| t.value.clone()),
            continue_matching: route.continue_matching,
        });
    }

    let enabled = targets.iter().map(|t| t.enabled).collect();
    Some(Config {
        file: ctx.file.to_owned(),
        server: server?,
        admin: AdminConfig {
            listen: admin_listen,
        },
        store: store?,
        templates_dir,
        targets,
        router: Router::new(routes, enabled),
        template_refs,
    })
}

fn validate_server(ctx: &mut Ctx, raw: &S<RawServer>) -> Option<ServerConfig> {
    let s = &raw.value;
    let listen = socket_addr(ctx, &s.listen, "server.listen", "0.0.0.0:8080");
    let path = match &s.path {
        Some(p) => {
            let v = ctx.interp(p, "server.path")?;
            if !v.starts_with('/') || v.contains(['?', '#']) {
                ctx.err(
                    p,
                    format!("server.path `{v}` must be a path starting with `/`"),
                    Some("e.g. `/crisp/hooks`".into()),
                );
            }
            v
        }
        None => "/crisp/hooks".to_owned(),
    };
    let mut keys = Vec::new();
    match &s.keys {
        None => ctx.err(raw, "server.keys is missing: the relay refuses to run without a hook key", Some("add `keys: [\"${CRISP_HOOK_KEY}\"]` and set CRISP_HOOK_KEY to a long random string".into())),
        Some(list) => {
            for k in &list.value {
                if let Some(v) = ctx.interp(k, "server.keys") {
                    if v.is_empty() {
                        ctx.err(k, "server.keys: a key is empty", Some("set the variable to a long random string, e.g. `openssl rand -hex 24`".into()));
                    } else {
                        keys.push(HookKey::new(v));
                    }
                }
            }
            if list.value.is_empty() {
                ctx.err(list, "server.keys is empty: the relay refuses to run without a hook key", Some("add at least one key, e.g. `keys: [\"${CRISP_HOOK_KEY}\"]`".into()));
            }
        }
    }
    let max_body = match &s.max_body {
        None => 1 << 20,
        Some(sp) => {
            let parsed = match &sp.value {
                StringOrNumber::Number(n) => Ok(*n),
                StringOrNumber::String(t) => parse_size(t),
            };
            match parsed {
                Ok(0) => {
                    ctx.err(
                        sp,
                        "server.max_body cannot be 0",
                        Some("e.g. `1MiB`".into()),
                    );
                    0
                }
                Ok(n) => n,
                Err(e) => {
                    ctx.err(
                        sp,
                        format!("server.max_body: {e}"),
                        Some("sizes look like `1MiB`, `512KiB` or a byte count".into()),
                    );
                    0
                }
            }
        }
    };
    let max_connections = match &s.max_connections {
        Some(n) if n.value == 0 => {
            ctx.err(n, "server.max_connections cannot be 0", None);
            1
        }
        Some(n) => n.value as usize,
        None => 1024,
    };
    Some(ServerConfig {
        listen: listen?,
        path,
        keys,
        max_body,
        header_read_timeout: ctx.duration(
            &s.header_read_timeout,
            "server.header_read_timeout",
            Duration::from_secs(5),
        ),
        body_read_timeout: ctx.duration(
            &s.body_read_timeout,
            "server.body_read_timeout",
            Duration::from_secs(10),
        ),
        max_connections,
        shutdown_timeout: ctx.duration(
            &s.shutdown_timeout,
            "server.shutdown_timeout",
            Duration::from_secs(10),
        ),
    })
}

fn validate_store(ctx: &mut Ctx, raw: Option<&RawStore>, base_dir: &Path) -> Option<StoreConfig> {
    let path = match raw.and_then(|r| r.path.as_ref()) {
        Some(p) => base_dir.join(ctx.interp(p, "store.path")?),
        None => base_dir.join("data/relay.db"),
    };
    let retention = ctx.duration(
        &raw.and_then(|r| r.retention.clone()),
        "store.retention",
        Duration::from_secs(7 * 86_400),
    );
    let queue_capacity = match raw.and_then(|r| r.queue_capacity.as_ref()) {
        Some(n) if n.value == 0 => {
            ctx.err(n, "store.queue_capacity cannot be 0", None);
            1
        }
        Some(n) => n.value as usize,
        None => 4096,
    };
    Some(StoreConfig {
        path,
        retention,
        queue_capacity,
    })
}

fn validate_target(ctx: &mut Ctx, name: &str, raw: &S<RawTarget>) -> Option<Target> {
    let t = &raw.value;
    let kinds: Vec<&str> = TargetKind::ALL.iter().map(|k| k.as_str()).collect();
    let Some(kind) = TargetKind::parse(&t.kind.value) else {
        let hint = did_you_mean(&t.kind.value, kinds.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("kinds are: {}", kinds.join(", ")));
        ctx.err(
            &t.kind,
            format!("target `{name}`: unknown kind `{}`", t.kind.value),
            Some(hint),
        );
        return None;
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        ctx.err(
            raw,
            format!("target name `{name}` may only use letters, digits, `-` and `_`"),
            None,
        );
    }
    let only = |ctx: &mut Ctx, field: &str, present: bool, allowed: &[TargetKind]| {
        if present && !allowed.contains(&kind) {
            let list: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
            ctx.err(
                raw,
                format!(
                    "target `{name}` (kind {kind}): `{field}` is only for {} targets",
                    list.join(", ")
                ),
                Some(format!("remove `{field}`")),
            );
        }
    };
    only(
        ctx,
        "url",
        t.url.is_some(),
        &[TargetKind::Discord, TargetKind::Slack, TargetKind::Webhook],
    );
    only(
        ctx,
        "username",
        t.username.is_some(),
        &[TargetKind::Discord],
    );
    only(
        ctx,
        "avatar_url",
        t.avatar_url.is_some(),
        &[TargetKind::Discord],
    );
    only(ctx, "headers", t.headers.is_some(), &[TargetKind::Webhook]);
    only(ctx, "method", t.method.is_some(), &[TargetKind::Webhook]);
    only(ctx, "batch", t.batch.is_some(), &[TargetKind::Webhook]);

    let mut enabled = true;
    let url = match (&t.url, kind) {
        (_, TargetKind::Stdout) => None,
        (None, _) => {
            ctx.err(
                raw,
                format!("target `{name}` (kind {kind}) has no `url`"),
                Some("add `url: \"${...}\"`; an empty url disables the target".into()),
            );
            return None;
        }
        (Some(u), _) => {
            let text = ctx.interp(u, &format!("target `{name}` url"))?;
            if text.trim().is_empty() {
                enabled = false;
                None
            } else {
                match check_url(kind, &text) {
                    Ok(c) => Some(WebhookUrl::new(c.url, c.public_segments)),
                    Err(why) => {
                        // Never echo the URL: it holds the token.
                        ctx.err(
                            u,
                            format!("target `{name}`: invalid {kind} url: {why}"),
                            Some(url_example(kind).into()),
                        );
                        return None;
                    }
                }
            }
        }
    };
    let username = match &t.username {
        Some(u) => Some(ctx.interp(u, &format!("target `{name}` username"))?),
        None => None,
    };
    let avatar_url = match &t.avatar_url {
        Some(u) => Some(ctx.interp(u, &format!("target `{name}` avatar_url"))?),
        None => None,
    };
    let mut headers = Vec::new();
    if let Some(h) = &t.headers {
        for (k, v) in &h.value {
            if http_header_name_ok(k) {
                if let Some(val) = ctx.interp(v, &format!("target `{name}` header `{k}`")) {
                    if val.contains(['\r', '\n']) {
                        ctx.err(
                            v,
                            format!("target `{name}` header `{k}`: value contains a line break"),
                            None,
                        );
                    }
                    headers.push((k.clone(), Secret::new(val)));
                }
            } else {
                ctx.err(
                    h,
                    format!("target `{name}`: `{k}` is not a valid header name"),
                    Some("header names use letters, digits and `-`".into()),
                );
            }
        }
    }
    let method = match &t.method {
        None => "POST",
        Some(m) => match m.value.to_ascii_uppercase().as_str() {
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            _ => {
                ctx.err(
                    m,
                    format!("target `{name}`: method `{}` is not supported", m.value),
                    Some("use POST, PUT or PATCH".into()),
                );
                "POST"
            }
        },
    };
    let rate_limit = match &t.rate_limit {
        Some(rl) => {
            let r = &rl.value;
            let per = ctx.duration(
                &Some(r.per.clone()),
                &format!("target `{name}` rate_limit.per"),
                Duration::from_secs(1),
            );
            if r.requests.value == 0 || r.requests.value > u64::from(u32::MAX) {
                ctx.err(
                    &r.requests,
                    format!("target `{name}`: rate_limit.requests must be at least 1"),
                    Some("remove rate_limit for no limit".into()),
                );
            }
            if per.is_zero() {
                ctx.err(
                    &r.per,
                    format!("target `{name}`: rate_limit.per must be longer than 0"),
                    None,
                );
            }
            let requests = r.requests.value.clamp(1, u64::from(u32::MAX)) as u32;
            let burst = r
                .burst
                .as_ref()
                .map_or(requests, |b| b.value.clamp(1, u64::from(u32::MAX)) as u32);
            Some(RateLimit {
                requests,
                per,
                burst,
            })
        }
        None => default_rate_limit(kind),
    };
    let mut retry = RetryPolicy::default();
    if let Some(r) = &t.retry {
        let r = &r.value;
        if let Some(n) = &r.max_attempts {
            if n.value == 0 {
                ctx.err(
                    n,
                    format!("target `{name}`: retry.max_attempts must be at least 1"),
                    None,
                );
            }
            retry.max_attempts = n.value.clamp(1, u64::from(MAX_ATTEMPTS)) as u32;
        }
        retry.initial_backoff = ctx.duration(
            &r.initial_backoff,
            &format!("target `{name}` retry.initial_backoff"),
            retry.initial_backoff,
        );
        retry.max_backoff = ctx.duration(
            &r.max_backoff,
            &format!("target `{name}` retry.max_backoff"),
            retry.max_backoff,
        );
        retry.max_age = ctx.duration(
            &r.max_age,
            &format!("target `{name}` retry.max_age"),
            retry.max_age,
        );
        if retry.max_backoff < retry.initial_backoff {
            ctx.err(
                t.retry.as_ref()?,
                format!("target `{name}`: retry.max_backoff is shorter than retry.initial_backoff"),
                None,
            );
        }
    }
    let timeout = ctx.duration(
        &t.timeout,
        &format!("target `{name}` timeout"),
        Duration::from_secs(10),
    );
    if timeout.is_zero() {
        ctx.err(
            t.timeout.as_ref()?,
            format!("target `{name}`: timeout must be longer than 0"),
            None,
        );
    }
    let batch = match &t.batch {
        None => 1,
        Some(b) if (1..=MAX_BATCH).contains(&b.value) => b.value as usize,
        Some(b) => {
            ctx.err(
                b,
                format!(
                    "target `{name}`: batch must be from 1 to {MAX_BATCH}, not {}",
                    b.value
                ),
                Some("1 sends one request per delivery; N sends up to N as one JSON array".into()),
            );
            1
        }
    };
    Some(Target {
        name: name.to_owned(),
        kind,
        url,
        enabled,
        username,
        avatar_url,
        headers,
        method,
        rate_limit,
        retry,
        timeout,
        batch,
    })
}

fn http_header_name_ok(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn compile_match(ctx: &mut Ctx, route: &str, m: &RawMatch) -> Vec<Condition> {
    let mut out = Vec::new();
    for (key, value) in &m.0 {
        match value {
            RawMatchValue::Any(groups) => {
                if groups.value.is_empty() {
                    ctx.err(
                        groups,
                        format!("route `{route}`: `any` needs at least one alternative"),
                        None,
                    );
                }
                let compiled = groups
                    .value
                    .iter()
                    .map(|g| compile_match(ctx, route, &g.value))
                    .collect();
                out.push(Condition::Any(compiled));
            }
            RawMatchValue::Test(v) => {
                let path = match FieldPath::parse(&key.value) {
                    Ok(p) => p,
                    Err(e) => {
                        ctx.err(key, format!("route `{route}`: {e}"), None);
                        continue;
                    }
                };
                let root = key.value.split('.').next().unwrap_or_default();
                if !["event", "website_id", "data", "timestamp"].contains(&root) {
                    let hint = did_you_mean(root, ["event", "website_id", "data", "timestamp", "any"])
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| "paths start at the envelope: `event`, `website_id`, `timestamp` or `data.<field>` (e.g. `data.from`)".into());
                    ctx.err(
                        key,
                        format!(
                            "route `{route}`: field `{}` is not in a Crisp event",
                            key.value
                        ),
                        Some(hint),
                    );
                    continue;
                }
                match Test::compile(&v.value) {
                    Ok(test) => out.push(Condition::Field { path, test }),
                    Err(e) => ctx.err(
                        v,
                        format!("route `{route}`, field `{}`: {e}", key.value),
                        None,
                    ),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_table() {
        let env = |k: &str| match k {
            "SET" => Some("v\"#: x".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cases: &[(&str, Result<&str, InterpError>)] = &[
            ("plain", Ok("plain")),
            ("${SET}", Ok("v\"#: x")),
            ("a-${SET}-b", Ok("a-v\"#: x-b")),
            ("${UNSET:-def}", Ok("def")),
            ("${EMPTY:-def}", Ok("def")),
            ("${EMPTY}", Ok("")),
            ("${UNSET:-}", Ok("")),
            ("$$", Ok("$")),
            ("$${SET}", Ok("${SET}")),
            ("cost $5", Ok("cost $5")),
            ("${UNSET}", Err(InterpError::Unset("UNSET".into()))),
            (
                "${SET",
                Err(InterpError::Malformed("unclosed `${` in `${SET`".into())),
            ),
        ];
        for (input, want) in cases {
            let got = interpolate(input, &env);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{input}"),
                Err(w) => assert_eq!(got.as_ref().unwrap_err(), w, "{input}"),
            }
        }
    }

    #[test]
    fn unknown_field_hints() {
        let cases = [
            (
                "unknown field `lisen`, expected one of listen, path, keys",
                Some("did you mean `listen`?"),
            ),
            (
                "unknown field `lisen`, expected one of `listen`, `path`",
                Some("did you mean `listen`?"),
            ),
            (
                "unknown field `zzzzzz`, expected `kind`",
                Some("allowed here: kind"),
            ),
            ("unknown field `x`, there are no fields", None),
            ("invalid boolean", None),
        ];
        for (message, want) in cases {
            assert_eq!(unknown_name_hint(message).as_deref(), want, "{message}");
        }
        assert_eq!(
            reword_yaml_message(
                "duplicate mapping key: path, set DuplicateKeyPolicy in Options if acceptable"
                    .into()
            ),
            "key `path` appears twice in this mapping"
        );
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1XB").is_err());
    }
}
