//! Browser tests: the admin listener's pages in a real headless Chromium,
//! driven over WebDriver (chromedriver, through `fantoccini`).
//!
//! Without `CRISP_RELAY_CHROMEDRIVER` every test here prints one `skipped:`
//! line on stderr and passes without testing anything (as the PostgreSQL
//! tests do without their URL); `scripts/ensure-chromium.sh` installs
//! Debian's `chromium` and `chromium-driver`, and `.ci/run` sets the
//! variable. `CRISP_RELAY_CHROMIUM` names another browser binary than
//! `/usr/bin/chromium`.
//!
//! One browser at a time in the whole test binary (a static semaphore):
//! Chromium is heavy on two cores. Each test gets its own chromedriver on a
//! free port, in a process group of its own with a fresh profile directory;
//! dropping the [`Browser`] (also when the test panics) kills that group, so
//! no chromedriver or Chromium outlives its test.
//!
//! The helpers read like a person's actions: `open`, `click`, `text`,
//! `wait_for_text`, `login`. Waiting polls with a deadline ([`WAIT`]), and
//! only bounds the wait: no test asserts how long anything took.
//!
//! With `CRISP_RELAY_SCREENSHOTS=1`, [`Browser::screenshot`] writes PNGs to
//! `docs/screenshots/` (the README's pictures); otherwise it does nothing.
//!
//! Files: this one (the harness, and what the console tests share: the
//! config with an admin token, the API as a script would read it),
//! `harness` (the harness's own test, no console needed), `overview`
//! (targets and live updates, phone width), `deadletters` (detail,
//! replay, hostile event text), `auth` (actions without the token).

mod auth;
mod deadletters;
mod harness;
mod overview;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::helpers::*;

/// Names the chromedriver binary; unset, the browser tests are skipped.
pub const DRIVER_VAR: &str = "CRISP_RELAY_CHROMEDRIVER";
/// Names the browser binary (default `/usr/bin/chromium`).
pub const CHROMIUM_VAR: &str = "CRISP_RELAY_CHROMIUM";
/// `1`: write the README's screenshots.
pub const SCREENSHOTS_VAR: &str = "CRISP_RELAY_SCREENSHOTS";

/// Upper bound on waiting for anything in the page. Only a hang guard.
pub const WAIT: Duration = Duration::from_secs(15);

/// The admin token the console tests configure (through the environment,
/// as an operator would).
pub const TOKEN: &str = "console-test-token-0123456789";

/// One browser at a time across the test binary.
static ONE_BROWSER: Semaphore = Semaphore::const_new(1);

