//! `plan` and `sync`: one pipeline, stopped before the first write for `plan`.
//!
//! load config → read the API key → open the store → load the source → map and
//! scope → know the target (stored state, or a full read) → compute the plan →
//! (sync only) apply it → record the run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{CliError, Format, Printer};
use crate::config::Settings;
use crate::exit::ExitStatus;
use crate::mapping;
use crate::model::{RecordKind, SourceId};
use crate::plan::render::{Style, render_human, render_json, summary_line};
use crate::plan::saved::{self as saved_plan, Basis, Fingerprints, SavedPlan};
use crate::plan::{self, Actual, Plan, guard, risk};
use crate::push::client::{Failure, ScimClient, ScimError, TransportKind};
use crate::push::{self, Context};
use crate::source;
use crate::store::lock::RunLock;
use crate::store::{self, OutcomeRow, Record, Recorder, RunCounts, Store, StoredUser, UserLink};
use crate::target::{self, MatchRules, Reconciled};

/// Options shared by `plan` and `sync`.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    /// Force a full read of the target.
    pub reconcile: bool,
    /// Output format.
    pub format: Format,
    /// `plan --check`: exit 1 when there are changes.
    pub check: bool,
    /// Approve destructive actions over the guard's thresholds.
    pub allow_deprovision: bool,
    /// Compute the fingerprints a saved plan carries (`plan --out`, `apply`).
    /// Hashing the whole target state costs as much as mapping the source on
    /// a large directory, so a routine run does not.
    pub fingerprint: bool,
}

/// Everything computed before the first write.
pub struct Prepared {
    /// The plan.
    pub plan: Plan,
    /// The store (in memory for a `plan` on a store that does not exist yet).
    pub store: Store,
    /// The target's client.
    pub client: ScimClient,
    /// Set when the target was read in full.
    pub reconciled: Option<Reconciled>,
    /// Why the target was (or was not) read in full.
    pub target_mode: String,
    /// Header lines for the plan output.
    pub header: Vec<String>,
    /// Where the target state came from.
    pub basis: Basis,
    /// What the plan was computed from (for saved plans).
    /// Fingerprints of the inputs, when [`PlanOptions::fingerprint`] asked for them.
    pub fingerprints: Option<Fingerprints>,
}

/// Explain a failed request in one line, with the likely cause.
pub fn diagnose(settings: &Settings, f: &Failure) -> String {
    let host = reqwest::Url::parse(&settings.base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    match &f.error {
        ScimError::Transport { kind: TransportKind::Dns, message } => {
            format!("cannot resolve `{host}`: check target.base_url ({message})")
        }
        ScimError::Transport { kind: TransportKind::Connect, message } => format!(
            "cannot connect to `{host}`: the host is down, or a firewall or proxy is in the way ({message})"
        ),
        ScimError::Transport { kind: TransportKind::Tls, message } => format!(
            "TLS with `{host}` failed: the certificate is not trusted (a TLS-inspecting proxy needs its CA in the system store) ({message})"
        ),
        ScimError::Transport { kind: TransportKind::Timeout, message } => {
            format!("`{host}` did not answer in time ({message})")
        }
        ScimError::Http { status: 401, .. } => "the target refused the API key (401): it is wrong or has expired — Atlassian directory API keys expire one year after they are created; generate a new one in admin.atlassian.com and update the key source".to_owned(),
        ScimError::Http { status: 403, detail, .. } => format!(
            "the target forbids access (403: {detail}): the key has no rights on this directory"
        ),
        ScimError::Http { status: 404, .. } => format!(
            "not found (404) at {}: the directory id in target.base_url is wrong, or the URL is not a SCIM base URL (Atlassian: https://api.atlassian.com/scim/directory/<directory id>)",
            settings.base_url
        ),
        other => format!("{other} (after {} attempts)", f.attempts),
    }
}

/// Free `value` on a thread of its own. The source snapshot, the desired
/// state and the target state are millions of small allocations on a large
/// directory; freeing them took about a tenth of a routine run, time the run
/// no longer waits for (a one-shot process may exit before the thread ends,
/// and the memory goes back with it).
fn drop_in_background<T: Send + 'static>(value: T) {
    // When no thread can be had, the refused closure (and `value` with it)
    // is dropped right here instead.
    let _ = std::thread::Builder::new()
        .name("scimsync-free".into())
        .spawn(move || drop(value));
}

