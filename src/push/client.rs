//! The SCIM HTTP client: one thin method per endpoint over a single `send`
//! that owns pacing, retries and error classification.
//!
//! Every request passes the target's [`Throttle`]; retryable failures (429,
//! 500/502/503/504, connection failures, timeouts, resets) are retried on the
//! [`RetryPolicy`] schedule within a per-run budget, honouring Retry-After
//! through the shared not-before gate. Non-idempotent requests (POST) are not
//! re-sent after a failure that may have reached the server: the caller looks
//! the resource up first. Error bodies are parsed leniently and the HTTP status
//! is always kept. The API key is only ever placed in a header marked
//! sensitive; no message built here contains it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde_json::Value;

use super::retry::{RetryBudget, RetryPolicy, parse_retry_after};
use super::throttle::Throttle;
use crate::config::Limits;
use crate::model::ScimId;
use crate::scim::{self, ListPage};
use crate::secret::ApiKey;

/// Largest response body read.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// How a request failed below HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// Name resolution failed.
    Dns,
    /// TCP connect failed or was refused.
    Connect,
    /// TLS handshake or certificate failure.
    Tls,
    /// No (complete) answer within the timeout.
    Timeout,
    /// The connection broke mid-request or mid-body.
    Reset,
    /// Anything else (redirects, protocol errors).
    Other,
    /// The run was interrupted before the request was sent.
    Interrupted,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Dns => "DNS lookup failed",
            TransportKind::Connect => "connection failed",
            TransportKind::Tls => "TLS failure",
            TransportKind::Timeout => "timed out",
            TransportKind::Reset => "connection reset",
            TransportKind::Other => "request failed",
            TransportKind::Interrupted => "not sent: the run was interrupted",
        })
    }
}

/// A failed SCIM request.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ScimError {
    /// The server answered with an error status (or a SCIM Error inside a 2xx).
    #[error("HTTP {status}{}: {detail}", scim_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Http {
        /// HTTP status.
        status: u16,
        /// SCIM `scimType`.
        scim_type: Option<String>,
        /// Detail text (≤ 500 chars).
        detail: String,
        /// Atlassian `traceId`.
        trace_id: Option<String>,
        /// Parsed Retry-After.
        retry_after: Option<Duration>,
    },
    /// No usable HTTP answer.
    #[error("{kind}: {message}")]
    Transport {
        /// What went wrong.
        kind: TransportKind,
        /// Underlying message.
        message: String,
    },
    /// A success status with a body that is not the expected JSON.
    #[error("HTTP {status} with an unreadable body: {message}")]
    Body {
        /// HTTP status.
        status: u16,
        /// What is wrong with it.
        message: String,
    },
}

impl ScimError {
    /// The HTTP status, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ScimError::Http { status, .. } | ScimError::Body { status, .. } => Some(*status),
            ScimError::Transport { .. } => None,
        }
    }

    /// SCIM `scimType`, when given.
    pub fn scim_type(&self) -> Option<&str> {
        match self {
            ScimError::Http { scim_type, .. } => scim_type.as_deref(),
            _ => None,
        }
    }

    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ScimError::Http { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            ScimError::Transport { kind, .. } => !matches!(
                kind,
                TransportKind::Dns | TransportKind::Tls | TransportKind::Interrupted
            ),
            ScimError::Body { .. } => true,
        }
    }

    /// Whether the server may have acted on the request (so a POST must not be
    /// blindly re-sent).
    pub fn maybe_processed(&self) -> bool {
        match self {
            ScimError::Http { status, .. } => *status != 429 && *status >= 500,
            ScimError::Transport { kind, .. } => !matches!(
                kind,
                TransportKind::Dns
                    | TransportKind::Connect
                    | TransportKind::Tls
                    | TransportKind::Interrupted
            ),
            ScimError::Body { .. } => true,
        }
    }

    /// The Retry-After the server sent.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ScimError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body, when the answer had one.
    pub body: Option<Value>,
    /// Attempts made.
    pub attempts: u32,
}

