//! `scimsync sandbox`: the built-in Atlassian-like SCIM server, for trying a
//! config before production. Listens on 127.0.0.1 only.

use clap::Args;

use super::{CliError, Printer};
use crate::exit::ExitStatus;
use crate::sandbox::{RateLimit, Sandbox, SandboxConfig};

/// `sandbox` options.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// The directory id in the base URL path.
    #[arg(long)]
    pub directory_id: Option<String>,
    /// Answer 429 above this many requests per second.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Leave out Retry-After on 429 answers.
    #[arg(long)]
    pub no_retry_after: bool,
}

/// The environment variable holding the key the sandbox accepts.
pub const SANDBOX_KEY_ENV: &str = "SCIMSYNC_SANDBOX_KEY";

/// Run until Ctrl-C.
pub async fn sandbox(args: SandboxArgs, printer: &Printer) -> Result<ExitStatus, CliError> {
    let mut cfg = SandboxConfig::default();
    if let Some(id) = args.directory_id {
        cfg.directory_id = id;
    }
    let key_from_env = match std::env::var(SANDBOX_KEY_ENV) {
        Ok(k) if !k.trim().is_empty() => {
            cfg.api_key = k.trim().to_owned();
            true
        }
        _ => false,
    };
    cfg.rate_limit = args.rate_limit.map(|r| RateLimit {
        per_second: r,
        burst: r.ceil().max(1.0) as u32,
        send_retry_after: !args.no_retry_after,
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| CliError::msg(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    let addr = listener.local_addr()?;
    let sandbox = Sandbox::new(cfg);
    printer.out(&format!(
        "scimsync sandbox: an Atlassian-like SCIM directory (in memory)\n\
         base URL: http://{addr}{}\n\
         API key:  {}\n\
         control:  GET http://{addr}/_sandbox/counts, GET /_sandbox/state, POST/DELETE /_sandbox/faults\n\
         Stop with Ctrl-C.\n",
        sandbox.base_path(),
        if key_from_env {
            format!("the value of {SANDBOX_KEY_ENV}")
        } else {
            format!("`{}` (the built-in sandbox key; set {SANDBOX_KEY_ENV} to choose another)", crate::sandbox::DEFAULT_API_KEY)
        },
    ))?;
    sandbox
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(ExitStatus::Success)
}
