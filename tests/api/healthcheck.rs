//! `crisp-relay healthcheck`: what a container HEALTHCHECK runs. It reads no
//! config, GETs the admin `/healthz` and exits 0 on `200`, 1 otherwise.

use std::net::TcpListener;
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
