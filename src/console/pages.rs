//! The console's HTML pages under `/ui/`: server-rendered (the tables are
//! there without JavaScript) from the templates in `assets/`, through a
//! Handlebars registry of their own with HTML escaping on (the relay's
//! message registries turn it off; this one must not), in strict mode.
//! Actions answer 303 to the page with a fixed `done` code, never text from
//! the request, so a link cannot make the page say anything.
//!
//! To add a page to the navigation: one line in [`NAV`], one arm in
//! [`allowed`] and one in [`handle`].

use std::sync::LazyLock;

use bytes::Bytes;
use handlebars::Handlebars;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::auth::Refusal;
use super::{
    ActionError, Allowed, Body, Console, Ctx, ReplayWhat, data, history_pages, redirect, session,
    with_body,
};

/// The navigation: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/ui/", "Overview"),
    ("/ui/deliveries", "Deliveries"),
    ("/ui/conversations", "Conversations"),
    ("/ui/deadletters", "Dead letters"),
    ("/ui/config", "Config"),
];

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

const TEMPLATES: &[(&str, &str)] = &[
    ("header", include_str!("assets/header.hbs")),
    ("footer", include_str!("assets/footer.hbs")),
    ("overview", include_str!("assets/overview.hbs")),
    ("deadletters", include_str!("assets/deadletters.hbs")),
    ("deadletter", include_str!("assets/deadletter.hbs")),
    ("deliveries", include_str!("assets/deliveries.hbs")),
    ("delivery", include_str!("assets/delivery.hbs")),
    ("conversations", include_str!("assets/conversations.hbs")),
    ("purge", include_str!("assets/purge.hbs")),
    ("config", include_str!("assets/config.hbs")),
    ("login", include_str!("assets/login.hbs")),
    ("message", include_str!("assets/message.hbs")),
];

static REGISTRY: LazyLock<Result<Handlebars<'static>, String>> = LazyLock::new(|| {
    // `Handlebars::new()` escapes & < > " ' ` = in every `{{…}}`.
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    for (name, source) in TEMPLATES {
        hb.register_template_string(name, source)
            .map_err(|e| format!("console template {name}: {e}"))?;
    }
    Ok(hb)
});

/// The login page, its form, logging out and the assets need no
/// credential (see `auth`).
pub(super) fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/ui/login" | "/ui/logout" | "/ui/assets/console.css" | "/ui/assets/console.js"
    )
}

/// The methods `path` answers, or `None` when it is not a page.
pub(super) fn allowed(path: &str) -> Option<Allowed> {
    Some(match path {
        "/ui/" | "/ui/deadletters" | "/ui/config" => Allowed::Get,
        "/ui/deliveries" | "/ui/conversations" => Allowed::Get,
        "/ui/assets/console.css" | "/ui/assets/console.js" => Allowed::Get,
        "/ui/login" | "/ui/deadletters/purge" => Allowed::GetPost,
        "/ui/logout" | "/ui/reload" | "/ui/deadletters/replay" => Allowed::Post,
        other if other.starts_with("/ui/deliveries/") => {
            other.strip_prefix("/ui/deliveries/")?.parse::<i64>().ok()?;
            Allowed::Get
        }
        other => {
            let rest = other.strip_prefix("/ui/deadletters/")?;
            match rest.strip_suffix("/replay") {
                Some(id) => {
                    id.parse::<i64>().ok()?;
                    Allowed::Post
                }
                None => {
                    rest.parse::<i64>().ok()?;
                    Allowed::Get
                }
            }
        }
    })
}

