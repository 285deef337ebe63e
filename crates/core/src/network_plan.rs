//! `resetnetwork`'s plan, and the one place it is applied.
//!
//! The backend plans ([`Backend::plan_reset_network`](crate::Backend::plan_reset_network)):
//! it matches the host's interfaces to this guest's devices, picks the network tool, renders its
//! files and returns a [`NetworkPlan`]; nothing is written or run there but lookups. Every
//! caller (the `resetnetwork` handler, XenCenter's static IP setting in xen-metrics) then hands
//! that plan to [`apply_network_plan`], which carries it out through [`crate::plan::apply`]
//! (backups, atomic writes, restarts, checks; on failure the files are restored and the
//! interfaces restarted with the old configuration) and says what happened in the words the
//! host sees. So rollback, the `--root` sandbox's not-run report and the reply texts exist
//! once, whoever asks for a network change.
//!
//! Windows' computer name is not a file or a process: it is set through kernel32
//! ([`ComputerName`]). The backend decides at plan time whether it must change (it reads the
//! name waiting for the next boot) and puts the change in the plan as a
//! [`ComputerNameChange`]; it is made after the network is configured.

use std::fmt;
use std::sync::Arc;

use tracing::{info, warn};

use crate::backend::{BackendError, Env, NetworkReset};
use crate::effect::{Effect, Reach};
use crate::plan::{ApplyError, ApplyOptions, BACKUP_DIR, Expect, NotRun, Plan, apply};

/// Previous versions kept per file a network plan replaces (under [`BACKUP_DIR`]).
pub const NETWORK_KEEP_BACKUPS: usize = 3;

/// What `resetnetwork` (or a static IP request) will do on this guest, planned and not yet
/// applied.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    /// The network tool's files, the restarts of the affected interfaces, the checks that
    /// their addresses came up, and the rollback commands; hostname and resolver files too.
    pub plan: Plan,
    /// The network tool written for (`ifupdown`, `netplan`, `windows`, …), for the log.
    pub tool: String,
    /// The guest's device names being configured (empty: only the hostname).
    pub interfaces: Vec<String>,
    /// Where the host's data came from (`inline`, `xenstore`, `config-drive`,
    /// `static-ip-setting`).
    pub source: String,
    /// What a failure leaves behind, for the reply.
    pub on_failure: OnFailure,
    /// The Windows computer name to set once the network is configured.
    pub computer_name: Option<ComputerNameChange>,
    /// The message the host gets on success (empty as the reference agents answer, or
    /// something the host must know: a Windows rename that waits for a reboot).
    pub notice: String,
}

impl NetworkPlan {
    /// An empty plan for `tool` (callers fill in what they render).
    pub fn new(tool: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            plan: Plan::default(),
            tool: tool.into(),
            interfaces: Vec::new(),
            source: source.into(),
            on_failure: OnFailure::Restore,
            computer_name: None,
            notice: String::new(),
        }
    }

    /// `eth0,eth1` or `hostname`: what the plan is about, for the log.
    fn subject(&self) -> String {
        if self.interfaces.is_empty() {
            "hostname".to_string()
        } else {
            self.interfaces.join(",")
        }
    }
}

/// What is left behind when applying a network plan fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The previous files are put back and the interfaces restarted with them.
    Restore,
    /// There are no files to put back (netsh): the adapters are returned to DHCP.
    Dhcp,
}

/// Reading and setting the computer's DNS host name for the next boot (Windows: kernel32's
/// `SetComputerNameExW`; tests use a recording stand-in).
pub trait ComputerName: Send + Sync + fmt::Debug {
    /// The DNS host name the machine has after its next boot: a rename waiting for a reboot,
    /// else the current name.
    fn pending(&self) -> Result<String, BackendError>;

    /// Set the DNS host name (and the NetBIOS name Windows derives from it) for the next boot.
    fn set(&self, label: &str) -> Result<(), BackendError>;
}

/// A computer name the plan sets, and through what.
#[derive(Clone)]
pub struct ComputerNameChange {
    /// The DNS host label to set (already checked against Windows' rules).
    pub label: String,
    /// The name waiting for the next boot when the plan was made (for the log).
    pub previous: String,
    pub names: Arc<dyn ComputerName>,
}

impl fmt::Debug for ComputerNameChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComputerNameChange")
            .field("label", &self.label)
            .field("previous", &self.previous)
            .finish()
    }
}

