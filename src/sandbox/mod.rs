//! An in-process stand-in for Atlassian Cloud's SCIM 2.0 user-provisioning API.
//!
//! The real directory cannot be used from tests: it is slow, shared, rate limited in
//! undocumented ways and has no "undo". This module serves the same surface
//! (`/scim/directory/{directoryId}/Users`, `/Groups`, discovery endpoints) with the
//! same quirks a client has to survive:
//!
//! - 401 answers carry a non-SCIM `{"error","traceId"}` body;
//! - SCIM errors render `status` as a string (`"409"`);
//! - `userName` and the primary email are unique (case-insensitive), `externalId` is not;
//! - list filters accept a single `eq` on `userName`/`externalId` (Users) or
//!   `displayName` (Groups); any `emails` filter is a 400;
//! - pages hold at most [`SandboxConfig::max_page_size`] resources and `itemsPerPage`
//!   echoes the requested `count` (10000 when none was given), not the page length;
//! - groups cannot be renamed; deleting a user removes it from every group, while a
//!   deactivated user (`active: false`) keeps its memberships;
//! - user resources list their groups in the read-only `groups` attribute (omitted
//!   when the user belongs to none).
//!
//! Request bodies may be `application/json` or `application/scim+json` (or carry no
//! content type); other media types get 415.
//!
//! On top of that it counts requests per [`Route`] and can inject faults
//! ([`FaultRule`]): error statuses with or without `Retry-After`, delays, connection
//! resets mid-body, malformed or empty bodies, before or after the write happened.
//! An optional token bucket ([`RateLimit`]) answers 429 like a throttling gateway.
//!
//! Order of checks for each SCIM request: count it, then the rate limit (so
//! unauthenticated requests use tokens too, as at a gateway), then fault rules, then
//! authentication, then the directory id, then the handler. The `/_sandbox/*`
//! control endpoints skip all of that and are not counted.

mod counts;
mod discovery;
mod error;
mod fault;
mod filter;
mod order;
mod patch;
mod ratelimit;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use counts::{RequestCounts, Route};
pub use fault::{Fault, FaultRule};

use counts::{Classified, Target, classify};
use error::{ScimError, empty_response, raw_response, scim_response};
use fault::{FaultTable, fault_response};
use filter::parse_eq;
use patch::parse_patch_body;
use ratelimit::{TokenBucket, retry_after_secs};
use store::{IdGen, Page, Store, UserFilter};

/// Directory id used by [`SandboxConfig::default`].
pub const DEFAULT_DIRECTORY_ID: &str = "11111111-2222-3333-4444-555555555555";
/// API key accepted by [`SandboxConfig::default`].
pub const DEFAULT_API_KEY: &str = "sandbox-key";

/// Largest request body the sandbox reads.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Schema URN of list responses.
const LIST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// `itemsPerPage` reported when the client did not ask for a `count`.
const UNREQUESTED_ITEMS_PER_PAGE: u64 = 10_000;

/// How a sandbox behaves.
#[derive(Clone)]
pub struct SandboxConfig {
    /// The `{directoryId}` path segment; any other id answers 404.
    pub directory_id: String,
    /// The bearer key the server accepts.
    pub api_key: String,
    /// Most resources returned per list page (Atlassian: 100).
    pub max_page_size: usize,
    /// Optional server-side rate limit answering 429.
    pub rate_limit: Option<RateLimit>,
    /// Most members per group; more answers 400 `tooMany` (Atlassian's hard
    /// limit, 290,000, by default).
    pub max_group_members: usize,
}

/// Atlassian's hard maximum of members per group ("Users and Groups limits").
pub const ATLASSIAN_MAX_GROUP_MEMBERS: usize = 290_000;

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            directory_id: DEFAULT_DIRECTORY_ID.to_owned(),
            api_key: DEFAULT_API_KEY.to_owned(),
            max_page_size: 100,
            rate_limit: None,
            max_group_members: ATLASSIAN_MAX_GROUP_MEMBERS,
        }
    }
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("directory_id", &self.directory_id)
            .field("api_key", &"<redacted>")
            .field("max_page_size", &self.max_page_size)
            .field("rate_limit", &self.rate_limit)
            .field("max_group_members", &self.max_group_members)
            .finish()
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Bucket size (0 is treated as 1).
    pub burst: u32,
    /// Whether 429 answers carry `Retry-After` (whole seconds, at least 1).
    pub send_retry_after: bool,
}