pub(super) async fn handle(console: &Console, ctx: &Ctx<'_>, body: &Bytes) -> Response<Body> {
    let deps = &console.deps;
    let post = ctx.method == hyper::Method::POST;
    let page = Page {
        logged_in: ctx.via == "session",
        token_configured: deps.live.get().config.admin.token.is_some(),
        path: ctx.path,
    };
    match (ctx.path, post) {
        ("/ui/assets/console.css", _) => with_body(StatusCode::OK, "text/css; charset=utf-8", CSS),
        ("/ui/assets/console.js", _) => {
            with_body(StatusCode::OK, "text/javascript; charset=utf-8", JS)
        }
        ("/ui/login", false) => page.render(StatusCode::OK, "login", "Log in", json!({})),
        ("/ui/login", true) => login(console, &page, body),
        ("/ui/logout", _) => redirect("/ui/login", Some(session::clear_cookie())),
        ("/ui/", _) => {
            let o = data::overview(deps).await;
            page.render(StatusCode::OK, "overview", "Overview", json!(o))
        }
        ("/ui/deadletters", _) => dead_letters(console, &page, ctx).await,
        ("/ui/deliveries", _) => history_pages::deliveries(console, &page, ctx).await,
        ("/ui/conversations", _) => history_pages::conversations(console, &page, ctx).await,
        (other, _) if other.starts_with("/ui/deliveries/") => {
            match other["/ui/deliveries/".len()..].parse::<i64>() {
                Ok(id) => history_pages::delivery(console, &page, ctx, id).await,
                Err(_) => not_found(other),
            }
        }
        ("/ui/deadletters/replay", _) => {
            let form = Form::parse(body);
            let what = if let Some(t) = form.first("target").filter(|t| !t.is_empty()) {
                ReplayWhat::Target(t.to_owned())
            } else if form.first("all") == Some("1") {
                ReplayWhat::All
            } else {
                let ids: Result<Vec<i64>, _> = form.all("id").map(str::parse).collect();
                match ids {
                    Ok(ids) => ReplayWhat::Ids(ids),
                    Err(_) => {
                        return page.error(
                            StatusCode::BAD_REQUEST,
                            "A dead letter id is not a number.",
                            None,
                        );
                    }
                }
            };
            match console.replay(&what, ctx.via).await {
                Ok(n) => redirect(&format!("/ui/deadletters?done=replayed&n={n}"), None),
                Err(e) => page.action_failed(&e),
            }
        }
        ("/ui/deadletters/purge", false) => {
            let count = match deps.store.dead_letters(None).await {
                Ok(d) => d.len(),
                Err(e) => return page.action_failed(&ActionError::Store(e)),
            };
            page.render(
                StatusCode::OK,
                "purge",
                "Purge dead letters",
                json!({"count": count, "one": count == 1}),
            )
        }
        ("/ui/deadletters/purge", true) => {
            let form = Form::parse(body);
            match console.purge(form.first("older_than"), ctx.via).await {
                Ok(n) => redirect(&format!("/ui/deadletters?done=purged&n={n}"), None),
                Err(e) => page.action_failed(&e),
            }
        }
        ("/ui/config", _) => {
            let c = data::config(deps);
            let flash = (ctx.query_param("done").as_deref() == Some("reloaded"))
                .then_some("Configuration reloaded.");
            page.render(
                StatusCode::OK,
                "config",
                "Configuration",
                json!({"config": c, "flash": flash}),
            )
        }
        ("/ui/reload", _) => match console.reload(ctx.via).await {
            Ok(()) => redirect("/ui/config?done=reloaded", None),
            Err(e) => page.action_failed(&e),
        },
        (other, _) => {
            let rest = other.strip_prefix("/ui/deadletters/").unwrap_or_default();
            if let Some(id) = rest.strip_suffix("/replay").and_then(|i| i.parse().ok()) {
                return match console.replay(&ReplayWhat::Ids(vec![id]), ctx.via).await {
                    Ok(n) => redirect(&format!("/ui/deadletters?done=replayed&n={n}"), None),
                    Err(e) => page.action_failed(&e),
                };
            }
            let Ok(id) = rest.parse::<i64>() else {
                return not_found(other);
            };
            match data::dead_letter(deps, id, true).await {
                Ok(Some(row)) => page.render(
                    StatusCode::OK,
                    "deadletter",
                    &format!("Dead letter #{id}"),
                    json!({"row": row}),
                ),
                Ok(None) => page.error(
                    StatusCode::NOT_FOUND,
                    &format!("There is no dead letter #{id} (replayed or purged?)."),
                    None,
                ),
                Err(e) => page.action_failed(&ActionError::Store(e)),
            }
        }
    }
}

