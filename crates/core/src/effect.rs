//! What a command reaches beyond the guest's files, and the sandbox that keeps it off the machine.
//!
//! `--root DIR` keeps every file guestd touches inside `DIR` (that is [`Root`]'s job), but a
//! command such as `shutdown`, `fsfreeze`, `ifup` or `date -s` acts on the machine whatever the
//! root is. So every [`ProcessSpec`] says what it reaches ([`Reach`]): the machine, with one
//! [`Effect`] category (the default of [`ProcessSpec::new`]: a command nobody classified is assumed
//! to act on the machine), only the machine's state ([`Reach::Observe`], e.g. `ip addr show`),
//! or nothing outside the root ([`Reach::Root`], e.g. `chpasswd -R DIR`).
//!
//! When the root is a sandbox, [`contain`] wraps the command runner in a [`SandboxRunner`]: the
//! one place the policy is enforced. A machine command whose effect the configuration does not
//! allow (`[sandbox] allow_effects`, empty by default) is logged and answered with
//! [`ProcessError::NotRun`] instead of running; [`crate::plan::apply`] turns that into a step it
//! reports as not run ([`crate::plan::Applied::not_run`]), every other caller sees an error that
//! says what was not run and why. On the guest's real root (no `--root`) nothing is wrapped.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::root::Root;
use crate::runner::{Output, ProcessError, ProcessRunner, ProcessSpec};

/// What a command acts on beyond the guest's files (the categories `[sandbox] allow_effects`
/// names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Power off, reboot, halt, suspend (`shutdown`, `systemctl suspend`, `pm-suspend`).
    Power,
    /// Freezing and thawing filesystems (`fsfreeze`, the fsfreeze hook).
    Freeze,
    /// Discarding unused blocks of mounted filesystems (`fstrim`).
    Trim,
    /// Interfaces, routes and the network manager (`ifup`, `ifdown`, `netplan apply`, `nmcli`,
    /// `networkctl`, `service netif restart`, `netsh`).
    Network,
    /// The kernel's host name (`hostname NAME`, `hostnamectl set-hostname`).
    Hostname,
    /// Starting, stopping and restarting services (guestd's own restart after an update and the
    /// watchdog that does it).
    Service,
    /// The system clock and the RTC (`date -s`, `hwclock -w`/`-s`).
    Clock,
    /// Mounting filesystems (the config drive).
    Mount,
    /// Programs an update brings along (its `installer.sh`).
    Install,
    /// Registration and licence activation (`rhnreg_ks`, `slmgr`).
    Activation,
    /// Accounts of the real system (`chpasswd` without `-R`).
    Accounts,
    /// The administrator's scripts `configure`'s `run` executes: run inside the root (`chroot`
    /// under `--root`), but what a script does is up to it, so it counts as reaching the
    /// machine.
    Script,
    /// A command nobody classified: assumed to act on the machine.
    Other,
}

impl Effect {
    pub const ALL: [Effect; 13] = [
        Effect::Power,
        Effect::Freeze,
        Effect::Trim,
        Effect::Network,
        Effect::Hostname,
        Effect::Service,
        Effect::Clock,
        Effect::Mount,
        Effect::Install,
        Effect::Activation,
        Effect::Accounts,
        Effect::Script,
        Effect::Other,
    ];

    /// The configuration name (`network`, `power`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Power => "power",
            Self::Freeze => "freeze",
            Self::Trim => "trim",
            Self::Network => "network",
            Self::Hostname => "hostname",
            Self::Service => "service",
            Self::Clock => "clock",
            Self::Mount => "mount",
            Self::Install => "install",
            Self::Activation => "activation",
            Self::Accounts => "accounts",
            Self::Script => "script",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a command reaches. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// Changes the machine beyond the guest's files.
    Machine(Effect),
    /// Only reads the machine's state (`ip addr show`, `systemctl status`, `blkid`).
    Observe,
    /// Stays inside the root (`chpasswd -R DIR`, a staged binary's `--self-test`).
    Root,
}

impl Default for Reach {
    /// Unclassified commands act on the machine.
    fn default() -> Self {
        Self::Machine(Effect::Other)
    }
}

/// `[sandbox]` in guestd.toml: which effects a `--root` sandbox lets reach the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Effects whose commands run for real although the root is a sandbox (tests in a network
    /// namespace or a VM that need the effect). Empty: none.
    pub allow_effects: BTreeSet<Effect>,
}

