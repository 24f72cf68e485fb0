//! A real third-party SCIM server for the interop tests: python-scim
//! `scim2-server` (pinned 0.8.3), started as a child process on 127.0.0.1 with
//! a free port and a bearer token, killed when dropped. Its state is read back
//! through its own API with plain HTTP GETs ([`Scim2Server::users`]), never
//! through scimsync's code.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Environment variable naming the `scim2-server` executable.
pub const SERVER_ENV: &str = "SCIMSYNC_SCIM2_SERVER";
/// Set to `1` to skip the interop tests (never set in CI).
pub const SKIP_ENV: &str = "SCIMSYNC_SKIP_INTEROP";

/// The bearer token every interop server accepts.
pub const TOKEN: &str = "interop-test-token";

/// Where `.ci/run` and the README install the server by default.
fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/scim2-venv/bin/scim2-server")
}

/// The server executable, `None` when the interop tests are to be skipped
/// (announced on the real stderr, which the test harness does not capture).
/// Panics with install instructions when it cannot be found.
pub fn executable() -> Option<PathBuf> {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "*** SKIPPED: interop test against scim2-server ({SKIP_ENV}=1): \
             this run did NOT test interop with a third-party SCIM server ***"
        );
        return None;
    }
    let path = std::env::var_os(SERVER_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(default_path);
    assert!(
        path.is_file(),
        "scim2-server not found at {} (set {SERVER_ENV} to its path). Install it with:\n  \
         python3 -m venv target/scim2-venv && \
         target/scim2-venv/bin/pip install -r tests/it/interop/requirements.txt\n\
         or set {SKIP_ENV}=1 to skip the interop tests",
        path.display()
    );
    Some(path)
}

/// A running `scim2-server`.
pub struct Scim2Server {
    child: Child,
    port: u16,
    log: PathBuf,
    http: reqwest::Client,
}

impl Drop for Scim2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `ServiceProviderConfig` document like the server's default one, with
/// `filter.maxResults` set to `max_results` (the server caps every page at it).
pub fn service_provider_config(max_results: u32) -> String {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "bearer_token",
            "description": "HTTP Bearer Token"
        }]
    })
    .to_string()
}

impl Scim2Server {
    /// Start the server with its logs in `dir`; `spc` is an optional
    /// `--service-provider-config` file. `None` when skipped.
    pub async fn start(dir: &Path, spc: Option<&Path>) -> Option<Scim2Server> {
        let exe = executable()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut last = String::new();
        // The port is chosen by binding :0 and releasing it; another process
        // may take it in between, so a failed start is tried again.
        for attempt in 1..=3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let log = dir.join(format!("scim2-server-{port}.log"));
            let file = std::fs::File::create(&log).expect("server log file");
            let mut cmd = Command::new(&exe);
            cmd.args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
                .args(["--bearer-token", TOKEN])
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log file"))
                .stderr(file);
            if let Some(spc) = spc {
                cmd.arg("--service-provider-config").arg(spc);
            }
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot start {}: {e}", exe.display());
            });
            let mut server = Scim2Server {
                child,
                port,
                log,
                http: http.clone(),
            };
            match server.wait_ready().await {
                Ok(()) => return Some(server),
                Err(e) => last = format!("attempt {attempt}: {e}\n{}", server.log_text()),
            }
        }
        panic!("scim2-server did not start: {last}");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        // A liveness bound, not a timing assertion: a healthy server answers
        // within a second or two.
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/ServiceProviderConfig", self.base_url());
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited ({status})"));
            }
            if let Ok(resp) = self.http.get(&url).bearer_auth(TOKEN).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("no answer from /v2/ServiceProviderConfig".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT/v2`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v2", self.port)
    }

    /// Everything the server logged (one access line per request).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Requests the server logged whose method is not GET (access log lines
    /// such as `"PATCH /v2/Users/… HTTP/1.1" 204 0`).
    pub fn logged_writes(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| {
                ["\"POST ", "\"PUT ", "\"PATCH ", "\"DELETE "]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .count()
    }

    /// GET a path under the base URL; returns (status, JSON body or Null).
    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path_and_query}", self.base_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("scim2-server answers");
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Every resource of `Users` or `Groups`, read page by page on
    /// startIndex/totalResults (the server caps pages at `filter.maxResults`).
    pub async fn list(&self, resource: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut start = 1;
        loop {
            let (status, page) = self
                .get(&format!("/{resource}?startIndex={start}&count=1000"))
                .await;
            assert_eq!(status, 200, "GET /{resource}: {page}");
            let got = page["Resources"].as_array().cloned().unwrap_or_default();
            let total = page["totalResults"].as_u64().expect("totalResults") as usize;
            let n = got.len();
            out.extend(got);
            if n == 0 || out.len() >= total {
                assert_eq!(out.len(), total, "paging /{resource} lost resources");
                return out;
            }
            start += n;
        }
    }

    /// Every user.
    pub async fn users(&self) -> Vec<Value> {
        self.list("Users").await
    }

    /// Every group.
    pub async fn groups(&self) -> Vec<Value> {
        self.list("Groups").await
    }

    /// POST a resource directly (an account that existed before scimsync).
    pub async fn create(&self, resource: &str, body: &Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/{resource}", self.base_url()))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .expect("scim2-server answers");
        assert_eq!(resp.status().as_u16(), 201, "direct POST /{resource}");
        resp.json().await.expect("a JSON resource")
    }
}
