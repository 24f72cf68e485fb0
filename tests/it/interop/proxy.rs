//! A tiny counting and fault-injecting HTTP proxy on 127.0.0.1, placed between
//! scimsync and the third-party server. It logs every request scimsync sends
//! (so "no writes" is a real count of what went over the wire) and, on
//! selected requests, answers 503 instead of forwarding, or forwards and then
//! answers 503 or breaks the connection mid-answer (the write happened but the
//! client cannot know).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tokio::net::TcpListener;

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer 503 without forwarding (nothing happened upstream).
    Unavailable,
    /// Forward, then answer 503 instead of the real answer (in doubt).
    UnavailableAfter,
    /// Forward, then send a partial answer and drop the connection (in doubt).
    ResetAfter,
}

/// Which requests a fault hits, and how often.
#[derive(Clone, Debug)]
pub struct Fault {
    /// HTTP method.
    pub method: Method,
    /// Path prefix, e.g. `/v2/Users`.
    pub path_prefix: String,
    /// Only requests whose body contains this text.
    pub body_contains: Option<String>,
    /// What to do.
    pub kind: FaultKind,
    /// How many times (0: every matching request).
    pub times: u32,
    fired: u32,
}

impl Fault {
    /// A fault on `method` requests under `path_prefix`.
    pub fn new(method: Method, path_prefix: &str, kind: FaultKind, times: u32) -> Fault {
        Fault {
            method,
            path_prefix: path_prefix.to_owned(),
            body_contains: None,
            kind,
            times,
            fired: 0,
        }
    }

    /// Only requests whose body contains `text`.
    pub fn with_body(mut self, text: &str) -> Fault {
        self.body_contains = Some(text.to_owned());
        self
    }
}

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// The fault injected, if any (shown in assertion messages).
    #[allow(dead_code)]
    pub fault: Option<FaultKind>,
}

#[derive(Default)]
struct ProxyState {
    upstream: String,
    seen: Mutex<Vec<Seen>>,
    faults: Mutex<Vec<Fault>>,
    http: Option<reqwest::Client>,
}

/// A running proxy (stops with the test's runtime).
pub struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
}

impl Proxy {
    /// Proxy to `upstream` (scheme and host, e.g. `http://127.0.0.1:8080`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: Some(
                reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .expect("proxy client"),
            ),
            ..ProxyState::default()
        });
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Proxy { port, state }
    }

    /// The proxy's origin, `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Add a fault.
    pub fn inject(&self, fault: Fault) {
        self.state.faults.lock().expect("lock").push(fault);
    }

    /// Remove every fault.
    pub fn clear_faults(&self) {
        self.state.faults.lock().expect("lock").clear();
    }

    /// How many times each fault fired, in the order they were added.
    pub fn fired(&self) -> Vec<u32> {
        let faults = self.state.faults.lock().expect("lock");
        faults.iter().map(|f| f.fired).collect()
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// Forget the requests seen so far.
    pub fn reset_counts(&self) {
        self.state.seen.lock().expect("lock").clear();
    }

    /// Requests seen (all methods).
    pub fn requests(&self) -> usize {
        self.seen().len()
    }

    /// Write requests seen (POST, PUT, PATCH, DELETE).
    pub fn writes(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method != Method::GET)
            .count()
    }

    /// Requests seen with this method and path prefix.
    pub fn count(&self, method: &Method, path_prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == *method && s.path.starts_with(path_prefix))
            .count()
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let fault = {
        let mut faults = state.faults.lock().expect("lock");
        let text = String::from_utf8_lossy(&body);
        faults
            .iter_mut()
            .find(|f| {
                f.method == parts.method
                    && path.starts_with(&f.path_prefix)
                    && f.body_contains.as_ref().is_none_or(|t| text.contains(t))
                    && (f.times == 0 || f.fired < f.times)
            })
            .map(|f| {
                f.fired += 1;
                f.kind
            })
    };
    state.seen.lock().expect("lock").push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        fault,
    });
    if fault == Some(FaultKind::Unavailable) {
        return unavailable();
    }
    let http = state.http.as_ref().expect("client");
    let mut up = http.request(parts.method.clone(), format!("{}{path}", state.upstream));
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            up = up.header(name, v.clone());
        }
    }
    let answer = match up.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(format!("proxy: upstream failed: {e}")))
                .expect("response");
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    match fault {
        Some(FaultKind::UnavailableAfter) => return unavailable(),
        Some(FaultKind::ResetAfter) => return reset(),
        _ => {}
    }
    let mut resp = Response::builder().status(status.as_u16());
    for name in [
        header::CONTENT_TYPE,
        header::LOCATION,
        header::ETAG,
        header::WWW_AUTHENTICATE,
        header::RETRY_AFTER,
    ] {
        if let Some(v) = headers.get(&name) {
            resp = resp.header(name, v.clone());
        }
    }
    resp.body(Body::from(bytes)).expect("response")
}

fn unavailable() -> Response {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("proxy: injected 503"))
        .expect("response")
}

/// A 200 that announces more bytes than it sends, then drops the connection.
fn reset() -> Response {
    let stream = futures_util::stream::unfold(0u8, |step| async move {
        match step {
            0 => Some((
                Ok::<Bytes, std::io::Error>(Bytes::from_static(b"{\"sch")),
                1,
            )),
            1 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "proxy: injected connection reset",
                    )),
                    2,
                ))
            }
            _ => None,
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("400"));
    resp
}
