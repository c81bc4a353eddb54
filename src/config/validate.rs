//! Raw shape → validated [`Config`]: the checks of every section but the
//! targets (in `target`), each mistake recorded with its position in the
//! [`Ctx`], and the compilation of route matchers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::ctx::Ctx;
use super::raw::*;
use super::target::validate_target;
use super::units::parse_size;
use super::*;
use crate::routing::{Condition, FieldPath, Route, Router, Test};
use crate::secret::{AdminToken, HookKey, Secret};
use crate::suggest::did_you_mean;

pub(super) fn socket_addr(
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

pub(super) fn validate(
    ctx: &mut Ctx,
    raw: RawConfig,
    _file: &str,
    base_dir: &Path,
) -> Option<Config> {
    let startup = validate_startup(ctx, &raw, base_dir);
    let server = validate_server(ctx, &raw.server);
    let admin = validate_admin(ctx, raw.admin.as_ref());
    let store = validate_store(ctx, raw.store.as_ref());
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

    warn_double_sends(ctx, &raw.routes, &routes, &targets);
    let crisp = super::replies::validate(ctx, &raw, &mut targets);
    let enabled = targets.iter().map(|t| t.enabled).collect();
    let warnings = std::mem::take(&mut ctx.warnings);
    Some(Config {
        file: ctx.file.to_owned(),
        startup: startup?,
        server: server?,
        admin,
        store,
        templates_dir,
        targets,
        router: Router::new(routes, enabled),
        crisp,
        template_refs,
        warnings,
    })
}

/// Two routes that can both match one event and name the same target send
/// it there twice (the first must say `continue: true` for the second to be
/// reached), and so does a target listed twice in one `to:`. Warned, not
/// refused: it may be meant.
fn warn_double_sends(ctx: &mut Ctx, raw: &[S<RawRoute>], routes: &[Route], targets: &[Target]) {
    let entry = |j: usize, t: usize| {
        raw[j]
            .value
            .to
            .value
            .iter()
            .rfind(|to| to.value == targets[t].name)
    };
    for (j, later) in routes.iter().enumerate() {
        for (k, &t) in later.targets.iter().enumerate() {
            if later.targets[..k].contains(&t)
                && let Some(at) = entry(j, t)
            {
                ctx.warn(
                    at,
                    format!(
                        "route `{}` lists target `{}` twice: it receives each event twice",
                        later.name, targets[t].name
                    ),
                    Some("list it once".into()),
                );
            }
        }
        for (i, earlier) in routes[..j].iter().enumerate() {
            // The later route is reached after the earlier matched only if
            // the earlier says `continue`, and no match-all route between
            // them stops the evaluation.
            if !earlier.continue_matching
                || routes[i + 1..j]
                    .iter()
                    .any(|r| !r.continue_matching && r.conditions.is_empty())
            {
                continue;
            }
            let mut shared: Vec<usize> = later
                .targets
                .iter()
                .copied()
                .filter(|t| earlier.targets.contains(t))
                .collect();
            shared.dedup();
            if shared.is_empty() {
                continue;
            }
            let events = match (earlier.event_names(), later.event_names()) {
                (Some(a), Some(b)) => {
                    let both: Vec<&str> = a.into_iter().filter(|n| b.contains(n)).collect();
                    if both.is_empty() {
                        continue;
                    }
                    format!("`{}` events", both.join("`, `"))
                }
                _ => "the same events".to_owned(),
            };
            for t in shared {
                if let Some(at) = entry(j, t) {
                    ctx.warn(
                        at,
                        format!(
                            "routes `{}` (continue: true) and `{}` can both send {events} to target `{}`: it would receive each such event twice",
                            earlier.name, later.name, targets[t].name
                        ),
                        Some("remove the target from one of the routes, or make their `match` exclusive".into()),
                    );
                }
            }
        }
    }
}

/// The settings read only at start-up (see [`Startup`]).
pub(super) fn validate_startup(ctx: &mut Ctx, raw: &RawConfig, base_dir: &Path) -> Option<Startup> {
    let s = &raw.server.value;
    let listen = socket_addr(ctx, &s.listen, "server.listen", "0.0.0.0:8080");
    let max_connections = match &s.max_connections {
        Some(n) if n.value == 0 => {
            ctx.err(n, "server.max_connections cannot be 0", None);
            1
        }
        Some(n) => n.value as usize,
        None => 1024,
    };
    let admin_listen = match &raw.admin {
        Some(a) => match &a.listen {
            Some(l) if l.value.is_empty() => None,
            other => socket_addr(ctx, other, "admin.listen", "127.0.0.1:9090"),
        },
        None => "127.0.0.1:9090".parse().ok(),
    };
    let store = raw.store.as_ref();
    let store_path = match store.and_then(|r| r.path.as_ref()) {
        Some(p) => base_dir.join(ctx.interp(p, "store.path")?),
        None => base_dir.join("data/relay.db"),
    };
    let store_url = match store.and_then(|r| r.url.as_ref()) {
        Some(u) => {
            if let Some(p) = store.and_then(|r| r.path.as_ref()) {
                ctx.err(
                    p,
                    "store.path and store.url are both set; the store is either a SQLite file or a PostgreSQL database",
                    Some("remove store.path to use PostgreSQL, or store.url to use SQLite".into()),
                );
            }
            let text = ctx.interp(u, "store.url")?;
            match crate::secret::DatabaseUrl::parse(&text) {
                Ok(url) => Some(url),
                Err(why) => {
                    ctx.err(
                        u,
                        format!("store.url {why}"),
                        Some("e.g. `url: \"${DATABASE_URL}\"` with DATABASE_URL=postgres://relay:PASSWORD@db:5432/relay".into()),
                    );
                    None
                }
            }
        }
        None => None,
    };
    let lease_raw = store.and_then(|r| r.lease.clone());
    if let (Some(l), None) = (&lease_raw, &store_url) {
        ctx.err(
            l,
            "store.lease applies to a PostgreSQL store (store.url) only",
            Some("remove it, or set store.url".into()),
        );
    }
    let store_lease = ctx.duration(&lease_raw, "store.lease", Duration::from_secs(10));
    if let Some(l) = lease_raw
        .as_ref()
        .filter(|_| store_lease < Duration::from_secs(2) || store_lease > Duration::from_secs(600))
    {
        ctx.err(
            l,
            "store.lease must be between 2s and 10m",
            Some("it is how long a target waits for another replica after one dies; 10s is the default".into()),
        );
    }
    let queue_capacity = match store.and_then(|r| r.queue_capacity.as_ref()) {
        Some(n) if n.value == 0 => {
            ctx.err(n, "store.queue_capacity cannot be 0", None);
            1
        }
        Some(n) => n.value as usize,
        None => 4096,
    };
    Some(Startup {
        listen: listen?,
        max_connections,
        admin_listen,
        store_path,
        store_url,
        store_lease,
        queue_capacity,
    })
}

pub(super) fn validate_server(ctx: &mut Ctx, raw: &S<RawServer>) -> Option<ServerConfig> {
    let s = &raw.value;
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
    let plugin_secret = s
        .plugin_secret
        .as_ref()
        .and_then(|v| ctx.interp(v, "server.plugin_secret"))
        .filter(|v| !v.is_empty())
        .map(Secret::new);
    Some(ServerConfig {
        path,
        keys,
        plugin_secret,
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
        shutdown_timeout: ctx.duration(
            &s.shutdown_timeout,
            "server.shutdown_timeout",
            Duration::from_secs(10),
        ),
    })
}

/// `admin.token`: empty (or absent) leaves the console read-only; else at
/// least [`AdminToken::MIN_LEN`] characters. Not a start-up setting (a
/// reload changes it), and not read by [`validate_startup`], so commands
/// that need only the store's path work without it set.
pub(super) fn validate_admin(ctx: &mut Ctx, raw: Option<&RawAdmin>) -> AdminConfig {
    let Some(t) = raw.and_then(|a| a.token.as_ref()) else {
        return AdminConfig::default();
    };
    let Some(value) = ctx.interp(t, "admin.token") else {
        return AdminConfig::default();
    };
    if value.is_empty() {
        return AdminConfig::default();
    }
    let chars = value.chars().count();
    if chars < AdminToken::MIN_LEN {
        // Never repeat the value: it is a secret, even a bad one.
        ctx.err(
            t,
            format!(
                "admin.token is {chars} characters long; the console needs at least {}",
                AdminToken::MIN_LEN
            ),
            Some("generate one with `openssl rand -hex 32` and set it in the variable the file names, e.g. `token: \"${CRISP_RELAY_ADMIN_TOKEN}\"`".into()),
        );
        return AdminConfig::default();
    }
    AdminConfig {
        token: Some(AdminToken::new(value)),
    }
}

pub(super) fn validate_store(ctx: &mut Ctx, raw: Option<&RawStore>) -> StoreConfig {
    StoreConfig {
        retention: ctx.duration(
            &raw.and_then(|r| r.retention.clone()),
            "store.retention",
            Duration::from_secs(7 * 86_400),
        ),
    }
}

pub(super) fn compile_match(ctx: &mut Ctx, route: &str, m: &RawMatch) -> Vec<Condition> {
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
