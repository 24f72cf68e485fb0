//! End-to-end tests of `scimsync`: the real binary, run as a child process,
//! against an in-process Atlassian-like SCIM sandbox on 127.0.0.1.
//!
//! Each test owns a temporary directory (config, CSV files, API key file, the
//! SQLite store) and a sandbox; assertions are on the sandbox's request
//! counters and state, the store's report tables, stdout/stderr and the exit
//! code. No test asserts on wall-clock time.

mod cli;
mod common;
mod crash;
mod cron;
mod edge;
mod faults;
mod fuzz;
mod groups;
mod guard;
mod hostile;
mod import;
mod interop;
mod ldap;
mod links;
mod matrix;
mod metrics;
mod plan;
mod report;
mod report_views;
mod resilience;
mod saved_plan;
mod schedule;
mod secrets;
mod sync;
mod terminal;