fn login(console: &Console, page: &Page<'_>, body: &Bytes) -> Response<Body> {
    let relay = console.deps.live.get();
    let Some(token) = relay.config.admin.token.as_ref() else {
        return page.render(
            StatusCode::FORBIDDEN,
            "login",
            "Log in",
            json!({"error": Refusal::NoTokenConfigured.message()}),
        );
    };
    let form = Form::parse(body);
    let given = form.first("token").unwrap_or("").trim();
    if !token.matches(given.as_bytes()) {
        tracing::info!("console: login refused (wrong token)");
        return page.render(
            StatusCode::UNAUTHORIZED,
            "login",
            "Log in",
            json!({"error": "That is not the admin token."}),
        );
    }
    tracing::info!("console: logged in");
    let value = session::issue(token, console.deps.clock.now_ms());
    redirect("/ui/", Some(session::set_cookie(&value)))
}

async fn dead_letters(console: &Console, page: &Page<'_>, ctx: &Ctx<'_>) -> Response<Body> {
    let target = ctx.query_param("target").filter(|t| !t.is_empty());
    let rows = match data::dead_letters(&console.deps, target.as_deref()).await {
        Ok(r) => r,
        Err(e) => return page.action_failed(&ActionError::Store(e)),
    };
    let mut by_target: Vec<(String, usize)> = Vec::new();
    for r in &rows {
        match by_target.iter_mut().find(|(t, _)| *t == r.target) {
            Some((_, n)) => *n += 1,
            None => by_target.push((r.target.clone(), 1)),
        }
    }
    let mut names: Vec<String> = console
        .deps
        .live
        .get()
        .config
        .targets
        .iter()
        .map(|t| t.name.clone())
        .collect();
    if let Some(t) = &target
        && !names.contains(t)
    {
        names.push(t.clone());
    }
    let n: u64 = ctx
        .query_param("n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let plural = |n: u64| {
        if n == 1 {
            "dead letter"
        } else {
            "dead letters"
        }
    };
    let flash = match ctx.query_param("done").as_deref() {
        Some("replayed") => Some(format!("Replayed {n} {}.", plural(n))),
        Some("purged") => Some(format!("Purged {n} {}.", plural(n))),
        _ => None,
    };
    let data = json!({
        "rows": rows,
        "by_target": by_target.iter().map(|(t, n)| json!({"name": t, "count": n})).collect::<Vec<_>>(),
        "target_names": names.iter().map(|t| json!({"name": t, "selected": Some(t) == target.as_ref()})).collect::<Vec<_>>(),
        "flash": flash,
    });
    page.render(StatusCode::OK, "deadletters", "Dead letters", data)
}

/// What every page's header needs.
pub(super) struct Page<'a> {
    logged_in: bool,
    token_configured: bool,
    path: &'a str,
}

impl Page<'_> {
    pub(super) fn render(
        &self,
        status: StatusCode,
        template: &str,
        title: &str,
        mut data: Value,
    ) -> Response<Body> {
        let current = NAV
            .iter()
            .map(|(href, _)| *href)
            .filter(|href| self.path == *href || (href.len() > 4 && self.path.starts_with(href)))
            .max_by_key(|href| href.len());
        let nav: Vec<Value> = NAV
            .iter()
            .map(|(href, label)| json!({"href": href, "label": label, "current": Some(*href) == current}))
            .collect();
        if let Value::Object(map) = &mut data {
            map.insert("title".into(), json!(title));
            map.insert("nav".into(), json!(nav));
            map.insert("logged_in".into(), json!(self.logged_in));
            map.insert("token_configured".into(), json!(self.token_configured));
            map.entry("flash").or_insert(Value::Null);
            map.entry("error").or_insert(Value::Null);
        }
        render(status, template, &data)
    }

    pub(super) fn error(
        &self,
        status: StatusCode,
        message: &str,
        details: Option<&str>,
    ) -> Response<Body> {
        self.render(
            status,
            "message",
            status.canonical_reason().unwrap_or("Error"),
            json!({"message": message, "details": details, "back": back(self.path)}),
        )
    }

    pub(super) fn action_failed(&self, e: &ActionError) -> Response<Body> {
        match e {
            ActionError::BadRequest(m) => self.error(StatusCode::BAD_REQUEST, m, None),
            ActionError::Reload(errors) => self.error(
                StatusCode::BAD_REQUEST,
                "The configuration was rejected; the relay keeps running the previous one.",
                Some(errors),
            ),
            ActionError::Store(e) => self.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("The store failed: {e}"),
                None,
            ),
        }
    }
}

