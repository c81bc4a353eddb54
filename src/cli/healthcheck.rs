//! `healthcheck`: ask a running relay's admin listener whether it is
//! healthy, for container HEALTHCHECKs (the image has no curl). Exit 0 when
//! `/healthz` answers 200, else 1 — never 2, which Docker reserves.
//!
//! Where it asks: `--url` (or `CRISP_HEALTHCHECK_URL`); else the config's
//! `admin.listen` (only the start-up part of the config is read, so the hook
//! key need not be set), when `-c`/`CRISP_RELAY_CONFIG` names a config or
//! `./relay.yaml` exists; else [`DEFAULT_HEALTHCHECK_URL`].

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use super::DEFAULT_CONFIG;

/// Where `healthcheck` looks when nothing says otherwise: `admin.listen`'s
/// default address.
pub const DEFAULT_HEALTHCHECK_URL: &str = "http://127.0.0.1:9090/healthz";

pub(super) fn run(url: Option<&str>, config: Option<&Path>) -> ExitCode {
    let url = match url {
        Some(u) => u.to_owned(),
        None => match url_from_config(config) {
            Ok(u) => u,
            Err(e) => {
                println!("unhealthy: {e}");
                return ExitCode::from(1);
            }
        },
    };
    match http_get_status(&url, std::time::Duration::from_secs(3)) {
        Ok(200) => {
            println!("healthy: {url} answered 200");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("unhealthy: {url} answered {status}");
            ExitCode::from(1)
        }
        Err(e) => {
            println!("unhealthy: {url}: {e}");
            ExitCode::from(1)
        }
    }
}

/// The health URL from the config's `admin.listen`.
fn url_from_config(config: Option<&Path>) -> Result<String, String> {
    let path = match config {
        Some(p) => p.to_owned(),
        None if Path::new(DEFAULT_CONFIG).is_file() => DEFAULT_CONFIG.into(),
        None => return Ok(DEFAULT_HEALTHCHECK_URL.to_owned()),
    };
    let startup = crate::app::load_startup(&path, &|k| std::env::var(k).ok())
        .map_err(|e| e.to_string().replace('\n', " "))?;
    match startup.admin_listen {
        Some(addr) => Ok(health_url(addr)),
        None => Err(format!(
            "{} has no admin listener (admin.listen is empty); set one, or pass --url",
            path.display()
        )),
    }
}

/// `http://ADDR/healthz`, with a wildcard address (`0.0.0.0`, `[::]`)
/// replaced by the loopback of its family.
fn health_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}/healthz")
}

/// GETs a plain `http://` URL with `Connection: close` and returns the
/// status code of the answer; the whole exchange must fit in `timeout`.
fn http_get_status(url: &str, timeout: std::time::Duration) -> Result<u16, String> {
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Instant;

    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {}s", timeout.as_secs()))
    };
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("scheme `{}` is not http", parsed.scheme()));
    }
    let port = parsed.port().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::from((ip, port))],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::from((ip, port))],
        Some(url::Host::Domain(name)) => (name, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {name}: {e}"))?
            .collect(),
        None => return Err("the URL has no host".into()),
    };
    let mut last_err = String::from("no address to connect to");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    let host = parsed.host_str().unwrap_or_default();
    let target = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: crisp-relay-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(left()?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // Only the status line matters: `HTTP/1.1 200 OK\r\n`.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no answer within {}s", timeout.as_secs()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the answer: {e}")),
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().splitn(3, ' ');
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(status))) if v.starts_with("HTTP/") => Ok(status),
        _ if head.is_empty() => Err("the connection closed without an answer".into()),
        _ => Err(format!("not an HTTP answer: {:?}", line.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_become_loopback() {
        let cases = [
            ("0.0.0.0:9091", "http://127.0.0.1:9091/healthz"),
            ("[::]:9091", "http://[::1]:9091/healthz"),
            ("10.1.2.3:9090", "http://10.1.2.3:9090/healthz"),
            ("127.0.0.1:9090", DEFAULT_HEALTHCHECK_URL),
        ];
        for (addr, want) in cases {
            assert_eq!(health_url(addr.parse().unwrap()), want, "{addr}");
        }
    }
}
