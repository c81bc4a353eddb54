//! The baseline: a bare hyper server (this binary re-executed with
//! `__baseline`) that reads each body, parses it as JSON and answers 200.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::drive::{Bodies, Load, LoadResult, Pace, drive};
use crate::relay::Proc;
use crate::report::{Lat, cpu_secs, lat};
use crate::{CONNECTIONS, KEY, Res};

/// The baseline server (this binary re-executed): read the body, parse it
/// as JSON, answer 200. Prints its address on stdout.
pub fn baseline_server(port: &str) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
        println!("{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let status = match req.into_body().collect().await {
                            Ok(b) => match serde_json::from_slice::<Value>(&b.to_bytes()) {
                                Ok(_) => StatusCode::OK,
                                Err(_) => StatusCode::BAD_REQUEST,
                            },
                            Err(_) => StatusCode::BAD_REQUEST,
                        };
                        let mut r = Response::new(Full::new(Bytes::from_static(
                            b"{\"status\":\"accepted\"}",
                        )));
                        *r.status_mut() = status;
                        Ok::<_, Infallible>(r)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

pub fn start_baseline() -> Res<(Proc, SocketAddr)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["__baseline", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
    }
    let addr = line.trim().parse()?;
    Ok((Proc { child, _dir: None }, addr))
}

/// Starts the baseline, warms it for 1 s, then drives it with the
/// closed-loop load on [`CONNECTIONS`] connections for `d`; the load, its
/// ack latency and the CPU seconds the server used.
pub async fn measure_baseline(
    bodies: &Arc<Bodies>,
    epoch: Instant,
    d: Duration,
) -> Res<(LoadResult, Lat, f64)> {
    let (base_proc, base_addr) = start_baseline()?;
    let load = |run: &str, duration| Load {
        addr: base_addr,
        uri: format!("/crisp/hooks?key={KEY}"),
        connections: CONNECTIONS,
        run: run.into(),
        pace: Pace::Closed {
            duration,
            total: u64::MAX,
        },
    };
    drive(load("warm", Duration::from_secs(1)), bodies.clone(), epoch).await?;
    let base_cpu0 = cpu_secs(&base_proc.child.id().to_string());
    let mut base = drive(load("base", d), bodies.clone(), epoch).await?;
    let base_cpu = cpu_secs(&base_proc.child.id().to_string()) - base_cpu0;
    drop(base_proc);
    let base_lat = lat(&mut base.ack_us);
    eprintln!(
        "  baseline: {:.0} req/s (p99 {:.2} ms); generator used {:.2} CPU-s, server {:.2} CPU-s",
        base.rps(),
        base_lat.p99,
        base.own_cpu,
        base_cpu
    );
    Ok((base, base_lat, base_cpu))
}