/// Wrap `runner` in a [`SandboxRunner`] when `root` is a sandbox; on the real root return it as
/// it is.
pub fn contain(
    root: &Root,
    runner: Arc<dyn ProcessRunner>,
    config: &SandboxConfig,
) -> Arc<dyn ProcessRunner> {
    if root.is_sandbox() {
        Arc::new(SandboxRunner::new(runner, config.allow_effects.clone()))
    } else {
        runner
    }
}

/// Runs what stays inside the root or only observes, and the machine commands whose effect is
/// allowed; refuses the others with [`ProcessError::NotRun`] (logged with the command line).
pub struct SandboxRunner {
    inner: Arc<dyn ProcessRunner>,
    allowed: BTreeSet<Effect>,
}

impl fmt::Debug for SandboxRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxRunner")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl SandboxRunner {
    pub fn new(inner: Arc<dyn ProcessRunner>, allowed: BTreeSet<Effect>) -> Self {
        Self { inner, allowed }
    }

    /// Whether `cmd` may run here.
    pub fn permits(&self, cmd: &ProcessSpec) -> bool {
        match cmd.reach {
            Reach::Root | Reach::Observe => true,
            Reach::Machine(effect) => self.allowed.contains(&effect),
        }
    }
}

impl ProcessRunner for SandboxRunner {
    fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
        if self.permits(cmd) {
            return self.inner.run(cmd);
        }
        let Reach::Machine(effect) = cmd.reach else {
            unreachable!("root-local and observing commands are always permitted")
        };
        info!(command = %cmd, %effect,
            "not run: the --root sandbox keeps this effect off the machine ([sandbox] allow_effects)");
        Err(ProcessError::NotRun {
            program: cmd.program.clone(),
            effect,
        })
    }

    fn exists(&self, program: &str) -> bool {
        self.inner.exists(program)
    }

    fn allows(&self, reach: Reach) -> bool {
        match reach {
            Reach::Root | Reach::Observe => true,
            Reach::Machine(effect) => self.allowed.contains(&effect),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl ProcessRunner for Recorder {
        fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
            self.0.lock().unwrap().push(cmd.command_line());
            Ok(Output {
                code: Some(0),
                ..Output::default()
            })
        }
        fn exists(&self, _: &str) -> bool {
            true
        }
    }

    #[test]
    fn machine_commands_are_refused_unless_their_effect_is_allowed() {
        let inner = Arc::new(Recorder::default());
        let allowed = BTreeSet::from([Effect::Network]);
        let sandbox = SandboxRunner::new(inner.clone(), allowed);
        let err = sandbox
            .run(&ProcessSpec::new("shutdown").effect(Effect::Power))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "'shutdown' was not run: the --root sandbox keeps power effects off this machine \
             ([sandbox] allow_effects)"
        );
        // Unclassified is "other", refused too.
        assert!(matches!(
            sandbox.run(&ProcessSpec::new("mystery")),
            Err(ProcessError::NotRun {
                effect: Effect::Other,
                ..
            })
        ));
        sandbox
            .run(&ProcessSpec::new("ifup").arg("eth0").effect(Effect::Network))
            .unwrap();
        sandbox
            .run(&ProcessSpec::new("ip").args(["addr", "show"]).observes())
            .unwrap();
        sandbox
            .run(
                &ProcessSpec::new("chpasswd")
                    .args(["-R", "/sandbox"])
                    .root_local(),
            )
            .unwrap();
        assert_eq!(
            *inner.0.lock().unwrap(),
            ["ifup eth0", "ip addr show", "chpasswd -R /sandbox"]
        );
    }

    #[test]
    fn only_a_sandbox_root_is_contained() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn ProcessRunner> = Arc::new(Recorder::default());
        let config = SandboxConfig::default();
        let sandboxed = contain(&Root::sandbox(dir.path()).unwrap(), inner.clone(), &config);
        assert!(sandboxed.run(&ProcessSpec::new("reboot")).is_err());
        let real = contain(&Root::system(), inner, &config);
        assert!(real.run(&ProcessSpec::new("reboot")).is_ok());
    }

    #[test]
    fn configuration_names_effects_and_rejects_unknown_ones() {
        let c: SandboxConfig =
            serde_json::from_str(r#"{"allow_effects": ["network", "hostname"]}"#).unwrap();
        assert_eq!(
            c.allow_effects,
            BTreeSet::from([Effect::Network, Effect::Hostname])
        );
        assert!(serde_json::from_str::<SandboxConfig>(r#"{"allow_effects": ["nuke"]}"#).is_err());
        assert!(serde_json::from_str::<SandboxConfig>(r#"{"allow": []}"#).is_err());
        for e in Effect::ALL {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.name()));
        }
    }
}
