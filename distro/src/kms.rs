//! `kmsactivate` plans (spec §4.8): RHN registration on the RedHat family, KMS activation with
//! `slmgr` on Windows. Pure: they read through `Root` and return a `Plan`.
//!
//! The activation key never appears in our argv or logs: it goes to a small `sh` wrapper on
//! stdin. Known weakness: `rhnreg_ks` has no option to read the key from a file or stdin, so the
//! wrapper must pass it to `rhnreg_ks` as `--activationkey`, where it is visible in
//! `/proc/<pid>/cmdline` to local users for the few seconds `rhnreg_ks` runs.

use guestd_core::plan::{FileChange, Plan, PlannedProcess};
use guestd_core::{BackendError, Effect, ProcessSpec, Root, WriteOptions};
use zeroize::Zeroizing;

/// RHN client configuration rewritten with the requested servers.
pub const UP2DATE: &str = "/etc/sysconfig/rhn/up2date";
pub const RHNREG_KS: &str = "/usr/sbin/rhnreg_ks";

/// Register with RHN: point `up2date` at `domains` (when given), then run `rhnreg_ks`.
pub fn plan_rhn(
    root: &Root,
    activation_key: &str,
    profile: &str,
    domains: &[String],
) -> Result<Plan, BackendError> {
    if activation_key.is_empty() || activation_key.chars().any(char::is_control) {
        return Err(BackendError::Invalid("Invalid RHN activation key".into()));
    }
    if profile.chars().any(char::is_control) {
        return Err(BackendError::Invalid("Invalid RHN profile name".into()));
    }
    for d in domains {
        if !is_host_port(d) {
            return Err(BackendError::Invalid(format!(
                "Invalid RHN server name '{d}'"
            )));
        }
    }
    let mut plan = Plan::default();
    if !domains.is_empty() {
        let existing = root.read_optional(UP2DATE)?;
        let text = existing
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        plan.changes.push(FileChange::write(
            UP2DATE,
            up2date_with_servers(text.as_deref(), domains),
            WriteOptions::mode(0o600),
        ));
    }
    let script = format!(
        "IFS= read -r key; exec {RHNREG_KS} --activationkey \"$key\" --profilename \"$1\" --force"
    );
    let mut stdin = Zeroizing::new(activation_key.as_bytes().to_vec());
    stdin.push(b'\n');
    plan.commands.push(PlannedProcess::from(
        ProcessSpec::new("/bin/sh")
            .args(["-c", &script, "guestd-kmsactivate", profile])
            .stdin(stdin)
            .timeout(std::time::Duration::from_secs(300))
            .effect(Effect::Activation),
    ));
    Ok(plan)
}

/// `serverURL`/`noSSLServerURL` set to the domains (`;`-separated, as up2date reads them);
/// every other line kept.
fn up2date_with_servers(existing: Option<&str>, domains: &[String]) -> String {
    let join = |scheme: &str| {
        domains
            .iter()
            .map(|d| format!("{scheme}://{d}/XMLRPC"))
            .collect::<Vec<_>>()
            .join(";")
    };
    let wanted = [
        ("serverURL", join("https")),
        ("noSSLServerURL", join("http")),
    ];
    let mut out = String::new();
    let mut seen = [false; 2];
    for line in existing
        .unwrap_or("# RHN client configuration (written by guestd kmsactivate)\n")
        .lines()
    {
        let key = line.split('=').next().unwrap_or("").trim();
        match wanted.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                out.push_str(&format!("{}={}\n", wanted[i].0, wanted[i].1));
                seen[i] = true;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in wanted.iter().enumerate() {
        if !seen[i] {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

/// Windows: `slmgr /skms <server>` then `/ato`.
pub fn plan_windows(system_root: &str, server: &str) -> Result<Plan, BackendError> {
    if !is_host_port(server) {
        return Err(BackendError::Invalid(format!(
            "Invalid KMS server '{server}': expected host or host:port"
        )));
    }
    let slmgr = format!(
        "{}\\System32\\slmgr.vbs",
        system_root.trim_end_matches('\\')
    );
    let cscript = |args: &[&str]| {
        PlannedProcess::from(
            ProcessSpec::new("cscript.exe")
                .args(["//nologo", slmgr.as_str()])
                .args(args.iter().copied())
                .timeout(std::time::Duration::from_secs(300))
                .effect(Effect::Activation),
        )
    };
    Ok(Plan {
        changes: Vec::new(),
        commands: vec![cscript(&["/skms", server]), cscript(&["/ato"])],
        ..Plan::default()
    })
}

/// `host`, `host:port` or `[v6]:port` made of safe characters only.
fn is_host_port(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (h, Some(p)),
        _ => (s, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok && !host.starts_with('-')
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    #[test]
    fn host_port_validation() {
        for ok in [
            "kms.example.com",
            "kms:1688",
            "10.0.0.1:1688",
            "[fd00::1]:1688",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "a b",
            "kms:0",
            "kms:99999",
            "a;b",
            "x/y",
            "k$(id)",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn up2date_keeps_other_lines() {
        let old = "# comment\nserverURL=https://old/XMLRPC\nuseGPG=1\n";
        let new = up2date_with_servers(Some(old), &["a.example".into(), "b.example".into()]);
        assert_eq!(
            new,
            "# comment\nserverURL=https://a.example/XMLRPC;https://b.example/XMLRPC\nuseGPG=1\n\
             noSSLServerURL=http://a.example/XMLRPC;http://b.example/XMLRPC\n"
        );
    }

    #[cfg(unix)]
    #[test]
    fn rhn_plan_keeps_the_key_out_of_argv() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let plan = plan_rhn(&root, "1-secretkey", "web01", &["rhn.example".into()]).unwrap();
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].path(), UP2DATE);
        let cmd = &plan.commands[0].command;
        assert!(!cmd.command_line().contains("secretkey"));
        assert!(!format!("{cmd:?}").contains("secretkey"));
        assert_eq!(
            cmd.stdin.as_deref().map(Vec::as_slice),
            Some(&b"1-secretkey\n"[..])
        );
        assert_eq!(cmd.args.last().map(String::as_str), Some("web01"));
        assert!(plan_rhn(&root, "", "p", &[]).is_err());
        assert!(plan_rhn(&root, "k", "p", &["bad host".into()]).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn rhn_wrapper_passes_key_and_profile_to_rhnreg_ks() {
        // Run the real wrapper script against a stand-in rhnreg_ks that prints its argv.
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let plan = plan_rhn(&root, "1-k e y", "my profile", &[]).unwrap();
        let mut cmd = plan.commands[0].command.clone();
        let fake = d.path().join("rhnreg_ks");
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor a in \"$@\"; do echo \"[$a]\"; done\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        cmd.args[1] = cmd.args[1].replace(RHNREG_KS, fake.to_str().unwrap());
        let out = guestd_core::ProcessRunner::run(&guestd_core::SystemRunner, &cmd).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "[--activationkey]\n[1-k e y]\n[--profilename]\n[my profile]\n[--force]\n"
        );
    }

    #[test]
    fn windows_plan() {
        let plan = plan_windows("C:\\Windows", "kms.example:1688").unwrap();
        let lines: Vec<_> = plan
            .commands
            .iter()
            .map(|c| c.command.command_line())
            .collect();
        assert_eq!(
            lines,
            [
                "cscript.exe //nologo C:\\Windows\\System32\\slmgr.vbs /skms kms.example:1688",
                "cscript.exe //nologo C:\\Windows\\System32\\slmgr.vbs /ato"
            ]
        );
        assert!(plan_windows("C:\\Windows", "x & calc").is_err());
    }
}
