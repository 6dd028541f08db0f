//! HTTP/1.1 over TCP: the accept loop, one task per connection, and the routing of requests to
//! the [`Engine`]. Owns everything the network can do wrong on purpose: added latency, HTTP 502,
//! connection resets and lost responses.
//!
//! Each connection is served by hyper directly (not through a router) because resets and lost
//! responses need the socket itself: the request handler signals its connection task, which
//! takes the socket back from hyper, sets `SO_LINGER` to zero and drops it, so the client sees a
//! TCP RST and no response.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, DATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::answer::Reply;
use super::engine::{Admission, Engine};
use super::faults::Fault;
use super::request::ApiRequest;
use crate::qingcloud::signer;

/// What every API request gets under `api.html_everywhere` (HTTP 200).
pub const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body><h1>Welcome</h1><p>Please sign in to continue.</p></body></html>\n";

/// How long shutdown waits for requests in flight before cutting connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The smallest head buffer hyper accepts; a smaller limit is raised to it.
const MIN_HEAD_BYTES: usize = 8192;

/// What one connection may cost the simulator, so that a slow or hostile client can hold
/// neither memory nor a connection without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request head (request line with its query string, and the headers). A longer
    /// one is answered 414 or 431 by the HTTP layer and the connection is closed. At least
    /// 8 KiB. The HTTP layer reads in growing chunks and checks between them, so a head is
    /// refused somewhere between this and about twice this.
    pub max_head_bytes: usize,
    /// Longest POST body; a longer one is answered 413.
    pub max_body_bytes: usize,
    /// Time a client has to send a complete request head, counted from when the server starts
    /// waiting for one, so an idle keep-alive connection is closed after this too.
    pub header_read_timeout: Duration,
    /// Time a client has to send a complete POST body; a slower one is answered 408.
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    /// 64 KiB of head (a GET `DescribeJobs` with 100 ids is about 2.5 KB; the client posts
    /// anything over 2 KB), 1 MiB of body, 30 s for each.
    fn default() -> Self {
        Self {
            max_head_bytes: 64 * 1024,
            max_body_bytes: 1 << 20,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Accept connections until `shutdown` turns true (or its sender goes away), then let the
/// connections finish their requests in flight.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>, limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small request/response pairs: do not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, engine.clone(), limits, shutdown.clone()));
                }
                Err(err) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%err, "simulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!("simulator: requests still in flight after {DRAIN_TIMEOUT:?}; cutting their connections");
        connections.shutdown().await;
    }
    tracing::debug!("simulator: stopped");
}

async fn serve_connection(stream: TcpStream, engine: Arc<Engine>, limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let kill = Arc::new(Notify::new());
    let service = {
        let kill = kill.clone();
        service_fn(move |req| handle(engine.clone(), kill.clone(), limits, req))
    };
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES))
        .serve_connection(TokioIo::new(stream), service);
    let mut draining = false;
    loop {
        tokio::select! {
            result = &mut conn => {
                if let Err(err) = result {
                    tracing::debug!(%err, "simulator: connection ended with an error");
                }
                return;
            }
            () = kill.notified() => break,
            _ = shutdown.changed(), if !draining => {
                draining = true;
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
        }
    }
    // Abortive close: with a zero linger, dropping the socket sends RST instead of FIN.
    let stream = conn.into_parts().io.into_inner();
    if let Err(err) = stream.set_zero_linger() {
        tracing::debug!(%err, "simulator: cannot set SO_LINGER; closing normally");
    }
}

type Resp = Response<Full<Bytes>>;

async fn handle(
    engine: Arc<Engine>,
    kill: Arc<Notify>,
    limits: Limits,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path();
    let is_api = path == "/iaas/" || path == "/iaas";
    let mut resp = match (req.method(), path) {
        (&Method::GET, "/sim/stats") => json(StatusCode::OK, serde_json::to_vec(&engine.stats(engine.now()))),
        (&Method::GET | &Method::POST, _) if is_api => api(engine.clone(), kill, limits, req).await,
        // Whatever stands in front of the API answers every other request too.
        _ if engine.html_everywhere() => html_page(),
        (_, "/sim/stats") => not_allowed("GET"),
        _ if is_api => not_allowed("GET, POST"),
        _ => plain(StatusCode::NOT_FOUND, "not found: the API is served on /iaas/ and statistics on /sim/stats\n"),
    };
    // On the simulator's (possibly shifted) clock; hyper would otherwise send the host's.
    let date = engine.now().wall.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = HeaderValue::from_str(&date) {
        resp.headers_mut().insert(DATE, value);
    }
    Ok(resp)
}

