//! `configure`: bring the guest to the state a document of resources describes, with only
//! what the guest already has (its package manager, its init system, scripts its
//! administrator put in `[configure] scripts_dir`). The host says which local definition to
//! run with which parameters; it never sends code to execute.
//!
//! The value is one of:
//! - a document `{"resources": [...], "dry_run": false, "atomic": false}` (or that JSON as a
//!   string, as XenStore hosts send values);
//! - `{"document_path": PATH | [PATH, ...], "dry_run": BOOL?}`: the document in one file, or
//!   in parts concatenated in order, that the host put on the guest with `file_inject` (how a
//!   document larger than XenStore's request limit arrives). Each file must be in a place only
//!   root can change; parts under `/var/lib/guestd/configure/inbox` are removed once read;
//! - `{"result": ID, "from": N?}`: a page of a stored result.
//!
//! The handler only parses ([`document`]), orders ([`order`]) and reports ([`report`]); each
//! resource is compared with the guest and planned by the backend
//! (`Backend::plan_resource`), and the plan is carried out by `guestd_core::plan::apply`, all
//! files through `Root`, all processes through the command runner. Before anything runs, the
//! whole document is checked (kinds enabled in `[configure] kinds`, fields, names, `after`
//! references and cycles, paths configure may write, every `run` script's ownership and
//! permissions); a refusal changes nothing. Then resources run in order: a failure skips the
//! resources that come after it and leaves independent ones applied; with `"atomic": true`
//! the first failure stops the run and every file change of the run is put back.
//!
//! Under `--root` the daemon's runner is the effect sandbox (`guestd_core::effect`): account,
//! package and service tools act on the tree and run; a `run` script reaches the machine
//! (`script`) and runs only when `[sandbox] allow_effects` lists it. A resource with a command
//! the sandbox did not run is reported `skipped` with what was not run, and the reply is `500`;
//! a dry run under `--root` notes which effect the sandbox will decide on.

pub mod document;
pub mod order;
pub mod report;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guestd_core::configure::{ConfigureSettings, ResourceContext, ResourceKind, ResourceSpec};
use guestd_core::plan::{ApplyOptions, Journal, apply_journaled};
use guestd_core::{
    ApplyError, Context, Env, Handler, HandlerError, PathPolicy, ProcessError, Reach, Reply,
    RootError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use document::{Document, Resource, Rules};
use report::{ResourceResult, RunResult, ScriptOutput, Status};

/// Where `guestctl` puts documents too large for one request (removed once read).
#[cfg(not(windows))]
pub const INBOX_DIR: &str = "/var/lib/guestd/configure/inbox";
#[cfg(windows)]
pub const INBOX_DIR: &str = r"C:\ProgramData\guestd\configure\inbox";

/// The reply limit on channels without one of their own (streams).
const STREAM_REPLY_LIMIT: usize = 64 * 1024;

/// Most parts a document may come in.
const MAX_DOCUMENT_PARTS: usize = 256;

/// `[configure]` in guestd.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigureConfig {
    /// The resource kinds documents may hold. Empty (the default): `configure` is disabled.
    pub kinds: BTreeSet<ResourceKind>,
    /// Where `run` scripts live: this directory and every one above it must belong to root
    /// and be writable only by it, as must each script.
    pub scripts_dir: String,
    /// If not empty, file, directory and archive resources may only write under these.
    pub allow: Vec<String>,
    /// Never written by file, directory and archive resources, besides guestd's own places
    /// (its configuration, state and scripts directories), which are always denied.
    pub deny: Vec<String>,
    /// Largest document read from `document_path`, in bytes.
    pub max_document_bytes: u64,
    pub max_resources: usize,
    /// Parameters per `run` resource.
    pub max_params: usize,
    /// Largest archive file read, in bytes.
    pub max_archive_bytes: u64,
    /// Most bytes an archive may unpack to.
    pub max_unpacked_bytes: u64,
    pub max_archive_entries: usize,
    /// A script's time limit unless its resource gives one.
    pub script_timeout_secs: u64,
    /// Script output kept in a result, per stream (the tail).
    pub max_output_bytes: usize,
    /// Results kept under /var/lib/guestd/configure.
    pub keep_results: usize,
    /// Previous versions kept per replaced file under /var/lib/guestd/backup.
    pub keep_backups: usize,
}

