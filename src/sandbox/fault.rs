//! Fault rules: scripted failures the sandbox answers instead of (or after) real work.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::counts::Route;
use super::error::{SCIM_JSON, ScimError, empty_response, raw_response};

/// One scripted fault: which requests it hits, what it answers, and how often.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct FaultRule {
    /// The route to hit; `None` matches every route.
    #[serde(default)]
    pub route: Option<Route>,
    /// What to answer.
    pub fault: Fault,
    /// Let this many matching requests through untouched first.
    #[serde(default)]
    pub skip: u32,
    /// Then fire this many times; 0 means forever.
    #[serde(default)]
    pub times: u32,
    /// `false`: answer the fault instead of doing the operation. `true`: do the
    /// operation, then answer the fault instead of the real response (an in-doubt write).
    #[serde(default)]
    pub after: bool,
}

impl FaultRule {
    /// A rule that fires `times` times (0 = forever) on `route`, before the operation.
    pub fn new(route: Option<Route>, fault: Fault, times: u32) -> Self {
        FaultRule {
            route,
            fault,
            skip: 0,
            times,
            after: false,
        }
    }

    /// Shorthand for a status fault, e.g. `FaultRule::status(Some(Route::CreateUser), 503, 1)`.
    pub fn status(route: Option<Route>, status: u16, times: u32) -> Self {
        Self::new(
            route,
            Fault::Status {
                status,
                retry_after: None,
                body: None,
                content_type: None,
            },
            times,
        )
    }

    /// Sets `skip`.
    pub fn skipping(mut self, skip: u32) -> Self {
        self.skip = skip;
        self
    }

    /// Sets `after` to true: the operation happens, then the fault replaces its response.
    pub fn after_operation(mut self) -> Self {
        self.after = true;
        self
    }
}

/// The kind of failure a [`FaultRule`] produces.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer `status`. `retry_after` becomes the `Retry-After` header verbatim (seconds
    /// or an HTTP-date). `body` defaults to a SCIM error; `content_type` defaults to
    /// `text/html` when the body starts with `<`, else `application/scim+json`.
    Status {
        /// HTTP status code (an invalid code becomes 500).
        status: u16,
        /// Value of the `Retry-After` header.
        #[serde(default)]
        retry_after: Option<String>,
        /// Response body.
        #[serde(default)]
        body: Option<String>,
        /// Content type of `body`.
        #[serde(default)]
        content_type: Option<String>,
    },
    /// Sleep, then answer normally (before or after the operation, per `after`).
    Delay {
        /// How long to sleep.
        millis: u64,
    },
    /// Send a 200 head and part of a JSON body, then abort the connection.
    Reset,
    /// Answer a truncated JSON document as `application/scim+json`.
    MalformedBody {
        /// HTTP status code.
        status: u16,
    },
    /// Answer no body at all.
    EmptyBody {
        /// HTTP status code.
        status: u16,
    },
}

/// The truncated document served by [`Fault::MalformedBody`] and [`Fault::Reset`].
pub(crate) const TRUNCATED_JSON: &str = r#"{"schemas":["urn:ietf:params:scim:api:"#;

/// A rule plus its remaining budget.
#[derive(Debug)]
struct ActiveRule {
    rule: FaultRule,
    /// Fired so far.
    fired: u32,
}

/// The ordered list of active rules.
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    rules: Vec<ActiveRule>,
}