async fn api(engine: Arc<Engine>, kill: Arc<Notify>, limits: Limits, req: Request<Incoming>) -> Resp {
    // A body announced as too long is refused before any of it is read.
    if hyper::body::Body::size_hint(req.body()).lower() > limits.max_body_bytes as u64 {
        return too_large(limits);
    }
    let delay = engine.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let method = if req.method() == Method::POST { signer::Method::Post } else { signer::Method::Get };
    let path = req.uri().path().to_owned();
    let params = match method {
        signer::Method::Get => parse_form(req.uri().query().unwrap_or("").as_bytes()),
        signer::Method::Post => {
            let body = Limited::new(req.into_body(), limits.max_body_bytes).collect();
            match tokio::time::timeout(limits.body_read_timeout, body).await {
                Ok(Ok(body)) => parse_form(&body.to_bytes()),
                Ok(Err(err)) => {
                    tracing::debug!(%err, "simulator: cannot read the request body");
                    return too_large(limits);
                }
                Err(_) => {
                    tracing::debug!("simulator: request body not received in time");
                    return plain(StatusCode::REQUEST_TIMEOUT, "request body not received in time\n");
                }
            }
        }
    };
    let action = params.iter().find(|(k, _)| k == "action").map_or("", |(_, v)| v.as_str()).to_owned();
    let arrived = chrono::Utc::now();

    let lost = match engine.admit(&action, arrived) {
        Admission::Html => {
            engine.log_request(&params, arrived, None, None);
            return html_page();
        }
        Admission::Fault(Fault::Reset) => {
            engine.log_request(&params, arrived, None, None);
            return drop_connection(&kill).await;
        }
        Admission::Fault(Fault::Http502) => {
            engine.log_request(&params, arrived, None, None);
            return plain(StatusCode::BAD_GATEWAY, "<html><body><h1>502 Bad Gateway</h1></body></html>\n");
        }
        Admission::Fault(f) => {
            let answer = Engine::fault_reply(f);
            engine.log_request(&params, arrived, Some(answer.ret_code), None);
            return reply(answer);
        }
        Admission::Api { lost } => lost,
    };
    let request = ApiRequest { method, path, params };
    let answer = engine.call(&request, engine.now());
    engine.log_request(&request.params, arrived, Some(answer.ret_code), answer.job_id.clone());
    tracing::debug!(action, ret_code = answer.ret_code, "simulator: answered");
    if lost {
        return drop_connection(&kill).await;
    }
    reply(answer)
}

fn html_page() -> Resp {
    let mut resp = plain(StatusCode::OK, HTML_PAGE);
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp
}

fn too_large(limits: Limits) -> Resp {
    let text = format!("request body unreadable or longer than {} bytes\n", limits.max_body_bytes);
    plain(StatusCode::PAYLOAD_TOO_LARGE, &text)
}

/// Ask the connection task to reset the connection, and never answer.
async fn drop_connection(kill: &Notify) -> Resp {
    kill.notify_one();
    std::future::pending().await
}

fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn reply(answer: Reply) -> Resp {
    json(StatusCode::OK, Ok::<_, Infallible>(answer.body))
}

fn json<E: std::fmt::Display>(status: StatusCode, body: Result<Vec<u8>, E>) -> Resp {
    match body {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            resp
        }
        Err(err) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot encode the response: {err}\n")),
    }
}

fn plain(status: StatusCode, text: &str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(text.to_owned())));
    *resp.status_mut() = status;
    let kind = if text.starts_with("<html>") { "text/html" } else { "text/plain; charset=utf-8" };
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    resp
}

fn not_allowed(allow: &'static str) -> Resp {
    let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}