struct Inner {
    cfg: SandboxConfig,
    base_path: String,
    ids: IdGen,
    store: Mutex<Store>,
    counts: Mutex<RequestCounts>,
    faults: Mutex<FaultTable>,
    bucket: Option<Mutex<TokenBucket>>,
    /// `http://host:port` once bound; used for `meta.location` outside a request.
    origin: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fake Atlassian SCIM directory; cheap to clone (shared state).
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("base_path", &self.inner.base_path)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// An empty directory.
    pub fn new(cfg: SandboxConfig) -> Sandbox {
        let base_path = format!("/scim/directory/{}", cfg.directory_id);
        let now = Instant::now();
        Sandbox {
            inner: Arc::new(Inner {
                bucket: cfg
                    .rate_limit
                    .as_ref()
                    .map(|rl| Mutex::new(TokenBucket::new(rl, now))),
                store: Mutex::new(
                    Store::new(base_path.clone()).with_max_group_members(cfg.max_group_members),
                ),
                base_path,
                cfg,
                ids: IdGen::new(),
                counts: Mutex::new(RequestCounts::default()),
                faults: Mutex::new(FaultTable::default()),
                origin: Mutex::new(None),
            }),
        }
    }

    /// The configuration this sandbox runs with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.cfg
    }

    /// An axum router serving the SCIM API and the `/_sandbox/*` control endpoints.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/_sandbox/counts", get(ctl_counts))
            .route("/_sandbox/reset-counts", post(ctl_reset_counts))
            .route(
                "/_sandbox/faults",
                post(ctl_add_fault).delete(ctl_clear_faults).get(ctl_faults),
            )
            .route("/_sandbox/state", get(ctl_state))
            .route("/_sandbox/users", post(ctl_insert_user))
            .route("/_sandbox/groups", post(ctl_insert_group))
            .route("/_sandbox/drift", post(ctl_drift))
            .fallback(scim_entry)
            .with_state(self.clone())
    }

    /// Serve on `listener` until `shutdown` completes (then drain gracefully).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            self.set_origin(addr);
        }
        let router = self.router();
        let listener = listener.tap_io(|tcp| {
            // Small request/response pairs: do not let Nagle delay them.
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Bind 127.0.0.1:0, spawn the server on the current tokio runtime, return a handle.
    pub async fn start(cfg: SandboxConfig) -> std::io::Result<RunningSandbox> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let sandbox = Sandbox::new(cfg);
        sandbox.set_origin(addr);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sandbox.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(RunningSandbox {
            addr,
            sandbox,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    fn set_origin(&self, addr: SocketAddr) {
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        *lock(&self.inner.origin) = Some(format!("http://{addr}"));
    }

    fn stored_origin(&self) -> String {
        lock(&self.inner.origin).clone().unwrap_or_default()
    }

    /// `/scim/directory/{directory_id}`.
    pub fn base_path(&self) -> String {
        self.inner.base_path.clone()
    }

    /// A snapshot of the request counters.
    pub fn counts(&self) -> RequestCounts {
        lock(&self.inner.counts).clone()
    }

    /// Zero the request counters.
    pub fn reset_counts(&self) {
        *lock(&self.inner.counts) = RequestCounts::default();
    }

    /// Add a fault rule after the existing ones (the first matching rule wins).
    pub fn inject(&self, rule: FaultRule) {
        lock(&self.inner.faults).push(rule);
    }

    /// Remove every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// The fault rules still active, `skip`/`times` showing what is left.
    pub fn faults(&self) -> Vec<FaultRule> {
        lock(&self.inner.faults).snapshot()
    }

    /// Current user resources, sorted by id.
    pub fn users(&self) -> Vec<Value> {
        let origin = self.stored_origin();
        lock(&self.inner.store).all_users(&origin)
    }

    /// Current groups (members inline), sorted by id.
    pub fn groups(&self) -> Vec<Value> {
        let origin = self.stored_origin();
        lock(&self.inner.store).all_groups(&origin)
    }

    /// One user resource by id.
    pub fn user(&self, id: &str) -> Option<Value> {
        let origin = self.stored_origin();
        lock(&self.inner.store).render_user(id, &origin)
    }

    /// One group resource by id.
    pub fn group(&self, id: &str) -> Option<Value> {
        let origin = self.stored_origin();
        lock(&self.inner.store).render_group(id, &origin)
    }

    /// Number of users and groups.
    pub fn sizes(&self) -> (usize, usize) {
        let store = lock(&self.inner.store);
        (store.user_count(), store.group_count())
    }

    /// Seed a pre-existing account with the same validation as POST; returns its id.
    /// A string `id` in `user` is kept (for deterministic fixtures).
    pub fn insert_user(&self, user: Value) -> Result<String, String> {
        lock(&self.inner.store)
            .create_user(user, &self.inner.ids, true)
            .map_err(|e| e.detail)
    }

    /// Seed a group (members must exist); returns its id. A string `id` is kept.
    pub fn insert_group(&self, group: Value) -> Result<String, String> {
        lock(&self.inner.store)
            .create_group(group, &self.inner.ids, true)
            .map_err(|e| e.detail)
    }

    /// Simulate an admin edit made in Atlassian (drift): a PATCH `replace` of `path`
    /// (any path PATCH accepts), or a `remove` when `value` is null. False if the user
    /// does not exist or the edit is rejected.
    pub fn set_user_attr(&self, id: &str, path: &str, value: Value) -> bool {
        lock(&self.inner.store).set_user_attr(id, path, value)
    }

    /// Simulate an admin editing a group's members in Atlassian (drift):
    /// add and remove user ids. False if the group does not exist.
    pub fn edit_group_members(&self, gid: &str, add: &[&str], remove: &[&str]) -> bool {
        lock(&self.inner.store).edit_members(gid, add, remove)
    }

    // ---- request pipeline ----------------------------------------------------------

    fn record(&self, route: Route) {
        lock(&self.inner.counts).record(route);
    }

    /// A 429 if the bucket is empty.
    fn throttle(&self) -> Option<Response> {
        let bucket = self.inner.bucket.as_ref()?;
        let wait = lock(bucket).try_take(Instant::now()).err()?;
        let err = ScimError::new(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            "Rate limit exceeded. Try again later.",
        );
        let mut resp = err.into_response();
        if self
            .inner
            .cfg
            .rate_limit
            .as_ref()
            .is_some_and(|rl| rl.send_retry_after)
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs(wait).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        Some(resp)
    }

    fn finish(&self, route: Route, resp: Response) -> Response {
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            lock(&self.inner.counts).throttled += 1;
        }
        tracing::debug!(?route, status = resp.status().as_u16(), "sandbox request");
        resp
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .is_some_and(|(scheme, key)| {
                scheme.eq_ignore_ascii_case("bearer")
                    && constant_time_eq(key.trim().as_bytes(), self.inner.cfg.api_key.as_bytes())
            })
    }

    fn unauthorized(&self) -> Response {
        let body = json!({"error": "Unauthorized", "traceId": self.inner.ids.hex(16)});
        raw_response(
            StatusCode::UNAUTHORIZED,
            "application/json",
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    }

    /// Everything after counting, throttling and faults. Never awaits.
    fn handle(&self, c: &Classified, parts: &Parts, body: &Bytes) -> Response {
        if !self.authorized(&parts.headers) {
            return self.unauthorized();
        }
        match c.directory.as_deref() {
            None => return ScimError::not_found("Resource not found").into_response(),
            Some(dir) if dir != self.inner.cfg.directory_id => {
                return ScimError::not_found(format!("directory {dir} not found")).into_response();
            }
            Some(_) => {}
        }
        let origin = request_origin(&parts.headers).unwrap_or_else(|| self.stored_origin());
        let result = match &c.target {
            Target::ServiceProviderConfig => Ok(ok(discovery::service_provider_config(
                self.inner.cfg.max_page_size,
                &format!("{origin}{}/ServiceProviderConfig", self.inner.base_path),
            ))),
            Target::Schemas(which) => {
                let base = format!("{origin}{}", self.inner.base_path);
                discovery::schemas(which.as_deref(), &base)
                    .map(ok)
                    .ok_or_else(|| ScimError::not_found("schema not found"))
            }
            Target::ResourceTypes(which) => {
                let base = format!("{origin}{}", self.inner.base_path);
                discovery::resource_types(which.as_deref(), &base)
                    .map(ok)
                    .ok_or_else(|| ScimError::not_found("resource type not found"))
            }
            Target::Users if c.route == Route::ListUsers => self.list_users(&parts.uri, &origin),
            Target::Users => self.create_user(&parts.headers, body, &origin),
            Target::User(id) => self.user_op(c.route, id, &parts.headers, body, &origin),
            Target::Groups if c.route == Route::ListGroups => self.list_groups(&parts.uri, &origin),
            Target::Groups => self.create_group(&parts.headers, body, &origin),
            Target::Group(id) => self.group_op(c.route, id, &parts.headers, body, &origin),
            Target::MethodNotAllowed => Err(ScimError::not_found(format!(
                "Resource not found: method {} is not supported on this path",
                parts.method
            ))),
            Target::NotFound => Err(ScimError::not_found("Resource not found")),
        };
        result.unwrap_or_else(ScimError::into_response)
    }

    fn list_users(&self, uri: &Uri, origin: &str) -> Result<Response, ScimError> {
        let q = ListQuery::parse(uri, self.inner.cfg.max_page_size)?;
        let filter = match q.filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(user_filter(raw)?),
        };
        let page = lock(&self.inner.store).list_users(filter.as_ref(), q.offset(), q.count, origin);
        Ok(ok(q.response(page)))
    }

    fn list_groups(&self, uri: &Uri, origin: &str) -> Result<Response, ScimError> {
        let q = ListQuery::parse(uri, self.inner.cfg.max_page_size)?;
        let name = match q.filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => {
                let f = parse_eq(raw).map_err(ScimError::invalid_filter)?;
                match (f.attr.eq_ignore_ascii_case("displayName"), f.value) {
                    (true, Value::String(s)) => Some(s),
                    _ => {
                        return Err(ScimError::invalid_filter(format!(
                            "unsupported filter [{raw}]; only displayName eq \"...\" is supported"
                        )));
                    }
                }
            }
        };
        let page =
            lock(&self.inner.store).list_groups(name.as_deref(), q.offset(), q.count, origin);
        Ok(ok(q.response(page)))
    }

    fn create_user(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
        origin: &str,
    ) -> Result<Response, ScimError> {
        let value = parse_body(headers, body)?;
        let rendered = {
            let mut store = lock(&self.inner.store);
            let id = store.create_user(value, &self.inner.ids, false)?;
            store.render_user(&id, origin)
        };
        Ok(created(rendered))
    }

    fn create_group(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
        origin: &str,
    ) -> Result<Response, ScimError> {
        let value = parse_body(headers, body)?;
        let rendered = {
            let mut store = lock(&self.inner.store);
            let id = store.create_group(value, &self.inner.ids, false)?;
            store.render_group(&id, origin)
        };
        Ok(created(rendered))
    }

    fn user_op(
        &self,
        route: Route,
        id: &str,
        headers: &HeaderMap,
        body: &Bytes,
        origin: &str,
    ) -> Result<Response, ScimError> {
        let not_found =
            || ScimError::not_found(format!("Resource [USER]: with id[{id}] does not exist."));
        let parsed = match route {
            Route::ReplaceUser | Route::PatchUser => Some(parse_body(headers, body)?),
            _ => None,
        };
        let mut store = lock(&self.inner.store);
        match (route, parsed) {
            (Route::DeleteUser, _) => {
                store.delete_user(id)?;
                return Ok(empty_response(StatusCode::NO_CONTENT));
            }
            (Route::ReplaceUser, Some(v)) => store.replace_user(id, v)?,
            (Route::PatchUser, Some(v)) => {
                if !store.user_exists(id) {
                    return Err(not_found());
                }
                store.patch_user(id, &parse_patch_body(&v)?)?;
            }
            _ => {}
        }
        let rendered = store.render_user(id, origin).ok_or_else(not_found)?;
        drop(store);
        Ok(ok(rendered))
    }

    fn group_op(
        &self,
        route: Route,
        id: &str,
        headers: &HeaderMap,
        body: &Bytes,
        origin: &str,
    ) -> Result<Response, ScimError> {
        let not_found =
            || ScimError::not_found(format!("Resource [GROUP]: with id[{id}] does not exist."));
        let parsed = match route {
            Route::ReplaceGroup | Route::PatchGroup => Some(parse_body(headers, body)?),
            _ => None,
        };
        let mut store = lock(&self.inner.store);
        match (route, parsed) {
            (Route::DeleteGroup, _) => {
                store.delete_group(id)?;
                return Ok(empty_response(StatusCode::NO_CONTENT));
            }
            (Route::ReplaceGroup, Some(v)) => store.replace_group(id, v)?,
            (Route::PatchGroup, Some(v)) => {
                if !store.group_exists(id) {
                    return Err(not_found());
                }
                store.patch_group(id, &parse_patch_body(&v)?)?;
            }
            _ => {}
        }
        let rendered = store.render_group(id, origin).ok_or_else(not_found)?;
        drop(store);
        Ok(ok(rendered))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `http://{Host}` from the request, if it sent one.
fn request_origin(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    (!host.is_empty()).then(|| format!("http://{host}"))
}

fn ok(value: Value) -> Response {
    scim_response(StatusCode::OK, &value)
}

/// 201 with a `Location` header taken from `meta.location`.
fn created(rendered: Option<Value>) -> Response {
    let Some(value) = rendered else {
        return ScimError::new(StatusCode::INTERNAL_SERVER_ERROR, None, "resource vanished")
            .into_response();
    };
    let mut resp = scim_response(StatusCode::CREATED, &value);
    if let Some(loc) = value["meta"]["location"].as_str()
        && let Ok(v) = HeaderValue::from_str(loc)
    {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Parse a JSON request body (`application/json` or `application/scim+json`).
fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ScimError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let media = ct
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !(media == "application/json" || media.ends_with("+json")) {
            return Err(ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                format!("unsupported content type [{media}]"),
            ));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("request body is empty"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("request body is not valid JSON: {e}")))
}

/// The one Users filter form Atlassian accepts.
fn user_filter(raw: &str) -> Result<UserFilter, ScimError> {
    if raw
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("emails"))
    {
        return Err(ScimError::invalid_filter(format!(
            "filtering on emails is not supported: [{raw}]"
        )));
    }
    let f = parse_eq(raw).map_err(ScimError::invalid_filter)?;
    let unsupported = || {
        ScimError::invalid_filter(format!(
            "unsupported filter [{raw}]; only userName or externalId eq \"...\" is supported"
        ))
    };
    let Value::String(v) = f.value else {
        return Err(unsupported());
    };
    if f.attr.eq_ignore_ascii_case("userName") {
        Ok(UserFilter::UserName(v))
    } else if f.attr.eq_ignore_ascii_case("externalId") {
        Ok(UserFilter::ExternalId(v))
    } else {
        Err(unsupported())
    }
}

/// `filter`, `startIndex` and `count` of a list request.
struct ListQuery {
    filter: Option<String>,
    start_index: usize,
    count: usize,
    items_per_page: u64,
}

impl ListQuery {
    fn parse(uri: &Uri, max_page: usize) -> Result<Self, ScimError> {
        let Query(params) = Query::<HashMap<String, String>>::try_from_uri(uri)
            .map_err(|e| ScimError::invalid_value(format!("invalid query string: {e}")))?;
        let int = |name: &str| -> Result<Option<i64>, ScimError> {
            params
                .get(name)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")))
                })
                .transpose()
        };
        let start_index = usize::try_from(int("startIndex")?.unwrap_or(1).max(1)).unwrap_or(1);
        let (count, items_per_page) = match int("count")? {
            None => (max_page, UNREQUESTED_ITEMS_PER_PAGE),
            Some(n) => {
                let n = n.max(0);
                let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
                (n_usize.min(max_page), n.unsigned_abs())
            }
        };
        Ok(ListQuery {
            filter: params.get("filter").cloned(),
            start_index,
            count,
            items_per_page,
        })
    }

    fn offset(&self) -> usize {
        self.start_index - 1
    }

    fn response(&self, page: Page) -> Value {
        json!({
            "schemas": [LIST_URN],
            "totalResults": page.total,
            "startIndex": self.start_index,
            "itemsPerPage": self.items_per_page,
            "Resources": page.resources
        })
    }
}