/// A final failure after retries.
#[derive(Debug)]
pub struct Failure {
    /// The last error.
    pub error: ScimError,
    /// Attempts made.
    pub attempts: u32,
}

/// Request counters of one client (one run).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests sent (attempts).
    pub requests: AtomicU64,
    /// Write requests sent (POST, PUT, PATCH, DELETE).
    pub writes: AtomicU64,
    /// Retries.
    pub retries: AtomicU64,
    /// 429 answers.
    pub throttled: AtomicU64,
    /// Requests that got no HTTP answer (timeout, reset, DNS, TLS).
    pub transport_errors: AtomicU64,
    /// HTTP answers by status code.
    status_counts: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl Stats {
    fn count_status(&self, status: u16) {
        if let Ok(mut m) = self.status_counts.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    /// HTTP answers by status code, so far.
    pub fn statuses(&self) -> std::collections::BTreeMap<u16, u64> {
        self.status_counts
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

/// The SCIM client of one target.
pub struct ScimClient {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    media: HeaderValue,
    throttle: Throttle,
    policy: RetryPolicy,
    budget: RetryBudget,
    cancel: tokio_util::sync::CancellationToken,
    /// Counters.
    pub stats: Stats,
}

/// Whether a URL points at a loopback host (no proxy, plain http allowed).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl ScimClient {
    /// Build a client for `base_url` (already validated by the config).
    pub fn new(
        base_url: &str,
        key: &ApiKey,
        limits: &Limits,
        media_type: &str,
    ) -> Result<ScimClient, String> {
        let base = Url::parse(base_url).map_err(|e| format!("invalid base URL: {e}"))?;
        let loopback = is_loopback(&base);
        let mut builder = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("scimsync/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(limits.concurrency);
        if loopback {
            builder = builder.no_proxy();
        } else {
            builder = builder.https_only(true);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| "the API key contains characters not allowed in a header".to_owned())?;
        auth.set_sensitive(true);
        let media =
            HeaderValue::from_str(media_type).map_err(|_| "invalid media type".to_owned())?;
        Ok(ScimClient {
            http,
            base,
            auth,
            media,
            throttle: Throttle::new(limits.requests_per_second, limits.burst, limits.concurrency),
            policy: RetryPolicy {
                max_attempts: limits.max_attempts,
                initial: limits.initial_delay,
                max_delay: limits.max_delay,
                max_retry_after: limits.max_retry_after,
            },
            budget: RetryBudget::new(limits.max_retries_per_run),
            cancel: tokio_util::sync::CancellationToken::new(),
            stats: Stats::default(),
        })
    }

    /// Stop waiting and retrying once `cancel` fires (SIGINT/SIGTERM): requests
    /// already on the wire finish (within the request timeout), nothing new is sent.
    pub fn set_cancel(&mut self, cancel: tokio_util::sync::CancellationToken) {
        self.cancel = cancel;
    }

    fn interrupted(attempts: u32) -> Failure {
        Failure {
            error: ScimError::Transport {
                kind: TransportKind::Interrupted,
                message: "stopped by a signal before sending".into(),
            },
            attempts,
        }
    }

    /// The target URL for path segments under the base.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut s) = url.path_segments_mut() {
            s.pop_if_empty().extend(segments);
        }
        url
    }

    /// The pacing gate (for reporting pauses).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Send a request with pacing and retries. `idempotent: false` stops
    /// retrying after a failure the server may have acted on.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Reply, Failure> {
        let mut schedule = self.policy.schedule();
        let mut attempts = 0;
        loop {
            let pass = tokio::select! {
                pass = self.throttle.acquire() => pass,
                () = self.cancel.cancelled() => return Err(Self::interrupted(attempts)),
            };
            attempts += 1;
            let result = self.once(method.clone(), url.clone(), body).await;
            self.throttle.observe(
                pass,
                matches!(&result, Err(ScimError::Http { status: 429, .. })),
            );
            let error = match result {
                Ok((status, body)) => {
                    return Ok(Reply {
                        status,
                        body,
                        attempts,
                    });
                }
                Err(e) => e,
            };
            if let ScimError::Http { status: 429, .. } = &error {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            }
            let give_up = !error.retryable()
                || (!idempotent && error.maybe_processed())
                || self.cancel.is_cancelled();
            let delay = if give_up {
                None
            } else {
                schedule.next_delay(attempts, error.retry_after())
            };
            let Some(delay) = delay else {
                return Err(Failure { error, attempts });
            };
            if !self.budget.take() {
                tracing::warn!("the run's retry budget is spent; not retrying");
                return Err(Failure { error, attempts });
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%method, url = %url, attempt = attempts, delay_ms = delay.as_millis() as u64, error = %error, "retrying");
            if matches!(&error, ScimError::Http { status: 429, .. })
                || (error.retry_after().is_some() && error.status() == Some(503))
            {
                // The whole target is told to slow down: pause every worker.
                self.throttle.pause_for(delay);
            } else {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.cancel.cancelled() => return Err(Failure { error, attempts }),
                }
            }
        }
    }

    async fn once(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<(u16, Option<Value>), ScimError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if method != Method::GET {
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
        }
        let started = Instant::now();
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, self.media.clone());
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b).expect("a JSON value serializes");
            req = req.header(CONTENT_TYPE, self.media.clone()).body(bytes);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                self.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                return Err(transport_error(e));
            }
        };
        let status = resp.status();
        self.stats.count_status(status.as_u16());
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
        let bytes = read_body(resp).await;
        tracing::debug!(%method, url = %url, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "scim request");
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) if status.is_success() => return Err(e),
            Err(_) => Vec::new(),
        };
        if !status.is_success() {
            let eb = scim::parse_error_body(&bytes);
            return Err(ScimError::Http {
                status: status.as_u16(),
                scim_type: eb.scim_type,
                detail: if eb.detail.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    eb.detail
                },
                trace_id: eb.trace_id,
                retry_after,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status.as_u16(), None));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ScimError::Body {
            status: status.as_u16(),
            message: format!(
                "invalid JSON ({e}): {}",
                scim::truncate(&String::from_utf8_lossy(&bytes), 120)
            ),
        })?;
        if scim::is_error_message(&value) {
            let eb = scim::parse_error_body(&bytes);
            return Err(ScimError::Http {
                status: eb.status.filter(|s| *s >= 400).unwrap_or(500),
                scim_type: eb.scim_type,
                detail: format!("SCIM error inside an HTTP {status} answer: {}", eb.detail),
                trace_id: eb.trace_id,
                retry_after,
            });
        }
        Ok((status.as_u16(), Some(value)))
    }

    // ---- endpoints ---------------------------------------------------------

    /// GET /ServiceProviderConfig.
    pub async fn service_provider_config(&self) -> Result<Value, Failure> {
        let reply = self
            .send(
                Method::GET,
                self.url(&["ServiceProviderConfig"]),
                None,
                true,
            )
            .await?;
        reply.body.ok_or_else(|| Failure {
            error: ScimError::Body {
                status: reply.status,
                message: "empty body".into(),
            },
            attempts: reply.attempts,
        })
    }

    /// One page of a list: `resource` is `Users` or `Groups`.
    pub async fn list_page(
        &self,
        resource: &str,
        filter: Option<&str>,
        start_index: usize,
        count: usize,
    ) -> Result<ListPage, Failure> {
        let mut url = self.url(&[resource]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(f) = filter {
                q.append_pair("filter", f);
            }
            q.append_pair("startIndex", &start_index.to_string());
            q.append_pair("count", &count.to_string());
        }
        let reply = self.send(Method::GET, url, None, true).await?;
        let body = reply.body.unwrap_or(Value::Null);
        scim::parse_list(&body).map_err(|message| Failure {
            error: ScimError::Body {
                status: reply.status,
                message,
            },
            attempts: reply.attempts,
        })
    }

    /// Every resource of a list, paged on startIndex/totalResults (never on
    /// itemsPerPage), stopping at an empty page.
    pub async fn list_all(
        &self,
        resource: &str,
        page_size: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Value>, Failure> {
        let mut out = Vec::new();
        let mut start = 1;
        loop {
            let page = self.list_page(resource, None, start, page_size).await?;
            let got = page.resources.len();
            out.extend(page.resources);
            progress(out.len(), page.total_results);
            if got == 0 || start + got > page.total_results {
                break;
            }
            start += got;
        }
        Ok(out)
    }

    /// The first resource matching `attr eq "value"`, if any.
    pub async fn find(
        &self,
        resource: &str,
        attr: &str,
        value: &str,
    ) -> Result<Option<Value>, Failure> {
        let filter = format!("{attr} eq {}", filter_string(value));
        let page = self.list_page(resource, Some(&filter), 1, 2).await?;
        Ok(page.resources.into_iter().next())
    }

    /// POST a resource; returns the created resource.
    pub async fn create(&self, resource: &str, body: &Value) -> Result<Reply, Failure> {
        self.send(Method::POST, self.url(&[resource]), Some(body), false)
            .await
    }

    /// PATCH a resource.
    pub async fn patch(
        &self,
        resource: &str,
        id: &ScimId,
        operations: Vec<Value>,
    ) -> Result<Reply, Failure> {
        let body = scim::patch_body(operations);
        self.send(
            Method::PATCH,
            self.url(&[resource, id.as_str()]),
            Some(&body),
            true,
        )
        .await
    }

    /// DELETE a resource; a 404 (already gone, e.g. after a retried delete) counts as done.
    pub async fn delete(&self, resource: &str, id: &ScimId) -> Result<Reply, Failure> {
        match self
            .send(
                Method::DELETE,
                self.url(&[resource, id.as_str()]),
                None,
                true,
            )
            .await
        {
            Err(Failure {
                error: ScimError::Http { status: 404, .. },
                attempts,
            }) if attempts > 1 => Ok(Reply {
                status: 404,
                body: None,
                attempts,
            }),
            other => other,
        }
    }
}

