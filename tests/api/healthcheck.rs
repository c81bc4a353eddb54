//! `crisp-relay healthcheck`: what a container HEALTHCHECK runs. It GETs the
//! admin `/healthz` and exits 0 on `200`, 1 otherwise — never 2. The address
//! is `--url` (or `CRISP_HEALTHCHECK_URL`), else the `admin.listen` of the
//! config named by `-c` (or `CRISP_RELAY_CONFIG`), of which it reads only the
//! start-up part: the hook key and webhook URLs need not be set.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helpers::*;

/// `crisp-relay healthcheck <args>` from an empty directory with no config
/// and none of the config's variables set: the healthcheck must not care.
fn healthcheck(args: &[&str]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    Command::new(bin())
        .arg("healthcheck")
        .args(args)
        .current_dir(empty.path())
        .env_remove("CRISP_RELAY_CONFIG")
        .env_remove("CRISP_HEALTHCHECK_URL")
        .env_remove("CRISP_HOOK_KEY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn healthy_relay_gives_0() {
    let app = TestApp::spawn().await;
    let url = format!("http://{}/healthz", app.admin);
    let out = healthcheck(&["--url", &url]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    assert!(text.starts_with("healthy:"), "{text}");
    assert!(out.stderr.is_empty(), "nothing on stderr: {out:?}");
}

#[tokio::test]
async fn url_from_the_environment() {
    let app = TestApp::spawn().await;
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("healthcheck")
        .current_dir(empty.path())
        .env_remove("CRISP_HOOK_KEY")
        .env(
            "CRISP_HEALTHCHECK_URL",
            format!("http://{}/healthz", app.admin),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test]
async fn non_200_gives_1() {
    let app = TestApp::spawn().await;
    let url = format!("http://{}/no-such-page", app.admin);
    let out = healthcheck(&["--url", &url]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with("unhealthy:") && text.contains("404"),
        "{text}"
    );
}

#[test]
fn closed_port_gives_1() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = healthcheck(&["--url", &format!("http://127.0.0.1:{port}/healthz")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    assert!(text.starts_with("unhealthy:"), "{text}");
}

#[test]
fn silent_server_times_out_with_1() {
    // Accepts the connection (the kernel does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let started = std::time::Instant::now();
    let out = healthcheck(&["--url", &url]);
    let took = started.elapsed();
    drop(listener);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("no answer within 3s"), "{out:?}");
    assert!(took < std::time::Duration::from_secs(6), "took {took:?}");
}

#[test]
fn not_http_gives_1() {
    let out = healthcheck(&["--url", "https://127.0.0.1:1/healthz"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// A config file in its own directory whose `admin.listen` is `admin` (the
/// text as written, variables and all), and whose hook key and webhook URL
/// are variables without a default that no healthcheck here sets.
struct ConfigFile {
    dir: tempfile::TempDir,
}

impl ConfigFile {
    fn with_admin_listen(admin: &str) -> Self {
        let yaml = config_with(
            "targets:\n  crm: {kind: webhook, url: \"${CRISP_RELAY_TEST_CRM_URL}\"}\nroutes:\n  - name: all\n    to: [crm]\n",
        )
        .replacen("admin:\n  listen: 127.0.0.1:0", &format!("admin:\n  listen: {admin}"), 1);
        assert!(yaml.contains(admin), "{yaml}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("relay.yaml"), yaml).unwrap();
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("relay.yaml")
    }
}

/// `crisp-relay healthcheck -c <config> <args>`, as `healthcheck` runs it:
/// from an empty directory, with neither the hook key nor any other
/// variable of the config set.
fn healthcheck_with_config(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    healthcheck(&all)
}

fn healthz(addr: SocketAddr) -> String {
    format!("http://{addr}/healthz")
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn with_a_config_it_asks_that_configs_admin_listen() {
    let app = TestApp::spawn().await;
    let config = ConfigFile::with_admin_listen(&format!("\"{}\"", app.admin));

    let out = healthcheck_with_config(&config.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out).trim_end(),
        format!("healthy: {} answered 200", healthz(app.admin))
    );
    assert!(out.stderr.is_empty(), "nothing on stderr: {out:?}");

    // The container's way: no -c, CRISP_RELAY_CONFIG names the config.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("healthcheck")
        .current_dir(empty.path())
        .env("CRISP_RELAY_CONFIG", config.path())
        .env_remove("CRISP_HEALTHCHECK_URL")
        .env_remove("CRISP_HOOK_KEY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains(&healthz(app.admin)), "{out:?}");
}

#[tokio::test]
async fn a_wildcard_admin_listen_is_asked_on_loopback() {
    let app = TestApp::spawn().await;
    let port = app.admin.port();
    let config = ConfigFile::with_admin_listen(&format!("\"0.0.0.0:{port}\""));

    let out = healthcheck_with_config(&config.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out).trim_end(),
        format!("healthy: http://127.0.0.1:{port}/healthz answered 200")
    );
}

#[tokio::test]
async fn the_shipped_container_config_follows_crisp_admin_listen() {
    // The image sets CRISP_RELAY_CONFIG to this file; an operator who moves
    // the admin listener sets CRISP_ADMIN_LISTEN, and nothing else.
    let app = TestApp::spawn().await;
    let config = root().join("deploy/relay.container.yaml");
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("healthcheck")
        .current_dir(empty.path())
        .env("CRISP_RELAY_CONFIG", &config)
        .env(
            "CRISP_ADMIN_LISTEN",
            format!("0.0.0.0:{}", app.admin.port()),
        )
        .env_remove("CRISP_HEALTHCHECK_URL")
        .env_remove("CRISP_HOOK_KEY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout(&out).contains(&format!("http://127.0.0.1:{}/healthz", app.admin.port())),
        "{out:?}"
    );
}

#[test]
fn an_empty_admin_listen_gives_1_saying_so() {
    let config = ConfigFile::with_admin_listen("\"\"");
    let out = healthcheck_with_config(&config.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    assert!(text.starts_with("unhealthy: "), "{text}");
    assert!(
        text.contains("has no admin listener (admin.listen is empty)"),
        "{text}"
    );
    assert!(text.contains("--url"), "says what to do: {text}");
}

#[tokio::test]
async fn url_wins_over_the_config() {
    let app = TestApp::spawn().await;
    // The config's admin listener is a closed port, or none at all.
    let closed = ConfigFile::with_admin_listen(&format!("\"127.0.0.1:{}\"", closed_port()));
    let none = ConfigFile::with_admin_listen("\"\"");
    for config in [&closed, &none] {
        let out = healthcheck_with_config(&config.path(), &["--url", &healthz(app.admin)]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");

        let out = Command::new(bin())
            .arg("healthcheck")
            .arg("-c")
            .arg(config.path())
            .env("CRISP_HEALTHCHECK_URL", healthz(app.admin))
            .env_remove("CRISP_HOOK_KEY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
}

#[test]
fn a_config_it_cannot_use_gives_1_never_2() {
    let unset_var = ConfigFile::with_admin_listen("\"${CRISP_RELAY_TEST_UNSET_ADMIN}\"");
    let not_an_address = ConfigFile::with_admin_listen("localhost:9090");
    let not_yaml = ConfigFile::with_admin_listen("{");
    let missing = unset_var.dir.path().join("no-such.yaml");
    let cases: [(&str, &Path, &str); 4] = [
        (
            "unset variable",
            &unset_var.path(),
            "environment variable `CRISP_RELAY_TEST_UNSET_ADMIN` is not set",
        ),
        (
            "not an address",
            &not_an_address.path(),
            "admin.listen: `localhost:9090` is not an address",
        ),
        ("not YAML", &not_yaml.path(), "relay.yaml:"),
        ("missing file", &missing, "cannot read config file"),
    ];
    for (name, config, want) in cases {
        let out = healthcheck_with_config(config, &[]);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        let text = stdout(&out);
        assert_eq!(text.lines().count(), 1, "{name}: one line: {text}");
        assert!(text.starts_with("unhealthy: "), "{name}: {text}");
        assert!(text.contains(want), "{name}: no `{want}` in {text}");
    }
}