/// The stored people, as the target's basis needs them.
enum StoredPeople {
    /// Every stored state decoded (a full read compares them with the target).
    Decoded(Vec<UserLink>),
    /// Decoded only where it is not the state wanted now.
    Compared(Vec<StoredUser>),
}

impl StoredPeople {
    fn len(&self) -> usize {
        match self {
            Self::Decoded(v) => v.len(),
            Self::Compared(v) => v.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many stored states were decoded.
    fn decoded(&self) -> usize {
        match self {
            Self::Decoded(v) => v.len(),
            Self::Compared(v) => v.iter().filter(|u| u.state.is_some()).count(),
        }
    }

    fn into_decoded(self) -> Vec<UserLink> {
        match self {
            Self::Decoded(v) => v,
            // Not read this way for a full read; total all the same.
            Self::Compared(v) => v.into_iter().map(UserLink::from).collect(),
        }
    }

    fn into_compared(self) -> Vec<StoredUser> {
        match self {
            Self::Compared(v) => v,
            Self::Decoded(v) => v.into_iter().map(StoredUser::from).collect(),
        }
    }
}

/// The stored people compared with the wanted ones (see
/// [`Store::stored_users`]); on a large directory in two halves, the upper
/// one on a second connection, the two cores each comparing one.
fn stored_compared(
    store: &Store,
    app: &str,
    wanted: &BTreeMap<SourceId, plan::DesiredUser>,
) -> Result<Vec<StoredUser>, store::StoreError> {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let n = wanted.len();
    let pivot = (n >= 20_000).then(|| wanted.keys().nth(n / 2)).flatten();
    let second = match pivot {
        Some(_) => store.another_connection().ok().flatten(),
        None => None,
    };
    let (Some(pivot), Some(second)) = (pivot, second) else {
        let mut same = target::SameAsWanted::new(wanted);
        return store.stored_users(app, |id, text| same.check(id, text));
    };
    std::thread::scope(|scope| {
        let upper = scope.spawn(move || {
            let mut same = target::SameAsWanted::starting_at(wanted, pivot.as_str());
            second.stored_users_in(app, (Included(pivot.as_str()), Unbounded), |id, text| {
                same.check(id, text)
            })
        });
        let mut same = target::SameAsWanted::new(wanted);
        let lower =
            store.stored_users_in(app, (Unbounded, Excluded(pivot.as_str())), |id, text| {
                same.check(id, text)
            });
        let upper = upper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let mut all = lower?;
        all.extend(upper?);
        Ok(all)
    })
}

fn err<E: std::fmt::Display>(e: E) -> CliError {
    CliError::msg(e.to_string())
}

/// Run the pipeline up to the plan.
pub async fn prepare(
    settings: &Settings,
    printer: &Printer,
    opts: PlanOptions,
    dry_run: bool,
) -> Result<Prepared, CliError> {
    prepare_with(settings, printer, opts, dry_run, None).await
}

/// The source files' fingerprint: read before the loader reads them, so a
/// file that changes in between makes `apply` refuse rather than trust it.
fn source_fingerprint(settings: &Settings) -> String {
    let mut files = vec![settings.source.users.clone()];
    files.extend(settings.source.groups.clone());
    let contents: Vec<(String, Option<Vec<u8>>)> = files
        .iter()
        .map(|p| {
            (
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                std::fs::read(p).ok(),
            )
        })
        .collect();
    saved_plan::files_fingerprint(&contents)
}

/// [`prepare`], with the target's basis forced (`apply` recomputes from the
/// basis its saved plan used).
pub async fn prepare_with(
    settings: &Settings,
    printer: &Printer,
    opts: PlanOptions,
    dry_run: bool,
    force: Option<Basis>,
) -> Result<Prepared, CliError> {
    let key = settings.key_source.read().map_err(err)?;
    let store = if dry_run && !settings.store_path.exists() {
        Store::memory().map_err(err)?
    } else {
        Store::open(&settings.store_path).map_err(err)?
    };
    let app = settings.app.as_str();
    let started = Instant::now();
    let source_fp = opts.fingerprint.then(|| source_fingerprint(settings));
    let last = store.last_reconcile(app).map_err(err)?;
    let retired = store.retired_groups(app).map_err(err)?;
    let interval_ms = settings.policy.reconcile_interval.as_millis() as i64;
    let reason = if force == Some(Basis::FullRead) {
        Some("the saved plan was computed from a full read")
    } else if force == Some(Basis::Stored) {
        None
    } else if opts.reconcile {
        Some("--reconcile")
    } else if last.is_none() {
        Some("first run for this target")
    } else if last.is_some_and(|t| store::now_ms() - t >= interval_ms) {
        Some("the reconcile interval has passed")
    } else {
        None
    };
    // The source is loaded and mapped on a second thread while this one
    // reads the stored state: neither needs the other, and on a large
    // directory each is a good share of a routine run.
    let (loaded, links) = std::thread::scope(|scope| {
        let loading = scope.spawn(|| {
            let t = Instant::now();
            let mut snapshot = source::load(&settings.source)?;
            let load_ms = t.elapsed().as_millis() as u64;
            // Member sets move into the desired state; of the snapshot only
            // its counts are needed from here on: the rest (ids, origins,
            // names) is freed now, before the plan is built beside it.
            let desired =
                mapping::desired_state_taking(&mut snapshot, &settings.mapping, &settings.groups);
            let counts = (snapshot.users.len(), snapshot.groups.len());
            drop_in_background(snapshot);
            tracing::debug!(
                load_ms,
                map_ms = t.elapsed().as_millis() as u64 - load_ms,
                "source stage"
            );
            Ok::<_, source::SourceError>((counts, desired))
        });
        // Stored groups and memberships on another connection, beside the
        // source (about half of the stored state on a large directory).
        let t = Instant::now();
        let groups_reader = match store.another_connection() {
            Ok(Some(second)) => Some(scope.spawn(move || {
                let groups = second.group_links(app);
                (groups, t.elapsed().as_millis() as u64)
            })),
            _ => None,
        };
        // Stored people: a full read needs every stored state (it tells
        // drift), read now beside the source. Otherwise each stored state
        // is compared, as text, with the one wanted now once the source is
        // mapped, and only those that differ are decoded (a routine run
        // changes few people).
        let early = reason.is_some().then(|| store.user_links(app));
        let loaded = loading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let t_users = Instant::now();
        let users = match early {
            Some(users) => users.map(StoredPeople::Decoded),
            None => match &loaded {
                Ok((_, desired)) => {
                    stored_compared(&store, app, &desired.users).map(StoredPeople::Compared)
                }
                // The run stops on the source error: nothing to compare with.
                Err(_) => Ok(StoredPeople::Compared(Vec::new())),
            },
        };
        let links = users.and_then(|users| {
            let users_ms = t_users.elapsed().as_millis() as u64;
            let (groups, groups_ms) = match groups_reader {
                Some(reader) => reader
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => (store.group_links(app), t.elapsed().as_millis() as u64),
            };
            tracing::debug!(
                ms = t.elapsed().as_millis() as u64,
                users_ms,
                decoded = users.decoded(),
                groups_ms,
                "stored state read"
            );
            Ok((users, groups?))
        });
        (loaded, links)
    });
    let (user_links, group_links) = links.map_err(err)?;
    if let Some(url) = store.target_url(app).map_err(err)?
        && url != settings.base_url
        && !(user_links.is_empty() && group_links.is_empty())
    {
        return Err(CliError::msg(format!(
            "the store {} links target `{app}` to {url}, but the config now says {}; \
             links from one directory are meaningless in another: use a new store file or another target name",
            settings.store_path.display(),
            settings.base_url
        )));
    }

    let ((source_users, source_groups), desired) = loaded.map_err(err)?;
    tracing::info!(
        users = source_users,
        groups = source_groups,
        rejected = desired.rejects.len(),
        ms = started.elapsed().as_millis() as u64,
        "source loaded and mapped"
    );

    let client = ScimClient::new(
        &settings.base_url,
        &key,
        &settings.limits,
        &settings.profile.api.media_type,
    )
    .map_err(CliError::msg)?;
    let (actual, reconciled, target_mode) = match reason {
        Some(reason) => {
            printer.info(&format!("Reading the whole target ({reason})..."));
            let page = settings.limits.page_size;
            let bar = printer.bar("reading users");
            let users = client
                .list_all("Users", page, |n, total| {
                    bar.set_length(total as u64);
                    bar.set_position(n as u64);
                    tracing::debug!(n, total, "users read")
                })
                .await
                .map_err(|f| {
                    CliError::msg(format!(
                        "reading users from the target: {}",
                        diagnose(settings, &f)
                    ))
                })?;
            bar.finish_and_clear();
            let bar = printer.bar("reading groups");
            let groups = client
                .list_all("Groups", page, |n, total| {
                    bar.set_length(total as u64);
                    bar.set_position(n as u64);
                    tracing::debug!(n, total, "groups read")
                })
                .await
                .map_err(|f| {
                    CliError::msg(format!(
                        "reading groups from the target: {}",
                        diagnose(settings, &f)
                    ))
                })?;
            bar.finish_and_clear();
            let rules = MatchRules {
                user_name_ci: settings.profile.api.user_name_case_insensitive,
                group_name_ci: settings.profile.api.group_name_case_insensitive,
                adopt_groups: settings.groups.adopt_existing,
            };
            let r = target::reconcile(
                &desired,
                &user_links.into_decoded(),
                &group_links,
                &retired,
                &users,
                &groups,
                rules,
            );
            let mode = format!(
                "read in full ({reason}): {} users, {} groups",
                users.len(),
                groups.len()
            );
            (r.actual.clone(), Some(r), mode)
        }
        None => {
            let mode = format!(
                "state last pushed ({} users, {} groups managed; full read due in {})",
                user_links.len(),
                group_links.len(),
                humanize_ms(last.map_or(0, |t| (t + interval_ms - store::now_ms()).max(0)))
            );
            (
                Actual {
                    retired_groups: retired.clone(),
                    ..target::from_store_owned(user_links.into_compared(), group_links)
                },
                None,
                mode,
            )
        }
    };
    let t = Instant::now();
    let mut plan = plan::compute(&desired, &actual, &settings.policy);
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "plan computed");
    // Creates an earlier run sent without recording the answer: look first.
    let in_doubt = store.in_doubt(app, "user").map_err(err)?;
    let mut resolved = 0;
    for a in &mut plan.actions {
        if let plan::Action::CreateUser {
            user, lookup_first, ..
        } = a
            && in_doubt.contains(user)
        {
            *lookup_first = true;
            resolved += 1;
        }
    }
    if resolved > 0 {
        plan.notes.push(format!(
            "{resolved} creates were sent by an interrupted run without a recorded answer: they are looked up before anything is posted"
        ));
    }
    if !opts.allow_deprovision {
        plan.guard = guard::evaluate(&plan, &actual, source_users, &settings.guard).reasons;
    }
    plan.risks = risk::assess(&plan, settings.large_member_removal);
    let fingerprints = source_fp.map(|source| Fingerprints {
        source,
        target: saved_plan::fingerprint(&actual),
        config: saved_plan::fingerprint(&json!({
            "app": settings.app,
            "base_url": settings.base_url,
            "policy": settings.policy,
            "guard": settings.guard,
            "managed_paths": desired.managed_paths,
            "large_member_removal": settings.large_member_removal,
        })),
    });
    let invalid = desired.rejects.len();
    let header = vec![
        format!(
            "Source: {} — {} users, {} groups{}",
            settings.source.users.display(),
            source_users,
            source_groups,
            if invalid > 0 {
                format!(", {invalid} invalid records")
            } else {
                String::new()
            }
        ),
        format!(
            "Target: {} ({}) — {}",
            settings.app, settings.base_url, target_mode
        ),
    ];
    let basis = if reconciled.is_some() {
        Basis::FullRead
    } else {
        Basis::Stored
    };
    drop_in_background((desired, actual));
    Ok(Prepared {
        plan,
        store,
        client,
        reconciled,
        target_mode,
        header,
        basis,
        fingerprints,
    })
}

fn humanize_ms(ms: i64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn context_json(settings: &Settings, prepared: &Prepared) -> serde_json::Value {
    json!({
        "app": settings.app,
        "base_url": settings.base_url,
        "source": settings.source.users.display().to_string(),
        "target_state": prepared.target_mode,
        "full_read": prepared.reconciled.is_some(),
    })
}

/// `scimsync plan`.
pub async fn plan_command(
    settings: &Settings,
    printer: &Printer,
    opts: PlanOptions,
) -> Result<ExitStatus, CliError> {
    plan_command_to(settings, printer, opts, None).await
}

/// `scimsync plan [--out FILE]`: with a file, the plan is also saved for `apply`.
pub async fn plan_command_to(
    settings: &Settings,
    printer: &Printer,
    opts: PlanOptions,
    out: Option<&Path>,
) -> Result<ExitStatus, CliError> {
    let opts = PlanOptions {
        fingerprint: opts.fingerprint || out.is_some(),
        ..opts
    };
    let prepared = prepare(settings, printer, opts, true).await?;
    let writes = prepared
        .client
        .stats
        .writes
        .load(std::sync::atomic::Ordering::Relaxed);
    debug_assert_eq!(writes, 0, "plan must not write");
    match opts.format {
        Format::Text => printer.out(&render_human(
            &prepared.plan,
            &prepared.header,
            Style {
                color: printer.color,
            },
        ))?,
        Format::Json => {
            let doc = render_json(&prepared.plan, context_json(settings, &prepared));
            printer.out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).expect("serializable")
            ))?;
        }
    }
    if let Some(path) = out {
        let fingerprints = prepared
            .fingerprints
            .clone()
            .ok_or_else(|| CliError::msg("internal: the plan was computed without fingerprints"))?;
        let saved = SavedPlan::new(
            jiff::Timestamp::now().to_string(),
            settings.app.clone(),
            settings.base_url.clone(),
            prepared.basis,
            opts.allow_deprovision,
            fingerprints,
            prepared.plan.clone(),
        );
        super::metrics::write_atomic(path, saved.to_text().as_bytes()).map_err(|e| {
            CliError::msg(format!("cannot write the plan to {}: {e}", path.display()))
        })?;
        printer.info(&format!(
            "Saved this plan to {}. Apply exactly this plan with `scimsync apply {}`; it is refused if the source or the target changes first.",
            path.display(),
            path.display()
        ));
    }
    Ok(if opts.check && prepared.plan.has_changes() {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

fn record_rows(settings: &Settings, run_id: i64, plan: &Plan) -> Vec<Record> {
    let mut rows = Vec::new();
    for r in &plan.rejects {
        rows.push(Record::Outcome(OutcomeRow {
            run_id,
            app: settings.app.clone(),
            resource: match r.kind {
                RecordKind::User => "user".into(),
                RecordKind::Group => "group".into(),
            },
            action: "validate".into(),
            source_id: r.source_id.as_ref().map(|s| s.to_string()),
            user_name: r.label.clone(),
            outcome: "invalid".into(),
            detail: Some(format!("{}: {}", r.origin, r.reason)),
            ..OutcomeRow::default()
        }));
    }
    for c in &plan.conflicts {
        rows.push(Record::Outcome(OutcomeRow {
            run_id,
            app: settings.app.clone(),
            resource: c.resource.clone(),
            action: "match".into(),
            source_id: Some(c.source_id.to_string()),
            user_name: Some(c.label.clone()),
            outcome: "skipped".into(),
            detail: Some(c.reason.clone()),
            ..OutcomeRow::default()
        }));
    }
    rows
}

/// `scimsync sync` (and the demo's sync).
pub async fn sync_command(
    settings: &Settings,
    printer: &Printer,
    opts: PlanOptions,
    command: &str,
    cancel: CancellationToken,
) -> Result<ExitStatus, CliError> {
    let started = Instant::now();
    let _lock = RunLock::acquire(&settings.store_path).map_err(CliError::msg)?;
    let prepared = prepare(settings, printer, opts, false).await?;
    execute(
        settings,
        printer,
        opts.format,
        command,
        cancel,
        prepared,
        started,
    )
    .await
}

/// `scimsync apply FILE`: check that the saved plan still holds (same source,
/// same target state, same config, same plan when recomputed), then apply
/// exactly its actions. Refuses with exit 2 otherwise.
pub async fn apply_command(
    settings: &Settings,
    printer: &Printer,
    file: &Path,
    allow_deprovision: bool,
    format: Format,
    cancel: CancellationToken,
) -> Result<ExitStatus, CliError> {
    let started = Instant::now();
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::msg(format!("cannot read the plan {}: {e}", file.display())))?;
    let saved = SavedPlan::parse(&text)
        .map_err(|e| CliError::msg(format!("plan {}: {e}", file.display())))?;
    if saved.app != settings.app || saved.base_url != settings.base_url {
        return Err(CliError::msg(format!(
            "plan {}: it was made for target `{}` ({}), but the config names `{}` ({}): use the config the plan was made with",
            file.display(),
            saved.app,
            saved.base_url,
            settings.app,
            settings.base_url
        )));
    }
    let _lock = RunLock::acquire(&settings.store_path).map_err(CliError::msg)?;
    let opts = PlanOptions {
        reconcile: saved.basis == Basis::FullRead,
        format,
        check: false,
        allow_deprovision: saved.allow_deprovision,
        fingerprint: true,
    };
    let mut prepared = prepare_with(settings, printer, opts, false, Some(saved.basis)).await?;
    let Some(now) = prepared.fingerprints.clone() else {
        return Err(CliError::msg(
            "internal: the plan was recomputed without fingerprints",
        ));
    };
    let refuse = |what: &str| {
        Err(CliError::msg(format!(
            "plan {}: {what} since the plan was made ({}): re-run `scimsync plan --out {}`, review it, and apply the new plan",
            file.display(),
            saved.created_at,
            file.display()
        )))
    };
    if now.source != saved.fingerprints.source {
        return refuse("the source changed");
    }
    if now.config != saved.fingerprints.config {
        return refuse("the config changed");
    }
    if now.target != saved.fingerprints.target {
        return refuse(match saved.basis {
            Basis::FullRead => {
                "the target changed (a full read differs from the one the plan was computed from)"
            }
            Basis::Stored => "the target state changed (another run updated the store)",
        });
    }
    if prepared.plan.actions != saved.plan.actions || prepared.plan.guard != saved.plan.guard {
        return refuse(
            "the plan computed from the same source and target differs (the mapping or the connector profile changed)",
        );
    }
    let mut plan = saved.plan;
    if allow_deprovision {
        plan.guard.clear();
    }
    prepared.plan = plan;
    printer.info(&format!(
        "The plan from {} still holds: same source, same target state, same config.",
        file.display()
    ));
    execute(
        settings, printer, format, "apply", cancel, prepared, started,
    )
    .await
}

/// Apply a prepared plan and record the run (the caller holds the run lock).
async fn execute(
    settings: &Settings,
    printer: &Printer,
    format: Format,
    command: &str,
    cancel: CancellationToken,
    prepared: Prepared,
    started: Instant,
) -> Result<ExitStatus, CliError> {
    let Prepared {
        mut plan,
        store,
        mut client,
        reconciled,
        header,
        target_mode,
        ..
    } = prepared;
    let app = settings.app.as_str();
    let abandoned = store.close_abandoned_runs(app).map_err(err)?;
    if abandoned > 0 {
        printer.warn(&format!(
            "note: {abandoned} earlier runs ended without finishing (killed?); they are marked interrupted, and this run completes their work"
        ));
    }
    let run_id = store
        .begin_run(app, command, reconciled.is_some())
        .map_err(err)?;
    if format == Format::Text && !printer.quiet {
        printer.out(&render_human(
            &plan,
            &header,
            Style {
                color: printer.color,
            },
        ))?;
    }

    let store_in_doubt_groups = store.in_doubt(app, "group").map_err(err)?;
    let recorder = Recorder::spawn(store);
    recorder.send(record_rows(settings, run_id, &plan));
    if let Some(r) = &reconciled {
        // What the full read found: forget links to accounts deleted in the
        // target, and take the target's real memberships as the stored ones.
        let mut recs = Vec::new();
        for sid in &r.stale_users {
            recs.push(Record::UserUnlink {
                app: app.into(),
                source_id: sid.clone(),
            });
            recs.push(Record::Outcome(OutcomeRow {
                run_id,
                app: app.into(),
                resource: "user".into(),
                action: "unlink".into(),
                source_id: Some(sid.to_string()),
                outcome: "applied".into(),
                detail: Some("drift: the account was deleted in the target; link removed".into()),
                ..OutcomeRow::default()
            }));
        }
        for sid in &r.stale_groups {
            recs.push(Record::GroupUnlink {
                app: app.into(),
                source_id: sid.clone(),
            });
            recs.push(Record::Outcome(OutcomeRow {
                run_id,
                app: app.into(),
                resource: "group".into(),
                action: "unlink".into(),
                source_id: Some(sid.to_string()),
                outcome: "applied".into(),
                detail: Some("drift: the group was deleted in the target; link removed".into()),
                ..OutcomeRow::default()
            }));
        }
        for (gid, members) in &r.memberships {
            recs.push(Record::MembersReset {
                app: app.into(),
                group: gid.clone(),
                members: members.clone(),
            });
        }
        recorder.send(recs);
    }

    // A rename on a target that cannot rename is several requests (create,
    // member moves, delete): counted as such.
    let sends: usize = plan
        .actions
        .iter()
        .map(|a| a.requests(settings.policy.member_chunk))
        .sum();
    if sends > 0 {
        printer.info(&format!(
            "Applying {} actions ({sends} requests or more)...",
            plan.actions.len()
        ));
    }
    client.set_cancel(cancel.clone());
    // Progress on stderr: a bar on a terminal; otherwise (logs) a line every
    // 10 % of a plan of 50 actions or more, and at most every 10 seconds.
    let bar = if sends > 0 {
        printer.bar("applying")
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_length(plan.actions.len() as u64);
    let last_report = std::sync::Mutex::new(Instant::now());
    let progress_fn = |done: usize, total: usize| {
        if !bar.is_hidden() {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            return;
        }
        let step = (total / 10).max(1);
        let mut last = last_report.lock().expect("not poisoned");
        if total >= 50
            && (done.is_multiple_of(step) || last.elapsed().as_secs() >= 10)
            && done < total
        {
            *last = Instant::now();
            printer.info(&format!(
                "  {done}/{total} actions done ({}%, {:.0}s)",
                done * 100 / total,
                started.elapsed().as_secs_f64()
            ));
        }
    };
    let ctx = Context {
        client: &client,
        recorder: &recorder,
        run_id,
        app,
        concurrency: settings.limits.concurrency,
        adopt_groups: settings.groups.adopt_existing,
        in_doubt_groups: store_in_doubt_groups,
        cancel: cancel.clone(),
        progress: Some(&progress_fn),
        member_chunk: settings.policy.member_chunk,
    };
    let mut held = 0;
    if !plan.guard.is_empty() {
        let (destructive, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.actions)
            .into_iter()
            .partition(guard::is_destructive);
        plan.actions = rest;
        let reason = format!(
            "held by the deprovisioning guard ({}); approve with `sync --allow-deprovision`",
            plan.guard.join("; ")
        );
        let (records, n) = push::held_records(&destructive, &ctx, &reason);
        held = n;
        recorder.send(records);
    }
    let applied = push::apply(&plan, &ctx).await;
    bar.finish_and_clear();
    recorder.flush().await;
    let (store, write_result) = recorder.finish();

    let mut counts: RunCounts = applied.counts;
    counts.actions = counts.applied + counts.failed + counts.skipped;
    counts.invalid = plan.rejects.len() as u64;
    counts.skipped += plan.conflicts.len() as u64;
    counts.held = held;
    counts.actions += held;
    let interrupted = cancel.is_cancelled();
    let status = if applied.stopped.is_some() {
        "failed"
    } else if interrupted {
        "interrupted"
    } else if counts.failed > 0 || counts.invalid > 0 || counts.skipped > 0 || counts.held > 0 {
        "partial"
    } else {
        "succeeded"
    };
    let detail = applied
        .stopped
        .clone()
        .or_else(|| interrupted.then(|| "interrupted by a signal".to_owned()));
    store
        .finish_run(run_id, status, &counts, detail.as_deref())
        .map_err(err)?;
    store.settle_intents(app).map_err(err)?;
    if reconciled.is_some() && applied.stopped.is_none() && !interrupted {
        store
            .set_reconciled(app, &settings.base_url, store::now_ms())
            .map_err(err)?;
    }
    write_result.map_err(err)?;

    let elapsed = started.elapsed();
    if let Some(path) = &settings.metrics_file {
        let run = super::metrics::RunMetrics {
            app,
            run_id: Some(run_id),
            status,
            duration: elapsed,
            counts: &counts,
            http: client.stats.statuses(),
            transport_errors: client
                .stats
                .transport_errors
                .load(std::sync::atomic::Ordering::Relaxed),
        };
        if let Err(e) = super::metrics::write_for_run(path, &store, &run) {
            printer.warn(&format!(
                "warning: cannot write the metrics file {}: {e}",
                path.display()
            ));
        }
    }
    match format {
        Format::Json => {
            let doc = json!({
                "run_id": run_id,
                "app": app,
                "status": status,
                "target_state": target_mode,
                "duration_ms": elapsed.as_millis() as u64,
                "counts": counts,
                "summary": plan.summary,
                "stopped": applied.stopped,
                "guard": plan.guard,
            });
            printer.out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).expect("serializable")
            ))?;
        }
        Format::Text => {
            let mut line = format!(
                "Run {run_id}: {} of {} outcomes applied in {:.1}s; {} failed, {} skipped",
                counts.applied,
                counts.actions,
                elapsed.as_secs_f64(),
                counts.failed,
                counts.skipped
            );
            if counts.invalid > 0 {
                line.push_str(&format!(", {} invalid records", counts.invalid));
            }
            if counts.held > 0 {
                line.push_str(&format!(", {} held by the guard", counts.held));
            }
            line.push_str(&format!(
                " ({} requests, {} retries, {} throttled).",
                counts.requests, counts.retries, counts.throttled
            ));
            if plan.has_changes() || counts.invalid > 0 {
                printer.out(&format!("{line}\n"))?;
            } else {
                printer.out(&format!("{}\n", summary_line(&plan)))?;
            }
            if counts.held > 0 {
                let cfg = settings.config_path.display();
                printer.warn(&format!(
                    "warning: the deprovisioning guard held {} destructive outcomes (nothing was disabled, deleted or removed):",
                    counts.held
                ));
                for r in &plan.guard {
                    printer.warn(&format!("  - {r}"));
                }
                printer.warn(&format!(
                    "hint: check the source first (`scimsync -c {cfg} plan`); if the change is intended, approve it with `scimsync -c {cfg} sync --allow-deprovision`"
                ));
            }
            if let Some(reason) = &applied.stopped {
                printer.warn(&format!("error: the run stopped: {reason}"));
            }
            if counts.failed + counts.invalid + counts.skipped > 0 {
                let cfg = settings.config_path.display();
                printer.warn(&format!(
                    "hint: run `scimsync -c {cfg} report --run {run_id} --outcome failed` (or `--outcome invalid`) to see why"
                ));
            }
        }
    }
    Ok(if applied.stopped.is_some() {
        ExitStatus::Error
    } else if interrupted || counts.failed + counts.invalid + counts.skipped + counts.held > 0 {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}