/// Quote a filter value as a SCIM string literal.
pub fn filter_string(value: &str) -> String {
    serde_json::to_string(value).expect("a string serializes")
}

async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, ScimError> {
    let status = resp.status().as_u16();
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_BODY {
                    return Err(ScimError::Body {
                        status,
                        message: format!(
                            "response body larger than {} MiB",
                            MAX_BODY / (1024 * 1024)
                        ),
                    });
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                let mut err = transport_error(e);
                if let ScimError::Transport { kind, .. } = &mut err
                    && *kind == TransportKind::Other
                {
                    *kind = TransportKind::Reset;
                }
                return Err(err);
            }
        }
    }
}

/// Classify a reqwest error; the message is the error chain (URLs, never headers).
fn transport_error(e: reqwest::Error) -> ScimError {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let lower = chain.to_lowercase();
    let kind = if e.is_timeout() {
        TransportKind::Timeout
    } else if lower.contains("dns error")
        || lower.contains("failed to lookup")
        || lower.contains("name or service not known")
    {
        TransportKind::Dns
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        TransportKind::Tls
    } else if e.is_connect() {
        TransportKind::Connect
    } else if e.is_body()
        || e.is_decode()
        || lower.contains("connection closed")
        || lower.contains("reset")
        || lower.contains("incomplete")
    {
        TransportKind::Reset
    } else {
        TransportKind::Other
    };
    ScimError::Transport {
        kind,
        message: scim::truncate(&chain, 300),
    }
}