impl FaultTable {
    pub(crate) fn push(&mut self, rule: FaultRule) {
        self.rules.push(ActiveRule { rule, fired: 0 });
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rules still active, with `skip`/`times` showing what is left.
    pub(crate) fn snapshot(&self) -> Vec<FaultRule> {
        self.rules
            .iter()
            .map(|a| {
                let mut r = a.rule.clone();
                if r.times != 0 {
                    r.times -= a.fired;
                }
                r
            })
            .collect()
    }

    /// Consult the first rule matching `route`: either consume one skip (and return
    /// `None`) or fire it (returning the fault and whether it applies after the op).
    pub(crate) fn next_for(&mut self, route: Route) -> Option<(Fault, bool)> {
        let idx = self
            .rules
            .iter()
            .position(|a| a.rule.route.is_none_or(|r| r == route))?;
        let active = &mut self.rules[idx];
        if active.rule.skip > 0 {
            active.rule.skip -= 1;
            return None;
        }
        active.fired = active.fired.saturating_add(1);
        let out = (active.rule.fault.clone(), active.rule.after);
        if active.rule.times != 0 && active.fired >= active.rule.times {
            self.rules.remove(idx);
        }
        Some(out)
    }
}

/// Build the response for a non-delay fault.
pub(crate) fn fault_response(fault: &Fault) -> Response {
    match fault {
        Fault::Status {
            status,
            retry_after,
            body,
            content_type,
        } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = match body {
                Some(text) => {
                    let ct = content_type.clone().unwrap_or_else(|| {
                        if text.trim_start().starts_with('<') {
                            "text/html; charset=utf-8".to_owned()
                        } else {
                            SCIM_JSON.to_owned()
                        }
                    });
                    raw_response(code, &ct, text.clone())
                }
                None => {
                    let err = ScimError::new(code, None, format!("injected fault: HTTP {status}"));
                    let bytes = serde_json::to_vec(&err.body()).unwrap_or_default();
                    let ct = content_type.as_deref().unwrap_or(SCIM_JSON);
                    raw_response(code, ct, bytes)
                }
            };
            if let Some(ra) = retry_after
                && let Ok(v) = HeaderValue::from_str(ra)
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Fault::MalformedBody { status } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            raw_response(code, SCIM_JSON, TRUNCATED_JSON)
        }
        Fault::EmptyBody { status } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            let mut resp = empty_response(code);
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
            resp
        }
        Fault::Reset => reset_response(),
        // Delays are handled by the dispatcher; answering one here means "no body".
        Fault::Delay { .. } => empty_response(StatusCode::OK),
    }
}

/// A 200 announcing more bytes than it sends: one partial chunk, a short pause so the
/// head and chunk reach the client, then a stream error that makes hyper drop the socket.
fn reset_response() -> Response {
    let stream = futures_util::stream::unfold(0u8, |step| async move {
        match step {
            0 => Some((Ok::<Bytes, std::io::Error>(Bytes::from(TRUNCATED_JSON)), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "sandbox: injected connection reset",
                    )),
                    2,
                ))
            }
            _ => None,
        }
    });
    let mut resp = raw_response(StatusCode::OK, SCIM_JSON, Body::from_stream(stream));
    let declared = (TRUNCATED_JSON.len() * 4).to_string();
    if let Ok(v) = HeaderValue::from_str(&declared) {
        resp.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_rule(route: Option<Route>, status: u16, times: u32) -> FaultRule {
        FaultRule::status(route, status, times)
    }

    #[test]
    fn skip_then_times_then_gone() {
        let mut t = FaultTable::default();
        t.push(status_rule(Some(Route::CreateUser), 503, 2).skipping(1));
        assert!(t.next_for(Route::ListUsers).is_none());
        assert!(t.next_for(Route::CreateUser).is_none()); // skipped
        assert!(t.next_for(Route::CreateUser).is_some());
        assert_eq!(t.snapshot()[0].times, 1);
        assert!(t.next_for(Route::CreateUser).is_some());
        assert!(t.next_for(Route::CreateUser).is_none());
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn forever_rule_and_any_route() {
        let mut t = FaultTable::default();
        t.push(status_rule(None, 500, 0));
        for _ in 0..10 {
            assert!(t.next_for(Route::GetGroup).is_some());
        }
        t.clear();
        assert!(t.next_for(Route::GetGroup).is_none());
    }

    #[test]
    fn serde_shape() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"route":"create_user","fault":{"kind":"status","status":429,"retry_after":"2"},"times":1}"#,
        )
        .unwrap();
        assert_eq!(rule.route, Some(Route::CreateUser));
        assert!(matches!(rule.fault, Fault::Status { status: 429, .. }));
        assert!(!rule.after);
        let rule: FaultRule =
            serde_json::from_str(r#"{"fault":{"kind":"reset"},"after":true}"#).unwrap();
        assert!(rule.route.is_none() && rule.after && rule.times == 0);
    }
}