impl Default for ConfigureConfig {
    fn default() -> Self {
        let settings = ConfigureSettings::default();
        Self {
            kinds: BTreeSet::new(),
            scripts_dir: settings.scripts_dir,
            allow: Vec::new(),
            deny: Vec::new(),
            max_document_bytes: 1024 * 1024,
            max_resources: 256,
            max_params: 64,
            max_archive_bytes: 64 * 1024 * 1024,
            max_unpacked_bytes: 256 * 1024 * 1024,
            max_archive_entries: 10_000,
            script_timeout_secs: settings.script_timeout.as_secs(),
            max_output_bytes: settings.max_output_bytes,
            keep_results: 20,
            keep_backups: 1,
        }
    }
}

impl ConfigureConfig {
    /// guestd's own places, never written by a document: its configuration, its state (results,
    /// backups, the inbox) and the scripts directory (so a document cannot add a script).
    pub fn always_denied(&self) -> Vec<String> {
        let own: &[&str] = if cfg!(windows) {
            &[r"C:\ProgramData\guestd"]
        } else {
            &["/etc/guestd", "/var/lib/guestd"]
        };
        own.iter()
            .map(|s| s.to_string())
            .chain(std::iter::once(self.scripts_dir.clone()))
            .collect()
    }

    fn settings(&self) -> ConfigureSettings {
        ConfigureSettings {
            scripts_dir: self.scripts_dir.clone(),
            max_archive_bytes: self.max_archive_bytes,
            max_unpacked_bytes: self.max_unpacked_bytes,
            max_archive_entries: self.max_archive_entries,
            script_timeout: Duration::from_secs(self.script_timeout_secs.max(1)),
            max_output_bytes: self.max_output_bytes,
        }
    }
}

/// The `configure` command.
#[derive(Debug, Clone)]
pub struct ConfigureHandler {
    config: ConfigureConfig,
    settings: ConfigureSettings,
    deny: Vec<String>,
    /// One run at a time, whichever channel asks.
    running: Arc<Mutex<()>>,
}

impl ConfigureHandler {
    pub fn new(config: ConfigureConfig) -> Self {
        let mut deny = config.always_denied();
        deny.extend(config.deny.iter().cloned());
        Self {
            settings: config.settings(),
            deny,
            config,
            running: Arc::new(Mutex::new(())),
        }
    }

    fn policy(&self) -> PathPolicy {
        PathPolicy::new(self.config.allow.clone(), self.deny.clone())
    }
}

/// A refusal before anything ran.
fn refused(reason: impl std::fmt::Display) -> HandlerError {
    HandlerError::failed(format!("configure refused, nothing was changed: {reason}"))
}

impl Handler for ConfigureHandler {
    fn name(&self) -> &'static str {
        "configure"
    }

    fn default_timeout(&self) -> Option<Duration> {
        // Package installs and scripts take their time; the result is kept either way.
        Some(Duration::from_secs(3600))
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        if self.config.kinds.is_empty() {
            return Err(refused(
                "configure is not enabled on this guest ([configure] kinds is empty)",
            ));
        }
        let parsed;
        let value = match value {
            Value::String(text) => {
                parsed = serde_json::from_str::<Value>(text)
                    .map_err(|e| refused(format!("the value is not JSON: {e}")))?;
                &parsed
            }
            other => other,
        };
        let limit = ctx.channel.reply_limit().unwrap_or(STREAM_REPLY_LIMIT);
        let env = ctx.env;
        if let Some(id) = value.get("result") {
            let Value::String(id) = id else {
                return Err(HandlerError::failed(
                    "\"result\" must be a result id string",
                ));
            };
            let from = match value.get("from") {
                None => 0,
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| HandlerError::failed("\"from\" must be a number"))?
                    as usize,
            };
            let result = report::load(&env.root, id).map_err(HandlerError::failed)?;
            return Ok(result.page(from, limit));
        }
        let document = if let Some(paths) = value.get("document_path") {
            let mut doc = read_document(env, paths, self.config.max_document_bytes)?;
            if let Some(extra) = value.as_object().and_then(|o| {
                o.keys()
                    .find(|k| !matches!(k.as_str(), "document_path" | "dry_run"))
            }) {
                return Err(refused(format!(
                    "unknown field '{}' beside \"document_path\"",
                    extra.escape_default()
                )));
            }
            if let Some(dry) = value.get("dry_run") {
                let dry = dry
                    .as_bool()
                    .ok_or_else(|| refused("\"dry_run\" must be true or false"))?;
                doc["dry_run"] = Value::Bool(dry);
            }
            doc
        } else {
            value.clone()
        };
        let policy = self.policy();
        let rules = Rules {
            kinds: &self.config.kinds,
            max_resources: self.config.max_resources,
            policy: &policy,
            max_params: self.config.max_params,
        };
        let doc = document::parse(&document, &rules).map_err(refused)?;
        let order = order::order(&doc.resources).map_err(refused)?;
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let now = unix_now();
        let id = report::new_id(now);
        self.preflight(env, &doc, &id)?;
        let mut result = self.execute(env, &doc, &order, &id, &policy);
        result.started = now;
        result.finished = unix_now();
        result.count();
        info!(
            id = %result.id,
            dry_run = doc.dry_run,
            changed = result.counts.changed,
            unchanged = result.counts.unchanged,
            failed = result.counts.failed,
            skipped = result.counts.skipped,
            "configure finished"
        );
        if let Err(e) = report::store(&env.root, &result, self.config.keep_results) {
            warn!(id = %result.id, error = %e, "could not keep the configure result");
        }
        Ok(result.reply(limit))
    }
}