/// Carry out a [`NetworkPlan`] on `env`: see the module docs. Returns a summary for the log
/// and the reply's message; a failure is [`BackendError::Failed`] with the reason the host
/// sees (what failed, and whether the previous configuration was restored).
pub fn apply_network_plan(env: &Env, planned: &NetworkPlan) -> Result<NetworkReset, BackendError> {
    let options = ApplyOptions {
        keep_backups: NETWORK_KEEP_BACKUPS,
    };
    let mut applied = match apply(&planned.plan, &env.root, env.runner.as_ref(), options) {
        Ok(applied) => applied,
        Err(e) => return Err(failure(planned, e)),
    };
    let changed: Vec<&String> = applied
        .changed
        .iter()
        .filter(|p| !p.starts_with(BACKUP_DIR))
        .collect();
    let mut done = NetworkReset {
        summary: format!(
            "{} via {} from {}: changed {changed:?}",
            planned.subject(),
            planned.tool,
            planned.source,
        ),
        notice: planned.notice.clone(),
    };
    let hostname_allowed = env.runner.allows(Reach::Machine(Effect::Hostname));
    if let Some(change) = planned.computer_name.as_ref().filter(|_| !hostname_allowed) {
        // An API call, not a command: the sandbox's rule for hostname commands holds for it
        // all the same, and the reply lists it with the commands that were not run.
        info!(hostname = %change.label, "computer name not set: the --root sandbox keeps hostname effects off this machine");
        applied.not_run.push(NotRun {
            program: "SetComputerNameExW".into(),
            effect: Effect::Hostname,
        });
        // The planned notice says the name was set; the not-run note says what happened.
        done.notice.clear();
        done.summary = format!("{}; computer name not set (sandbox)", done.summary);
    } else if let Some(change) = &planned.computer_name {
        change.names.set(&change.label).map_err(|e| {
            warn!(error = %e, "setting the computer name failed");
            let what = if planned.interfaces.is_empty() {
                ""
            } else {
                "the network is configured, but "
            };
            BackendError::Failed(format!("{what}setting the computer name failed: {e}"))
        })?;
        info!(
            hostname = %change.label,
            previous = %change.previous,
            "computer name set; it takes effect after a reboot (guestd does not reboot)"
        );
    }
    if !done.notice.is_empty() {
        done.summary = format!("{}; {}", done.summary, done.notice);
    }
    // Under a --root sandbox the restart and hostname commands may not have run: the files
    // are written, the host is told what did not happen.
    if let Some(not_run) = applied.not_run_message() {
        done.notice = if done.notice.is_empty() {
            not_run
        } else {
            format!("{}; {not_run}", done.notice)
        };
    }
    Ok(done)
}

/// The reason the host sees for a failed apply (the detail is logged).
fn failure(planned: &NetworkPlan, e: ApplyError) -> BackendError {
    let restored = e.restored();
    warn!(error = %e, restored, "resetnetwork failed");
    let what = match &e {
        ApplyError::Unexpected { program, .. } if is_address_check(&planned.plan, program) => {
            "the interfaces did not come up with their addresses".to_string()
        }
        other => other.to_string(),
    };
    BackendError::Failed(match (planned.on_failure, restored) {
        (OnFailure::Dhcp, _) => {
            format!("network configuration failed ({what}); the adapters were returned to DHCP")
        }
        (OnFailure::Restore, true) => {
            format!(
                "network configuration failed ({what}); the previous configuration was restored"
            )
        }
        (OnFailure::Restore, false) => format!(
            "network configuration failed ({what}); restoring the previous files also failed, see the log"
        ),
    })
}