/// The fallback handler: every request that is not a control endpoint.
async fn scim_entry(State(sb): State<Sandbox>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let c = classify(&parts.method, parts.uri.path());
    sb.record(c.route);
    if let Some(resp) = sb.throttle() {
        return sb.finish(c.route, resp);
    }
    let fired = lock(&sb.inner.faults).next_for(c.route);
    let mut after = None;
    match fired {
        Some((fault, true)) => after = Some(fault),
        Some((Fault::Delay { millis }, false)) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
        Some((fault, false)) => return sb.finish(c.route, fault_response(&fault)),
        None => {}
    }
    let resp = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => sb.handle(&c, &parts, &bytes),
        Err(e) => ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!("could not read request body: {e}"),
        )
        .into_response(),
    };
    let resp = match after {
        None => resp,
        Some(Fault::Delay { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            resp
        }
        Some(fault) => fault_response(&fault),
    };
    sb.finish(c.route, resp)
}

// ---- control endpoints ---------------------------------------------------------------

fn control_json(status: StatusCode, value: &Value) -> Response {
    raw_response(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn control_error(status: StatusCode, msg: impl fmt::Display) -> Response {
    control_json(status, &json!({"error": msg.to_string()}))
}

async fn ctl_counts(State(sb): State<Sandbox>) -> Response {
    control_json(StatusCode::OK, &json!(sb.counts()))
}

async fn ctl_reset_counts(State(sb): State<Sandbox>) -> Response {
    sb.reset_counts();
    StatusCode::NO_CONTENT.into_response()
}

async fn ctl_add_fault(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultRule>(&body) {
        Ok(rule) => {
            sb.inject(rule);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => control_error(StatusCode::BAD_REQUEST, format!("invalid fault rule: {e}")),
    }
}

async fn ctl_clear_faults(State(sb): State<Sandbox>) -> Response {
    sb.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn ctl_faults(State(sb): State<Sandbox>) -> Response {
    control_json(StatusCode::OK, &json!(sb.faults()))
}

async fn ctl_state(State(sb): State<Sandbox>) -> Response {
    control_json(
        StatusCode::OK,
        &json!({"users": sb.users(), "groups": sb.groups()}),
    )
}

async fn ctl_insert_user(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let inserted = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| sb.insert_user(v));
    match inserted {
        Ok(id) => control_json(StatusCode::CREATED, &json!({"id": id})),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn ctl_insert_group(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let inserted = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| sb.insert_group(v));
    match inserted {
        Ok(id) => control_json(StatusCode::CREATED, &json!({"id": id})),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

/// Body of `POST /_sandbox/drift`.
#[derive(Deserialize)]
struct DriftRequest {
    id: String,
    path: String,
    #[serde(default)]
    value: Value,
}

async fn ctl_drift(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match serde_json::from_slice::<DriftRequest>(&body) {
        Ok(d) => {
            if sb.set_user_attr(&d.id, &d.path, d.value) {
                StatusCode::NO_CONTENT.into_response()
            } else {
                control_error(
                    StatusCode::BAD_REQUEST,
                    "unknown user, or the edit was rejected",
                )
            }
        }
        Err(e) => control_error(
            StatusCode::BAD_REQUEST,
            format!("invalid drift request: {e}"),
        ),
    }
}

// ---- running server handle -------------------------------------------------------------

/// A sandbox served on a local port; the server stops when this is dropped.
#[derive(Debug)]
pub struct RunningSandbox {
    /// Where the server listens (127.0.0.1 and an ephemeral port).
    pub addr: SocketAddr,
    /// The shared state, for counters, faults and seeding.
    pub sandbox: Sandbox,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningSandbox {
    /// `http://127.0.0.1:PORT/scim/directory/{id}`: the SCIM base URL for a client.
    pub fn base_url(&self) -> String {
        format!("{}{}", self.origin(), self.sandbox.base_path())
    }

    /// `http://127.0.0.1:PORT`: where the `/_sandbox/*` control endpoints live.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, let in-flight requests finish (up to 5 s), then return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