impl ConfigureHandler {
    /// Checks that need the guest but change nothing: every `run` script, so that a script
    /// outside the rules refuses the whole document before anything runs.
    fn preflight(&self, env: &Env, doc: &Document, id: &str) -> Result<(), HandlerError> {
        for r in &doc.resources {
            if let ResourceSpec::Run(_) = &r.spec {
                let context = ResourceContext {
                    settings: &self.settings,
                    run_id: id,
                    resource: &r.name,
                    dependency_changed: false,
                };
                env.backend
                    .plan_resource(env, &r.spec, &context)
                    .map_err(|e| refused(format!("resource '{}': {e}", r.name)))?;
            }
        }
        Ok(())
    }

    fn execute(
        &self,
        env: &Env,
        doc: &Document,
        order: &[usize],
        id: &str,
        policy: &PathPolicy,
    ) -> RunResult {
        let n = doc.resources.len();
        let mut results: Vec<Option<ResourceResult>> = vec![None; n];
        let mut changed = vec![false; n];
        let mut journal = Journal::default();
        let mut stopped = false;
        let mut rolled_back = None;
        for &i in order {
            let r = &doc.resources[i];
            let kind = r.spec.kind().name();
            let outcome = if stopped {
                ResourceResult::new(&r.name, kind, Status::Skipped)
                    .with_reason("not run: an earlier resource failed and the document is atomic")
            } else if let Some(dep) = r.after.iter().find_map(|d| {
                let j = doc.resources.iter().position(|x| &x.name == d)?;
                let status = results[j].as_ref()?.status;
                matches!(status, Status::Failed | Status::Skipped).then_some(d)
            }) {
                ResourceResult::new(&r.name, kind, Status::Skipped).with_reason(format!(
                    "not run: '{dep}', which it comes after, did not succeed"
                ))
            } else {
                let dependency_changed = r.after.iter().any(|d| {
                    doc.resources
                        .iter()
                        .position(|x| &x.name == d)
                        .is_some_and(|j| changed[j])
                });
                self.one(env, doc, r, id, policy, dependency_changed, &mut journal)
            };
            info!(
                configure = id,
                resource = %r.name,
                kind,
                status = ?outcome.status,
                reason = outcome.reason.as_deref().unwrap_or(""),
                "configure resource"
            );
            if outcome.status == Status::Changed {
                changed[i] = true;
            }
            if outcome.status == Status::Failed && doc.atomic && !stopped {
                stopped = true;
                let ok = journal.rollback(&env.root);
                if !ok {
                    warn!(configure = id, "not every file change could be put back");
                }
                rolled_back = Some(ok);
            }
            results[i] = Some(outcome);
        }
        RunResult {
            id: id.to_string(),
            started: 0,
            finished: 0,
            dry_run: doc.dry_run,
            atomic: doc.atomic,
            rolled_back,
            counts: Default::default(),
            resources: results.into_iter().flatten().collect(),
        }
    }

