//! `scimsync check`: test the connection and show what the target supports.

use serde_json::Value;

use super::pipeline::diagnose;
use super::{CliError, Printer};
use crate::config::Settings;
use crate::exit::ExitStatus;
use crate::push::client::ScimClient;

fn flag(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(next) => cur = next,
            None => return "?".into(),
        }
    }
    match cur {
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Null => "?".into(),
        other => other.to_string(),
    }
}

/// Run the checks; exit 0 when the target answered both reads.
pub async fn check(settings: &Settings, printer: &Printer) -> Result<ExitStatus, CliError> {
    let mut out = String::new();
    out.push_str(&format!(
        "Target: {} ({}), connector `{}`\n",
        settings.app, settings.base_url, settings.profile.name
    ));
    let key = match settings.key_source.read() {
        Ok(k) => {
            out.push_str(&format!("API key: read from {}\n", settings.key_source));
            k
        }
        Err(e) => {
            printer.out(&out)?;
            return Err(CliError::msg(format!("API key: {e}")));
        }
    };
    let mut limits = settings.limits.clone();
    limits.max_attempts = limits.max_attempts.min(2);
    let client = ScimClient::new(
        &settings.base_url,
        &key,
        &limits,
        &settings.profile.api.media_type,
    )
    .map_err(CliError::msg)?;
    let mut ok = true;
    match client.service_provider_config().await {
        Ok(spc) => {
            out.push_str("ok    GET /ServiceProviderConfig\n");
            out.push_str(&format!(
                "      patch: {}, bulk: {}, filter: {} (max results {}), sort: {}, etag: {}, changePassword: {}\n",
                flag(&spc, &["patch", "supported"]),
                flag(&spc, &["bulk", "supported"]),
                flag(&spc, &["filter", "supported"]),
                flag(&spc, &["filter", "maxResults"]),
                flag(&spc, &["sort", "supported"]),
                flag(&spc, &["etag", "supported"]),
                flag(&spc, &["changePassword", "supported"]),
            ));
            if let Some(schemes) = spc.get("authenticationSchemes").and_then(Value::as_array) {
                let names: Vec<&str> = schemes
                    .iter()
                    .filter_map(|s| s.get("type").or(s.get("name")).and_then(Value::as_str))
                    .collect();
                out.push_str(&format!("      authentication: {}\n", names.join(", ")));
            }
        }
        Err(f) => {
            ok = false;
            out.push_str(&format!(
                "FAIL  GET /ServiceProviderConfig: {}\n",
                diagnose(settings, &f)
            ));
        }
    }
    if ok {
        for resource in ["Users", "Groups"] {
            match client.list_page(resource, None, 1, 1).await {
                Ok(page) => out.push_str(&format!(
                    "ok    GET /{resource}?count=1 ({} {} in the target)\n",
                    page.total_results,
                    resource.to_lowercase()
                )),
                Err(f) => {
                    ok = false;
                    out.push_str(&format!(
                        "FAIL  GET /{resource}?count=1: {}\n",
                        diagnose(settings, &f)
                    ));
                    break;
                }
            }
        }
    }
    out.push_str(if ok {
        "Connection OK.\n"
    } else {
        "Connection check failed.\n"
    });
    printer.out(&out)?;
    Ok(if ok {
        ExitStatus::Success
    } else {
        ExitStatus::Error
    })
}
