//! scimsync: an outbound SCIM 2.0 provisioning engine.
//!
//! It mirrors a local directory (CSV or JSON export) into a SCIM target —
//! Atlassian Cloud first — safely, on a schedule, and records every outcome.
//!
//! # Layout
//!
//! The modules follow the pipeline:
//!
//! | stage | module | |
//! |---|---|---|
//! | config | [`config`], [`connector`], [`secret`] | TOML config → validated [`config::Settings`]; connector profiles (`connectors/*.toml`); the API key |
//! | source | [`source`], [`model`] | CSV/JSON loaders → [`model::Snapshot`] (+ rejected records with file, line, reason) |
//! | mapping & scope | [`mapping`] | templates, userName regex, required attributes, scope → [`plan::Desired`] |
//! | target state | [`target`] | stored links (incremental) or a full paged read (reconcile) → [`plan::Actual`] |
//! | plan | [`plan`] | the pure diff engine → [`plan::Plan`] of [`plan::Action`]s; text/JSON rendering |
//! | push | [`push`] | SCIM client (reqwest), pacing (governor + shared not-before gate), retries, phase executor |
//! | store | [`store`] | SQLite: links, state last pushed, runs, the provisioning report |
//! | CLI | [`cli`] | `check`, `plan`, `sync`, `apply`, `report`, `sandbox`, `demo`, `completions`, `man` |
//!
//! [`scim`] holds the SCIM wire format; [`sandbox`] is an Atlassian-faithful
//! SCIM server used by the tests and by `scimsync sandbox`.

pub mod cli;
pub mod config;
pub mod connector;
#[doc(hidden)]
pub mod datagen;
pub mod exit;
pub mod mapping;
pub mod model;
pub mod namemap;
pub(crate) mod par;
pub mod plan;
pub mod push;
pub mod sandbox;
pub mod scim;
pub mod secret;
pub mod source;
pub mod store;
pub mod target;

pub use exit::ExitStatus;
pub use model::Snapshot;
pub use plan::{Action, Plan};