    /// Plan, then (unless a dry run) apply one resource.
    #[allow(clippy::too_many_arguments)]
    fn one(
        &self,
        env: &Env,
        doc: &Document,
        r: &Resource,
        id: &str,
        policy: &PathPolicy,
        dependency_changed: bool,
        journal: &mut Journal,
    ) -> ResourceResult {
        let kind = r.spec.kind().name();
        // Writes are judged by Root on the path they reach: an archive only into its
        // destination, everything else anywhere the configuration allows.
        let write_policy = match &r.spec {
            ResourceSpec::Archive(a) => {
                PathPolicy::new(vec![a.destination.clone()], self.deny.clone())
            }
            _ => policy.clone(),
        };
        let scoped = Env {
            root: env.root.with_write_policy(write_policy),
            runner: env.runner.clone(),
            backend: env.backend.clone(),
        };
        let context = ResourceContext {
            settings: &self.settings,
            run_id: id,
            resource: &r.name,
            dependency_changed,
        };
        let plan = match env.backend.plan_resource(&scoped, &r.spec, &context) {
            Ok(plan) => plan,
            Err(e) if doc.dry_run && dependency_changed => {
                let mut out = ResourceResult::new(&r.name, kind, Status::Changed);
                out.notes.push(format!(
                    "not checked in a dry run: a resource it comes after would change first \
                     (checking now says: {e})"
                ));
                return out;
            }
            Err(e) => {
                return ResourceResult::new(&r.name, kind, Status::Failed)
                    .with_reason(e.to_string());
            }
        };
        let status = if plan.is_unchanged() {
            Status::Unchanged
        } else {
            Status::Changed
        };
        let mut out = ResourceResult::new(&r.name, kind, status);
        out.changes = plan.changes.clone();
        out.notes = plan.notes.clone();
        if doc.dry_run {
            if env.root.is_sandbox() {
                // The sandbox's allow list is the daemon's: say what it decides on.
                for cmd in &plan.plan.commands {
                    if let Reach::Machine(effect) = cmd.command.reach {
                        out.notes.push(format!(
                            "under --root, '{}' runs only if [sandbox] allow_effects lists \
                             '{effect}'",
                            cmd.command.program
                        ));
                    }
                }
            }
            return out;
        }
        if plan.plan.is_empty() {
            return out;
        }
        let options = ApplyOptions {
            keep_backups: self.config.keep_backups,
        };
        let max = self.settings.max_output_bytes;
        match apply_journaled(
            &plan.plan,
            &scoped.root,
            env.runner.as_ref(),
            options,
            journal,
        ) {
            Ok(applied) => {
                if let Some(message) = applied.not_run_message() {
                    // The --root sandbox kept a command off the machine (a `run` script unless
                    // `[sandbox] allow_effects` lists `script`): not done, so not "changed".
                    out.status = Status::Skipped;
                    out.reason = Some(match &r.spec {
                        ResourceSpec::Run(run) => format!("script '{}' {message}", run.script),
                        _ => message,
                    });
                    if !applied.changed.is_empty() {
                        out.notes
                            .push(format!("files changed: {}", applied.changed.join(", ")));
                    }
                    return out;
                }
                if let (ResourceSpec::Run(_), Some(o)) = (&r.spec, applied.outputs.last()) {
                    out.output = Some(ScriptOutput::new(o.code, &o.stdout, &o.stderr, max));
                }
                out
            }
            Err(e) => {
                if let (
                    ResourceSpec::Run(_),
                    ApplyError::ProcessSpec {
                        source: ProcessError::Failed { code, stderr, .. },
                        ..
                    },
                ) = (&r.spec, &e)
                {
                    out.output = Some(ScriptOutput::new(*code, b"", stderr.as_bytes(), max));
                }
                out.status = Status::Failed;
                out.reason = Some(apply_reason(&e));
                out
            }
        }
    }
}

/// A failed apply in words (the files of this resource were put back, or not).
fn apply_reason(e: &ApplyError) -> String {
    let restored = e.restored();
    if restored {
        e.to_string()
    } else {
        format!("{e} (and not every file could be put back; see the log)")
    }
}

/// The document from `document_path` (one path or a list of parts).
fn read_document(env: &Env, paths: &Value, max: u64) -> Result<Value, HandlerError> {
    let paths: Vec<&str> = match paths {
        Value::String(p) => vec![p.as_str()],
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_DOCUMENT_PARTS => items
            .iter()
            .map(|v| v.as_str())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| refused("\"document_path\" must be a path or a list of paths"))?,
        _ => {
            return Err(refused(format!(
                "\"document_path\" must be a path or a list of 1 to {MAX_DOCUMENT_PARTS} paths"
            )));
        }
    };
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    for path in &paths {
        guestd_core::configure::check_guest_path("document_path", path).map_err(refused)?;
        let left = max.saturating_sub(bytes.len() as u64);
        let part = env.root.read_private(path, left).map_err(|e| {
            refused(match e {
                RootError::TooLarge { .. } => {
                    format!(
                        "the document is larger than {max} bytes ([configure] max_document_bytes)"
                    )
                }
                RootError::NotPrivate(p) => {
                    format!("document '{path}' is not in a place only root can change ('{p}')")
                }
                e if e.is_not_found() => format!("no document '{path}'"),
                e => format!("document '{path}': {e}"),
            })
        })?;
        bytes.extend_from_slice(&part);
    }
    for path in &paths {
        if std::path::Path::new(path).starts_with(INBOX_DIR) {
            if let Err(e) = env.root.remove_file(path) {
                warn!(path, error = %e, "could not remove a configure document part");
            }
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| refused(format!("the document is not JSON: {e}")))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