fn back(path: &str) -> &'static str {
    if path.starts_with("/ui/deliveries") {
        "/ui/deliveries"
    } else if path.starts_with("/ui/deadletters") {
        "/ui/deadletters"
    } else if path.starts_with("/ui/config") || path == "/ui/reload" {
        "/ui/config"
    } else {
        "/ui/"
    }
}

fn render(status: StatusCode, template: &str, data: &Value) -> Response<Body> {
    let html = match REGISTRY.as_ref() {
        Ok(hb) => hb.render(template, data).map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    match html {
        Ok(html) => with_body(status, "text/html; charset=utf-8", html),
        Err(e) => {
            tracing::error!(error = %e, template, "console page failed to render");
            with_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "the console page failed to render; see the relay's log",
            )
        }
    }
}

/// A page for an unknown path under `/ui/`.
pub(super) fn not_found(_path: &str) -> Response<Body> {
    message(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

/// A bare page with a title and a message (no session known).
pub(super) fn message(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    Page {
        logged_in: false,
        token_configured: true,
        path: "",
    }
    .render(
        status,
        "message",
        title,
        json!({"message": text, "details": null, "back": "/ui/"}),
    )
}

/// The page for a refused request.
pub(super) fn refused(why: Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(why.status()).unwrap_or(StatusCode::FORBIDDEN);
    let status = if why == Refusal::NeedCredential {
        StatusCode::FORBIDDEN
    } else {
        status
    };
    message(status, "Refused", why.message())
}

/// An `application/x-www-form-urlencoded` body.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &Bytes) -> Self {
        Self(url::form_urlencoded::parse(body).into_owned().collect())
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_escape() {
        let hb = REGISTRY.as_ref().unwrap();
        let html = hb
            .render(
                "message",
                &json!({"title": "t", "nav": [], "logged_in": false, "token_configured": true,
                        "flash": null, "error": null, "back": "/ui/",
                        "message": "<script>alert('x')</script> & \"q\"", "details": "<img src=x onerror=alert(1)>"}),
            )
            .unwrap();
        assert!(
            html.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;"),
            "{html}"
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
    }

    #[test]
    fn pages_table() {
        let cases = [
            ("/ui/", Some(Allowed::Get)),
            ("/ui/login", Some(Allowed::GetPost)),
            ("/ui/deadletters/7", Some(Allowed::Get)),
            ("/ui/deadletters/7/replay", Some(Allowed::Post)),
            ("/ui/deadletters/replay", Some(Allowed::Post)),
            ("/ui/deadletters/purge", Some(Allowed::GetPost)),
            ("/ui/deadletters/x", None),
            ("/ui/deliveries", Some(Allowed::Get)),
            ("/ui/deliveries/12", Some(Allowed::Get)),
            ("/ui/deliveries/x", None),
            ("/ui/conversations", Some(Allowed::Get)),
            ("/ui/deadletters/x/replay", None),
            ("/ui/nope", None),
        ];
        for (path, want) in cases {
            assert_eq!(allowed(path), want, "{path}");
        }
        assert!(is_public("/ui/login") && !is_public("/ui/"));
    }

    #[test]
    fn forms() {
        let f = Form::parse(&Bytes::from_static(
            b"id=1&id=22&target=a+b%26c&token=%3Cx%3E",
        ));
        assert_eq!(f.all("id").collect::<Vec<_>>(), ["1", "22"]);
        assert_eq!(f.first("target"), Some("a b&c"));
        assert_eq!(f.first("token"), Some("<x>"));
        assert_eq!(f.first("nope"), None);
    }
}