/// Whether `program` is one of the plan's checks that an address came up (a command that only
/// observes the machine and looks for the address in its output).
fn is_address_check(plan: &Plan, program: &str) -> bool {
    plan.commands.iter().any(|c| {
        c.command.program == program
            && c.command.reach == Reach::Observe
            && matches!(c.expect, Expect::StdoutContains(_))
    })
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::backend::NullBackend;
    use crate::plan::{FileChange, PlannedProcess};
    use crate::root::{Root, WriteOptions};
    use crate::runner::{Output, ProcessError, ProcessRunner, ProcessSpec};

    /// Exits 1 for the programs in `fail`; prints `stdout` for everything else.
    #[derive(Default)]
    struct Runner {
        fail: Vec<&'static str>,
        stdout: &'static str,
    }

    impl ProcessRunner for Runner {
        fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
            let code = i32::from(self.fail.contains(&cmd.program.as_str()));
            Ok(Output {
                code: Some(code),
                stdout: self.stdout.as_bytes().to_vec(),
                ..Output::default()
            })
        }
        fn exists(&self, _: &str) -> bool {
            true
        }
    }

    /// Records the names set; refuses them when `refuse`.
    #[derive(Debug, Default)]
    struct Names {
        set: Mutex<Vec<String>>,
        refuse: bool,
    }

    impl ComputerName for Names {
        fn pending(&self) -> Result<String, BackendError> {
            Ok("OLD".into())
        }
        fn set(&self, label: &str) -> Result<(), BackendError> {
            if self.refuse {
                return Err(BackendError::Failed("SetComputerNameExW failed".into()));
            }
            self.set.lock().unwrap().push(label.into());
            Ok(())
        }
    }

    fn env(dir: &std::path::Path, runner: Runner) -> Env {
        Env {
            root: Root::sandbox(dir).unwrap(),
            runner: Arc::new(runner),
            backend: Arc::new(NullBackend),
        }
    }

    /// eth0's file, a restart, and the check that 10.0.0.5 came up.
    fn planned() -> NetworkPlan {
        let mut p = NetworkPlan::new("ifupdown", "inline");
        p.interfaces = vec!["eth0".into()];
        p.plan.changes.push(FileChange::write(
            "/etc/network/interfaces",
            "iface eth0 inet static\n",
            WriteOptions::mode(0o644),
        ));
        p.plan
            .commands
            .push(ProcessSpec::new("ifup").arg("eth0").into());
        let mut check: PlannedProcess = ProcessSpec::new("ip")
            .args(["-o", "addr", "show", "dev", "eth0"])
            .observes()
            .into();
        check.expect = Expect::StdoutContains("inet 10.0.0.5/24 ".into());
        p.plan.commands.push(check);
        p
    }

    #[test]
    fn success_says_what_changed_and_keeps_the_notice() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = planned();
        p.notice = "something the host must know".into();
        let runner = Runner {
            stdout: "2: eth0    inet 10.0.0.5/24 scope global",
            ..Runner::default()
        };
        let done = apply_network_plan(&env(dir.path(), runner), &p).unwrap();
        assert_eq!(
            done.summary,
            "eth0 via ifupdown from inline: changed [\"/etc/network/interfaces\"]; something the host must know"
        );
        assert_eq!(done.notice, "something the host must know");
    }

    #[test]
    fn a_missing_address_restores_the_files_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/network")).unwrap();
        std::fs::write(dir.path().join("etc/network/interfaces"), "old\n").unwrap();
        let err = apply_network_plan(&env(dir.path(), Runner::default()), &planned())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "network configuration failed (the interfaces did not come up with their addresses); the previous configuration was restored"
        );
        let text = std::fs::read_to_string(dir.path().join("etc/network/interfaces")).unwrap();
        assert_eq!(text, "old\n");
    }

    #[test]
    fn without_files_to_restore_the_adapters_go_back_to_dhcp() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = planned();
        p.plan.changes.clear();
        p.on_failure = OnFailure::Dhcp;
        let runner = Runner {
            fail: vec!["ifup"],
            ..Runner::default()
        };
        let err = apply_network_plan(&env(dir.path(), runner), &p)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "network configuration failed ('ifup' failed with exit status 1); the adapters were returned to DHCP"
        );
    }

    /// The computer name is set only after the network came up, and its failure says the
    /// network part is done.
    #[test]
    fn the_computer_name_is_set_after_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let names = Arc::new(Names::default());
        let mut p = planned();
        p.computer_name = Some(ComputerNameChange {
            label: "web1".into(),
            previous: "OLD".into(),
            names: names.clone(),
        });
        // The network fails: no name is set.
        apply_network_plan(&env(dir.path(), Runner::default()), &p).unwrap_err();
        assert!(names.set.lock().unwrap().is_empty());
        let up = || Runner {
            stdout: "inet 10.0.0.5/24 ",
            ..Runner::default()
        };
        apply_network_plan(&env(dir.path(), up()), &p).unwrap();
        assert_eq!(*names.set.lock().unwrap(), ["web1"]);

        p.computer_name.as_mut().unwrap().names = Arc::new(Names {
            refuse: true,
            ..Names::default()
        });
        let err = apply_network_plan(&env(dir.path(), up()), &p)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the network is configured, but setting the computer name failed: SetComputerNameExW failed"
        );
        p.interfaces.clear();
        p.plan = Plan::default();
        let err = apply_network_plan(&env(dir.path(), up()), &p)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "setting the computer name failed: SetComputerNameExW failed"
        );
    }

    /// Under a `--root` sandbox that keeps hostname effects off the machine, the computer name
    /// (an API call, not a command) is not set either, and the reply says so with the
    /// commands that were not run; with `hostname` allowed it is set.
    #[test]
    fn the_sandbox_keeps_the_computer_name_off_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let names = Arc::new(Names::default());
        let mut p = planned();
        p.plan.commands.clear();
        p.notice = "hostname set to 'web1'; it takes effect after a reboot".into();
        p.computer_name = Some(ComputerNameChange {
            label: "web1".into(),
            previous: "OLD".into(),
            names: names.clone(),
        });
        let sandboxed = |allowed: &[Effect]| Env {
            runner: Arc::new(crate::effect::SandboxRunner::new(
                Arc::new(Runner::default()),
                allowed.iter().copied().collect(),
            )),
            ..env(dir.path(), Runner::default())
        };
        let done = apply_network_plan(&sandboxed(&[]), &p).unwrap();
        assert!(names.set.lock().unwrap().is_empty());
        assert_eq!(
            done.notice,
            "not run (the --root sandbox keeps these effects off this machine; [sandbox] \
             allow_effects): SetComputerNameExW (hostname)"
        );
        let done = apply_network_plan(&sandboxed(&[Effect::Hostname]), &p).unwrap();
        assert_eq!(*names.set.lock().unwrap(), ["web1"]);
        assert_eq!(done.notice, p.notice);
    }
}