/// A headless Chromium under a chromedriver of its own.
pub struct Browser {
    client: Client,
    driver: Child,
    /// Where relative paths in [`Browser::open`] go (`http://ADMIN`).
    base: String,
    /// Chromium's profile and chromedriver's log; removed on drop.
    _scratch: tempfile::TempDir,
    _slot: SemaphorePermit<'static>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or — when
    /// `CRISP_RELAY_CHROMEDRIVER` is unset — prints the `skipped:` line and
    /// gives `None`: the test then returns.
    pub async fn launch() -> Option<Self> {
        let Some(driver_bin) = std::env::var_os(DRIVER_VAR).filter(|v| !v.is_empty()) else {
            eprintln!(
                "skipped: set {DRIVER_VAR}=/usr/bin/chromedriver (scripts/ensure-chromium.sh installs it)"
            );
            return None;
        };
        let chromium = std::env::var(CHROMIUM_VAR)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/usr/bin/chromium".to_owned());
        let slot = ONE_BROWSER.acquire().await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let log_path = scratch.path().join("chromedriver.log");
        let port = free_port();
        let mut driver = {
            use std::os::unix::process::CommandExt;
            let log = std::fs::File::create(&log_path).unwrap();
            Command::new(&driver_bin)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                // Its own process group, so that drop can end chromedriver
                // and every Chromium process it started, and nothing else.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {driver_bin:?} ({DRIVER_VAR}): {e}"))
        };
        let url = format!("http://127.0.0.1:{port}");
        let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Err(e) = wait_until_ready(&url, &mut driver).await {
            kill_group(&mut driver);
            panic!(
                "chromedriver did not come up: {e}; its log:\n{}",
                log_text()
            );
        }

        let profile = scratch.path().join("profile");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,800",
                    // The machine's network is closed: no background
                    // fetches, updates or sync to wait on or to fail.
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = match ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                kill_group(&mut driver);
                panic!(
                    "no browser session (is {chromium} there? {CHROMIUM_VAR} names another): {e}; chromedriver's log:\n{}",
                    log_text()
                );
            }
        };
        Some(Self {
            client,
            driver,
            base: String::new(),
            _scratch: scratch,
            _slot: slot,
        })
    }

    /// Relative paths in [`Browser::open`] go to this relay's admin listener.
    pub fn at(mut self, admin: SocketAddr) -> Self {
        self.base = format!("http://{admin}");
        self
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The absolute URL of `path` (a path on the admin listener, or already
    /// absolute).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") || path.starts_with("data:")
        {
            path.to_owned()
        } else {
            assert!(
                !self.base.is_empty(),
                "open({path:?}): call Browser::at(admin) first"
            );
            format!("{}{path}", self.base)
        }
    }

    /// Types the address into the browser and waits for the page to load.
    pub async fn open(&self, path: &str) {
        let url = self.url(path);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path of the page the browser shows now.
    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// The element `css` selects; fails, naming the page, when there is none.
    pub async fn find(&self, css: &str) -> Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => panic!("no `{css}` on {}: {e}", self.describe().await),
        }
    }

    /// Every element `css` selects (possibly none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    /// The visible text of the element `css` selects, trimmed.
    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        e.text().await.unwrap().trim().to_owned()
    }

    /// Clicks the element `css` selects (a link, a button); when that
    /// navigates, WebDriver waits for the new page.
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        e.click()
            .await
            .unwrap_or_else(|err| panic!("click `{css}`: {err}"));
    }

    /// Types `text` into the field `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Runs `script` in the page (`return ...` gives a value).
    pub async fn execute(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed ({e}): {script}"))
    }

    /// Waits until the element `css` selects exists and its trimmed text is
    /// `expected`; fails after [`WAIT`] with what it showed last.
    pub async fn wait_for_text(&self, css: &str, expected: &str) {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    let t = t.trim().to_owned();
                    if t == expected {
                        return;
                    }
                    last = Some(t);
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{css}` never read {expected:?} within {WAIT:?}; last: {last:?}; on {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `css` selects something; fails after [`WAIT`].
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                return e;
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{css}` never appeared within {WAIT:?}; on {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the browser shows the page at `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let deadline = Instant::now() + WAIT;
        while self.path().await != path {
            if Instant::now() >= deadline {
                panic!(
                    "never reached {path} within {WAIT:?}; on {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Logs in to the console as a person does: the login page, the token
    /// in its field, the submit button; then the overview shows.
    pub async fn login(&self, token: &str) {
        self.open("/ui/login").await;
        self.type_into("input[name=token]", token).await;
        let form = "form:has(input[name=token])";
        self.click(&format!(
            "{form} button[type=submit], {form} input[type=submit], {form} button:not([type])"
        ))
        .await;
        self.wait_for_path("/ui/").await;
    }

    /// Sets the window's size (CSS pixels of the viewport, near enough).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// With `CRISP_RELAY_SCREENSHOTS=1`, saves the page as
    /// `docs/screenshots/<name>.png`; otherwise does nothing.
    pub async fn screenshot(&self, name: &str) {
        if std::env::var(SCREENSHOTS_VAR).as_deref() != Ok("1") {
            return;
        }
        let png = self.client.screenshot().await.unwrap();
        let dir = root().join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    /// The page's address and the start of its text, for failure messages.
    async fn describe(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_else(|e| format!("(no URL: {e})"));
        let body = match self.client.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let body: String = body.chars().take(600).collect();
        format!("{url}, showing:\n{body}")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// A port nothing listens on now (the OS's pick, released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls chromedriver's `/status` until it says ready.
async fn wait_until_ready(url: &str, driver: &mut Child) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = driver.try_wait().unwrap() {
            return Err(format!("it exited ({status})"));
        }
        if let Ok(r) = http.get(format!("{url}/status")).send().await {
            if let Ok(bytes) = r.bytes().await {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if v["value"]["ready"] == true {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("{url}/status did not answer ready within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILL to chromedriver's process group (it and the browser it
/// started), then reaps chromedriver.
fn kill_group(driver: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", driver.id())])
        .stderr(Stdio::null())
        .status();
    let _ = driver.kill();
    let _ = driver.wait();
    // Chromium's processes take a moment to go; wait (briefly) until the
    // group is empty, so the next test starts with none left.
    let group = format!("-{}", driver.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && Command::new("kill")
            .args(["-0", "--", &group])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// What the console tests share

/// `config_with(extra)` with the console's admin token, read from the
/// environment as an operator would pass it.
pub fn console_config(extra: &str) -> String {
    let plain = config_with(extra);
    let admin = "admin:\n  listen: 127.0.0.1:0\n";
    assert!(plain.contains(admin), "config_with changed: {plain}");
    plain.replace(
        admin,
        "admin:\n  listen: 127.0.0.1:0\n  token: \"${CRISP_RELAY_ADMIN_TOKEN}\"\n",
    )
}

/// Starts the relay with `console_config(extra)` and the token in its
/// environment.
pub async fn spawn_console(extra: &str) -> TestApp {
    TestApp::spawn_in(
        Workdir::new(&console_config(extra)),
        &[("CRISP_RELAY_ADMIN_TOKEN", TOKEN)],
    )
    .await
}

/// A webhook target `name` at `url` and a route sending every visitor
/// message to it, the event as Crisp sent it (no template). `retry` is the
/// target's retry policy (YAML flow mapping).
pub fn webhook_target(name: &str, url: &str, retry: &str) -> String {
    format!(
        "targets:\n  {name}: {{kind: webhook, url: \"{url}\", retry: {retry}}}\n\
         routes:\n  - name: visitor-messages\n    match: {{event: \"message:send\", data.from: user}}\n    to: [{name}]\n"
    )
}

/// Posts each body as Crisp does; each must be accepted.
pub async fn post_events(app: &TestApp, bodies: impl IntoIterator<Item = String>) {
    for (i, body) in bodies.into_iter().enumerate() {
        let resp = app.post_event(body).await;
        assert_eq!(resp.status(), 200, "event {i}");
    }
}

/// `GET /api/v1/deadletters` with the bearer token, as a script would:
/// the dead letters as JSON objects. Accepts a bare array or an object
/// holding the array under `deadletters` or `items`.
pub async fn api_dead_letters(app: &TestApp) -> Vec<Value> {
    let resp = app
        .client
        .get(format!("http://{}/api/v1/deadletters", app.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET /api/v1/deadletters");
    let bytes = resp.bytes().await.unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "GET /api/v1/deadletters is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    v["dead_letters"]
        .as_array()
        .unwrap_or_else(|| panic!("no `dead_letters` list in {v}"))
        .clone()
}

/// Waits (up to [`WAIT`]) until the relay's log holds `needle` `n` times
/// (`dead-lettered`: a delivery became a dead letter).
pub async fn wait_for_log(app: &TestApp, needle: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while app.logs().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "the log never showed {needle:?} {n} times; logs:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The id of a dead letter as the API gives it (a number or a string).
pub fn dead_letter_id(d: &Value) -> String {
    match &d["id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("dead letter without an id ({other}): {d}"),
    }
}
