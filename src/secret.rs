//! The target's API key: where it comes from and how it is kept out of sight.
//!
//! The key is read from an environment variable or a file named in the config,
//! never from the command line (argv is visible to every local user through
//! `ps`). It lives in a [`secrecy::SecretString`], whose `Debug` prints
//! `[REDACTED]`, and is exposed only when the `Authorization` header is built.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::config::ConfigError;

/// Where the API key is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable, by name.
    Env(String),
    /// A file whose first line is the key.
    File(PathBuf),
}

impl KeySource {
    /// Build from the `[target]` keys; exactly one must be set.
    pub fn from_config(env: Option<&str>, file: Option<PathBuf>) -> Result<Self, ConfigError> {
        match (env, file) {
            (Some(_), Some(_)) => Err(ConfigError::at(
                "target.api_key_env",
                "set either api_key_env or api_key_file, not both",
            )),
            (Some(name), None) => {
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    Err(ConfigError::at(
                        "target.api_key_env",
                        "must be the name of an environment variable",
                    ))
                } else {
                    Ok(KeySource::Env(name.to_owned()))
                }
            }
            (None, Some(path)) => Ok(KeySource::File(path)),
            (None, None) => Err(ConfigError::at(
                "target",
                "no API key source: set api_key_env (an environment variable name) or api_key_file (a path)",
            )),
        }
    }

    /// Read the key. The error names the source, never the value.
    pub fn read(&self) -> Result<ApiKey, KeyError> {
        let raw = match self {
            KeySource::Env(name) => std::env::var(name).map_err(|e| match e {
                std::env::VarError::NotPresent => KeyError(format!(
                    "the API key variable `{name}` is not set in the environment"
                )),
                std::env::VarError::NotUnicode(_) => {
                    KeyError(format!("the API key variable `{name}` is not valid UTF-8"))
                }
            })?,
            KeySource::File(path) => read_key_file(path)?,
        };
        let key = raw.lines().next().unwrap_or("").trim().to_owned();
        if key.is_empty() {
            return Err(KeyError(format!("the API key from {self} is empty")));
        }
        if key.chars().any(|c| c.is_control() || c == ' ') {
            return Err(KeyError(format!(
                "the API key from {self} contains spaces or control characters"
            )));
        }
        Ok(ApiKey(SecretString::from(key)))
    }
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| {
        KeyError(format!(
            "cannot read the API key file {}: {e}",
            path.display()
        ))
    })
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(n) => write!(f, "environment variable `{n}`"),
            KeySource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// A failure to obtain the key. Its message never contains the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// The bearer API key. `Debug` and `Display` are redacted.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Wrap a key (tests, the sandbox).
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(SecretString::from(key.into()))
    }

    /// The key itself; call only to build the `Authorization` header.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_from_file_takes_first_line_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "  s3cr3t-key  \nsecond line\n").unwrap();
        let k = KeySource::File(p).read().unwrap();
        assert_eq!(k.expose(), "s3cr3t-key");
        assert_eq!(format!("{k:?}"), "ApiKey([REDACTED])");
    }

    #[test]
    fn missing_env_names_the_variable_not_a_value() {
        let e = KeySource::Env("SCIMSYNC_TEST_SURELY_UNSET_VAR".into())
            .read()
            .unwrap_err();
        assert!(e.to_string().contains("SCIMSYNC_TEST_SURELY_UNSET_VAR"));
    }

    #[test]
    fn both_or_neither_source_is_refused() {
        assert!(KeySource::from_config(Some("A"), Some("f".into())).is_err());
        assert!(KeySource::from_config(None, None).is_err());
    }
}
