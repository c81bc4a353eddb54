//! Raw HTTP/1.1 over a `TcpStream`, for what reqwest will not do: lie about
//! `Content-Length`, stall mid-request, send a broken head, reuse one known
//! connection, see `100 Continue`. One connection type ([`Conn`]) that sends
//! bytes (now or from a background task), reads one answer at a time (head,
//! headers, a `Content-Length`, chunked or until-closed body) and reads until
//! the server closes; request bytes ([`request`]); and one-shot helpers
//! ([`exchange`], [`http_request`], [`http_post`]).
//!
//! Every wait is bounded by the connection's guard, which only turns "never
//! answered" or "never closed" into a failure instead of a stuck test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

/// The guard of the one-shot helpers [`http_request`] and [`http_post`].
const ONE_SHOT_GUARD: Duration = Duration::from_secs(30);

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first header with this name (case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A raw response head (`\r\n\r\n` included or not): the status line, its
/// status code, and the headers, trimmed. Panics on a malformed head.
pub fn parse_response_head(head: &[u8]) -> (String, u16, Vec<(String, String)>) {
    let head = String::from_utf8(head.to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    (status_line, status, headers)
}

/// The bytes of a request: `{method} {target} {version}`, `Host: 127.0.0.1`,
/// each of `headers` as written (`"Name: value"`), a blank line, `body`.
pub fn request(
    method: &str,
    target: &str,
    version: &str,
    headers: &[impl AsRef<str>],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {target} {version}\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        head.push_str(h.as_ref());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `body` in chunked transfer encoding, in chunks of `chunk` bytes, with the
/// final empty chunk.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk.max(1) * 8 + 8);
    for part in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// One answer read off a raw connection.
#[derive(Debug)]
pub struct Response {
    pub status_line: String,
    pub status: u16,
    /// Names as sent, in order.
    pub headers: Vec<(String, String)>,
    /// Chunked encoding undone.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (with the status and body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer {} is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The `error` of the relay's JSON answer.
    pub fn error(&self) -> String {
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {v}"))
            .to_owned()
    }
}

/// A raw connection: what was read and not yet taken stays buffered for the
/// next answer.
pub struct Conn {
    rd: OwnedReadHalf,
    wr: Option<OwnedWriteHalf>,
    writer: Option<JoinHandle<()>>,
    buf: Vec<u8>,
    guard: Duration,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

impl Conn {
    /// Connects to `addr`; every wait on the connection is bounded by `guard`.
    pub async fn connect(addr: SocketAddr, guard: Duration) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (rd, wr) = stream.into_split();
        Self::from_halves(rd, wr, guard)
    }

    /// A connection made elsewhere (and perhaps written to already).
    pub fn from_halves(rd: OwnedReadHalf, wr: OwnedWriteHalf, guard: Duration) -> Self {
        Self {
            rd,
            wr: Some(wr),
            writer: None,
            buf: Vec::new(),
            guard,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        let wr = self.wr.as_mut().expect("the write half is in use");
        wr.write_all(bytes).await.unwrap();
    }

    /// Writes `bytes` from a task, so that the answer can be read while the
    /// server has not read them all (it may answer first, then close; the
    /// task's write error is then expected and ignored). The task keeps the
    /// write half open (closing it would be a client EOF) until the
    /// connection is dropped.
    pub fn send_in_background(&mut self, bytes: Vec<u8>) {
        let mut wr = self.wr.take().expect("the write half is in use");
        self.writer = Some(tokio::spawn(async move {
            if wr.write_all(&bytes).await.is_ok() {
                std::future::pending::<()>().await;
            }
        }));
    }

    /// What was read and not yet taken by an answer.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more; false at EOF or on a reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.rd.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads until `n` bytes are buffered; panics if the server closes first.
    async fn fill_to(&mut self, n: usize, what: &str) {
        while self.buf.len() < n {
            assert!(self.fill().await, "closed inside {what}");
        }
    }

    /// The next answer, or `None` if the server closed the connection
    /// before sending a byte of it. Panics if it closes inside one.
    pub async fn try_response(&mut self) -> Option<Response> {
        tokio::time::timeout(self.guard, async {
            let head_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                    break i + 4;
                }
                if !self.fill().await {
                    assert!(
                        self.buf.is_empty(),
                        "closed inside an answer head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
            };
            let (status_line, status, headers) = parse_response_head(&self.buf[..head_end]);
            self.buf.drain(..head_end);
            let is_chunked = header(&headers, "transfer-encoding")
                .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
            let length = header(&headers, "content-length").map(|v| v.parse::<usize>().unwrap());
            let body = if (100..200).contains(&status) || status == 204 || status == 304 {
                Vec::new()
            } else if is_chunked {
                self.read_chunked().await
            } else if let Some(len) = length {
                self.fill_to(len, "an answer body").await;
                self.buf.drain(..len).collect()
            } else {
                // No length: the body runs to the end of the connection.
                while self.fill().await {}
                std::mem::take(&mut self.buf)
            };
            Some(Response {
                status_line,
                status,
                headers,
                body,
            })
        })
        .await
        .expect("no answer and no close before the guard")
    }

    /// The next line (`\r\n` taken off); panics if the server closes first.
    async fn line(&mut self, what: &str) -> String {
        let eol = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            assert!(self.fill().await, "closed inside {what}");
        };
        let line = String::from_utf8_lossy(&self.buf[..eol]).into_owned();
        self.buf.drain(..eol + 2);
        line
    }

    /// A chunked body, decoded; trailers are read and dropped.
    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line("a chunk size").await;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_line:?}"));
            if size == 0 {
                // Trailers up to a blank line.
                while !self.line("the trailers").await.is_empty() {}
                return body;
            }
            self.fill_to(size + 2, "a chunk").await;
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// The next answer; panics if the server closes without one.
    pub async fn response(&mut self) -> Response {
        self.try_response()
            .await
            .expect("the server closed the connection without answering")
    }

    /// Waits until the server closes the connection (EOF or reset); what it
    /// sent before that (buffered bytes included).
    pub async fn closed(&mut self) -> Vec<u8> {
        tokio::time::timeout(self.guard, async { while self.fill().await {} })
            .await
            .expect("the server kept the connection open");
        std::mem::take(&mut self.buf)
    }
}

/// Sends `request` on a new connection (in the background) and reads the
/// answer; the connection, to read on (e.g. until it is closed).
pub async fn exchange(addr: SocketAddr, request: Vec<u8>, guard: Duration) -> (Response, Conn) {
    let mut conn = Conn::connect(addr, guard).await;
    conn.send_in_background(request);
    let response = conn.response().await;
    (response, conn)
}

/// Sends one HTTP/1.1 request over a fresh connection (`Content-Length`,
/// `Connection: close`, then `headers` given as name and value) and reads
/// the answer.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = vec![
        format!("Content-Length: {}", body.len()),
        "Connection: close".to_owned(),
    ];
    head.extend(headers.iter().map(|(k, v)| format!("{k}: {v}")));
    let mut conn = Conn::connect(addr, ONE_SHOT_GUARD).await;
    conn.send(&request(method, path_and_query, "HTTP/1.1", &head, body))
        .await;
    conn.response().await
}

/// POSTs `body` with `content_type` (omitted when empty).
pub async fn http_post(
    addr: SocketAddr,
    path_and_query: &str,
    content_type: &str,
    body: &str,
) -> Response {
    let headers: &[(&str, &str)] = if content_type.is_empty() {
        &[]
    } else {
        &[("Content-Type", content_type)]
    };
    http_request(addr, "POST", path_and_query, headers, body.as_bytes()).await
}
