//! `user` and `group`: the state from the guest's `/etc/passwd` and `/etc/group` (read through
//! `Root`), changes with the guest's own tools: shadow-utils (`useradd`, `usermod`, `userdel`,
//! `groupadd`, `groupmod`, `groupdel`, with `-R DIR` under `--root`) on Linux, busybox
//! `adduser`/`addgroup`/`deluser`/`delgroup` where shadow-utils is missing (Alpine), `pw` on
//! FreeBSD. Supplementary groups are added, never taken away; a user's home is never removed.

use guestd_core::configure::{Ensure, GroupSpec, ResourcePlan, UserSpec};
use guestd_core::{BackendError, Effect, Env, ProcessSpec, Root};

use super::{changes, has_tool, in_root, with_root_option};
use crate::OsFamily;

/// One `/etc/passwd` entry (the fields `configure` compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub comment: String,
    pub home: String,
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The guest's accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
}

impl Accounts {
    /// Parse `/etc/passwd` and `/etc/group` (missing files are empty; NIS `+`/`-` lines and
    /// malformed lines are skipped).
    pub fn read(root: &Root) -> Result<Self, BackendError> {
        let text = |path: &str| -> Result<String, BackendError> {
            Ok(root
                .read_optional(path)?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default())
        };
        Ok(Self::parse(&text("/etc/passwd")?, &text("/etc/group")?))
    }

    pub fn parse(passwd: &str, group: &str) -> Self {
        let users = passwd
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 7 || f[0].starts_with(['+', '-']) {
                    return None;
                }
                Some(PasswdEntry {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    comment: f[4].to_string(),
                    home: f[5].to_string(),
                    shell: f[6].to_string(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 4 || f[0].starts_with(['+', '-']) {
                    return None;
                }
                Some(GroupEntry {
                    name: f[0].to_string(),
                    gid: f[2].parse().ok()?,
                    members: f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            })
            .collect();
        Self { users, groups }
    }

    pub fn user(&self, name: &str) -> Option<&PasswdEntry> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Supplementary groups `user` is listed in.
    pub fn groups_of(&self, user: &str) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == user))
            .map(|g| g.name.as_str())
            .collect()
    }
}

/// The account tools a guest has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tools {
    /// shadow-utils (`useradd -R DIR` under `--root`).
    Shadow,
    /// busybox's applets (run through `chroot` under `--root`).
    Busybox,
    /// FreeBSD's `pw` (`pw -R DIR`).
    Pw,
}

fn tools(family: OsFamily, env: &Env, what: &str) -> Result<Tools, BackendError> {
    match family {
        OsFamily::Windows => Err(BackendError::Unsupported(format!(
            "managing {what}s on Windows"
        ))),
        OsFamily::FreeBsd => Ok(Tools::Pw),
        // shadow-utils' tools take `-R DIR` themselves and are run from this machine.
        _ if env.root.is_sandbox() && env.runner.exists("useradd") => Ok(Tools::Shadow),
        _ if has_tool(env, "useradd") => Ok(Tools::Shadow),
        _ if has_tool(env, "adduser") && has_tool(env, "addgroup") => Ok(Tools::Busybox),
        _ => Err(BackendError::Unsupported(format!(
            "managing {what}s without useradd or busybox adduser"
        ))),
    }
}

fn shadow(env: &Env, program: &str, args: &[&str]) -> Result<ProcessSpec, BackendError> {
    with_root_option(&env.root, changes(Effect::Accounts), program, "-R", args)
}

fn pw(env: &Env, args: &[&str]) -> Result<ProcessSpec, BackendError> {
    with_root_option(&env.root, changes(Effect::Accounts), "pw", "-R", args)
}

/// Plan a `group` resource.
pub fn plan_group(
    family: OsFamily,
    env: &Env,
    spec: &GroupSpec,
) -> Result<ResourcePlan, BackendError> {
    let accounts = Accounts::read(&env.root)?;
    let current = accounts.group(&spec.name);
    let mut out = ResourcePlan::default();
    let name = spec.name.as_str();
    let gid = spec.gid.map(|g| g.to_string());
    if let (Some(gid), None) = (spec.gid, current) {
        if let Some(other) = accounts.groups.iter().find(|g| g.gid == gid) {
            return Err(BackendError::Invalid(format!(
                "gid {gid} already belongs to group '{}'",
                other.name
            )));
        }
    }
    let tools = tools(family, env, "group")?;
    let cmd = match (spec.ensure, current) {
        (Ensure::Absent, None) => return Ok(out),
        (Ensure::Absent, Some(_)) => {
            out.change(format!("remove group {name}"));
            match tools {
                Tools::Shadow => shadow(env, "groupdel", &[name])?,
                Tools::Busybox => in_root(
                    &env.root,
                    changes(Effect::Accounts),
                    "delgroup",
                    &[name],
                    &[],
                )?,
                Tools::Pw => pw(env, &["groupdel", name])?,
            }
        }
        (Ensure::Present, None) => {
            out.change(format!("create group {name}"));
            let mut args: Vec<&str> = Vec::new();
            match tools {
                Tools::Shadow => {
                    if let Some(gid) = &gid {
                        args.extend(["-g", gid]);
                    }
                    if spec.system {
                        args.push("-r");
                    }
                    args.push(name);
                    shadow(env, "groupadd", &args)?
                }
                Tools::Busybox => {
                    if let Some(gid) = &gid {
                        args.extend(["-g", gid]);
                    }
                    if spec.system {
                        args.push("-S");
                    }
                    args.push(name);
                    in_root(&env.root, changes(Effect::Accounts), "addgroup", &args, &[])?
                }
                Tools::Pw => {
                    args.extend(["groupadd", name]);
                    if let Some(gid) = &gid {
                        args.extend(["-g", gid]);
                    }
                    pw(env, &args)?
                }
            }
        }
        (Ensure::Present, Some(group)) => match spec.gid {
            Some(want) if want != group.gid => {
                if let Some(other) = accounts.groups.iter().find(|g| g.gid == want) {
                    return Err(BackendError::Invalid(format!(
                        "gid {want} already belongs to group '{}'",
                        other.name
                    )));
                }
                out.change(format!("gid {} -> {want}", group.gid));
                let gid = want.to_string();
                match tools {
                    Tools::Shadow => shadow(env, "groupmod", &["-g", &gid, name])?,
                    Tools::Pw => pw(env, &["groupmod", name, "-g", &gid])?,
                    Tools::Busybox => {
                        return Err(BackendError::Invalid(
                            "changing a group's gid needs shadow-utils' groupmod".into(),
                        ));
                    }
                }
            }
            _ => return Ok(out),
        },
    };
    out.plan.commands.push(cmd.into());
    Ok(out)
}

/// Plan a `user` resource.
pub fn plan_user(
    family: OsFamily,
    env: &Env,
    spec: &UserSpec,
) -> Result<ResourcePlan, BackendError> {
    let accounts = Accounts::read(&env.root)?;
    let current = accounts.user(&spec.name);
    let mut out = ResourcePlan::default();
    let name = spec.name.as_str();
    for g in spec.group.iter().chain(&spec.groups) {
        if accounts.group(g).is_none() {
            return Err(BackendError::Invalid(format!(
                "no group '{g}' on this guest"
            )));
        }
    }
    match (spec.ensure, current) {
        (Ensure::Absent, None) => Ok(out),
        (Ensure::Absent, Some(_)) => {
            let tools = tools(family, env, "user")?;
            out.change(format!("remove user {name} (its home is kept)"));
            let cmd = match tools {
                Tools::Shadow => shadow(env, "userdel", &[name])?,
                Tools::Busybox => in_root(
                    &env.root,
                    changes(Effect::Accounts),
                    "deluser",
                    &[name],
                    &[],
                )?,
                Tools::Pw => pw(env, &["userdel", name])?,
            };
            out.plan.commands.push(cmd.into());
            Ok(out)
        }
        (Ensure::Present, None) => {
            if let Some(uid) = spec.uid {
                if let Some(other) = accounts.users.iter().find(|u| u.uid == uid) {
                    return Err(BackendError::Invalid(format!(
                        "uid {uid} already belongs to user '{}'",
                        other.name
                    )));
                }
            }
            let tools = tools(family, env, "user")?;
            out.change(format!("create user {name}"));
            out.plan.commands.extend(create_user(tools, env, spec)?);
            Ok(out)
        }
        (Ensure::Present, Some(user)) => {
            let tools = tools(family, env, "user")?;
            modify_user(tools, env, spec, user, &accounts, &mut out)?;
            Ok(out)
        }
    }
}

fn create_user(
    tools: Tools,
    env: &Env,
    spec: &UserSpec,
) -> Result<Vec<guestd_core::PlannedProcess>, BackendError> {
    let name = spec.name.as_str();
    let uid = spec.uid.map(|u| u.to_string());
    let groups = spec.groups.join(",");
    let create_home = spec.create_home.unwrap_or(!spec.system);
    let mut args: Vec<&str> = Vec::new();
    let mut commands = Vec::new();
    match tools {
        Tools::Shadow => {
            if let Some(uid) = &uid {
                args.extend(["-u", uid]);
            }
            if let Some(g) = &spec.group {
                args.extend(["-g", g]);
            }
            if !groups.is_empty() {
                args.extend(["-G", &groups]);
            }
            if let Some(h) = &spec.home {
                args.extend(["-d", h]);
            }
            if let Some(s) = &spec.shell {
                args.extend(["-s", s]);
            }
            if let Some(c) = &spec.comment {
                args.extend(["-c", c]);
            }
            if spec.system {
                args.push("-r");
            }
            args.push(if create_home { "-m" } else { "-M" });
            args.push(name);
            commands.push(shadow(env, "useradd", &args)?.into());
        }
        Tools::Busybox => {
            args.push("-D");
            if let Some(uid) = &uid {
                args.extend(["-u", uid]);
            }
            if let Some(g) = &spec.group {
                args.extend(["-G", g]);
            }
            if let Some(h) = &spec.home {
                args.extend(["-h", h]);
            }
            if let Some(s) = &spec.shell {
                args.extend(["-s", s]);
            }
            if let Some(c) = &spec.comment {
                args.extend(["-g", c]);
            }
            if spec.system {
                args.push("-S");
            }
            if !create_home {
                args.push("-H");
            }
            args.push(name);
            commands
                .push(in_root(&env.root, changes(Effect::Accounts), "adduser", &args, &[])?.into());
            for g in &spec.groups {
                commands.push(
                    in_root(
                        &env.root,
                        changes(Effect::Accounts),
                        "addgroup",
                        &[name, g],
                        &[],
                    )?
                    .into(),
                );
            }
        }
        Tools::Pw => {
            args.extend(["useradd", name]);
            if let Some(uid) = &uid {
                args.extend(["-u", uid]);
            }
            if let Some(g) = &spec.group {
                args.extend(["-g", g]);
            }
            if !groups.is_empty() {
                args.extend(["-G", &groups]);
            }
            if let Some(h) = &spec.home {
                args.extend(["-d", h]);
            }
            if let Some(s) = &spec.shell {
                args.extend(["-s", s]);
            }
            if let Some(c) = &spec.comment {
                args.extend(["-c", c]);
            }
            if create_home {
                args.push("-m");
            }
            commands.push(pw(env, &args)?.into());
        }
    }
    Ok(commands)
}

fn modify_user(
    tools: Tools,
    env: &Env,
    spec: &UserSpec,
    user: &PasswdEntry,
    accounts: &Accounts,
    out: &mut ResourcePlan,
) -> Result<(), BackendError> {
    let name = spec.name.as_str();
    // Shadow's usermod and pw usermod take the same letters for these.
    let mut flags: Vec<(&str, String)> = Vec::new();
    if let Some(uid) = spec.uid.filter(|u| *u != user.uid) {
        if let Some(other) = accounts.users.iter().find(|u| u.uid == uid) {
            return Err(BackendError::Invalid(format!(
                "uid {uid} already belongs to user '{}'",
                other.name
            )));
        }
        out.change(format!("uid {} -> {uid}", user.uid));
        flags.push(("-u", uid.to_string()));
    }
    if let Some(g) = &spec.group {
        let gid = accounts.group(g).map(|e| e.gid);
        if gid != Some(user.gid) {
            out.change(format!("primary group -> {g}"));
            flags.push(("-g", g.clone()));
        }
    }
    if let Some(h) = spec.home.as_ref().filter(|h| **h != user.home) {
        out.change(format!("home {} -> {h} (not moved)", user.home));
        flags.push(("-d", h.clone()));
    }
    if let Some(s) = spec.shell.as_ref().filter(|s| **s != user.shell) {
        out.change(format!("shell {} -> {s}", user.shell));
        flags.push(("-s", s.clone()));
    }
    if let Some(c) = spec.comment.as_ref().filter(|c| **c != user.comment) {
        out.change("comment");
        flags.push(("-c", c.clone()));
    }
    let current = accounts.groups_of(name);
    let missing: Vec<&str> = spec
        .groups
        .iter()
        .map(String::as_str)
        .filter(|g| !current.contains(g))
        .collect();
    if !missing.is_empty() {
        out.change(format!("add to groups {}", missing.join(",")));
    }
    if flags.is_empty() && missing.is_empty() {
        return Ok(());
    }
    match tools {
        Tools::Shadow => {
            let mut args: Vec<&str> = Vec::new();
            for (flag, value) in &flags {
                args.extend([*flag, value.as_str()]);
            }
            let joined = missing.join(",");
            if !missing.is_empty() {
                args.extend(["-a", "-G", &joined]);
            }
            args.push(name);
            out.plan
                .commands
                .push(shadow(env, "usermod", &args)?.into());
        }
        Tools::Pw => {
            // `pw usermod -G` sets the whole list: the current groups plus the missing ones.
            let all = current
                .iter()
                .copied()
                .chain(missing.iter().copied())
                .collect::<Vec<_>>()
                .join(",");
            let mut args: Vec<&str> = vec!["usermod", name];
            for (flag, value) in &flags {
                args.extend([*flag, value.as_str()]);
            }
            if !missing.is_empty() {
                args.extend(["-G", &all]);
            }
            out.plan.commands.push(pw(env, &args)?.into());
        }
        Tools::Busybox => {
            if !flags.is_empty() {
                return Err(BackendError::Invalid(format!(
                    "changing user '{name}' ({}) needs shadow-utils' usermod, which this guest \
                     does not have",
                    out.changes.join(", ")
                )));
            }
            for g in missing {
                out.plan.commands.push(
                    in_root(
                        &env.root,
                        changes(Effect::Accounts),
                        "addgroup",
                        &[name, g],
                        &[],
                    )?
                    .into(),
                );
            }
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;
    use guestd_core::NullBackend;
    use guestd_testkit::FakeRunner;
    use std::sync::Arc;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n+nis::::::\n\
                          app:x:1001:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root\napp:x:1001:\nweb:x:33:app\n";

    fn sandbox() -> (tempfile::TempDir, Env, Arc<FakeRunner>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(d.path().join("etc/group"), GROUP).unwrap();
        let runner = Arc::new(FakeRunner::new());
        let env = Env {
            root: Root::sandbox(d.path()).unwrap(),
            runner: runner.clone(),
            backend: Arc::new(NullBackend),
        };
        (d, env, runner)
    }

    fn lines(env: &Env, plan: &ResourcePlan) -> Vec<String> {
        let base = env.root.base().unwrap().display().to_string();
        plan.plan
            .commands
            .iter()
            .map(|c| c.command.command_line().replace(&base, "ROOT"))
            .collect()
    }

    #[test]
    fn parses_accounts() {
        let a = Accounts::parse(PASSWD, GROUP);
        assert_eq!(a.users.len(), 2);
        assert_eq!(a.user("app").unwrap().home, "/home/app");
        assert_eq!(a.groups_of("app"), vec!["web"]);
        assert_eq!(a.group("wheel").unwrap().members, vec!["root"]);
    }

    #[test]
    fn groups_are_created_changed_and_removed_with_root_option() {
        let (_d, env, _) = sandbox();
        let mut spec = GroupSpec {
            name: "deploy".into(),
            gid: Some(2000),
            system: true,
            ..GroupSpec::default()
        };
        let plan = plan_group(OsFamily::Debian, &env, &spec).unwrap();
        assert_eq!(lines(&env, &plan), ["groupadd -R ROOT -g 2000 -r deploy"]);
        spec.name = "app".into();
        let plan = plan_group(OsFamily::Debian, &env, &spec).unwrap();
        assert_eq!(lines(&env, &plan), ["groupmod -R ROOT -g 2000 app"]);
        spec.gid = Some(1001);
        assert!(
            plan_group(OsFamily::Debian, &env, &spec)
                .unwrap()
                .is_unchanged()
        );
        spec.gid = Some(33);
        let err = plan_group(OsFamily::Debian, &env, &spec).unwrap_err();
        assert!(err.to_string().contains("'web'"), "{err}");
        spec.ensure = Ensure::Absent;
        spec.gid = None;
        let plan = plan_group(OsFamily::Debian, &env, &spec).unwrap();
        assert_eq!(lines(&env, &plan), ["groupdel -R ROOT app"]);
        spec.name = "nope".into();
        assert!(
            plan_group(OsFamily::Debian, &env, &spec)
                .unwrap()
                .is_unchanged()
        );
        let spec = GroupSpec {
            name: "deploy".into(),
            gid: Some(2000),
            ..GroupSpec::default()
        };
        let plan = plan_group(OsFamily::FreeBsd, &env, &spec).unwrap();
        assert_eq!(lines(&env, &plan), ["pw -R ROOT groupadd deploy -g 2000"]);
    }

    #[test]
    fn users_are_compared_field_by_field() {
        let (_d, env, _) = sandbox();
        let spec = UserSpec {
            name: "svc".into(),
            uid: Some(1500),
            group: Some("app".into()),
            groups: vec!["web".into(), "wheel".into()],
            home: Some("/srv/svc".into()),
            shell: Some("/bin/bash".into()),
            comment: Some("Service, account".into()),
            ..UserSpec::default()
        };
        let plan = plan_user(OsFamily::Debian, &env, &spec).unwrap();
        assert_eq!(
            lines(&env, &plan),
            [
                "useradd -R ROOT -u 1500 -g app -G web,wheel -d /srv/svc -s /bin/bash -c Service, account -m svc"
            ]
        );
        assert_eq!(plan.plan.commands[0].command.args[13], "Service, account");
        let same = UserSpec {
            name: "app".into(),
            uid: Some(1001),
            group: Some("app".into()),
            groups: vec!["web".into()],
            shell: Some("/bin/sh".into()),
            ..UserSpec::default()
        };
        assert!(
            plan_user(OsFamily::Debian, &env, &same)
                .unwrap()
                .is_unchanged()
        );
        let more = UserSpec {
            groups: vec!["web".into(), "wheel".into()],
            shell: Some("/bin/bash".into()),
            ..same.clone()
        };
        let plan = plan_user(OsFamily::Debian, &env, &more).unwrap();
        assert_eq!(
            lines(&env, &plan),
            ["usermod -R ROOT -s /bin/bash -a -G wheel app"]
        );
        assert_eq!(
            plan.changes,
            ["shell /bin/sh -> /bin/bash", "add to groups wheel"]
        );
        let plan = plan_user(OsFamily::FreeBsd, &env, &more).unwrap();
        assert_eq!(
            lines(&env, &plan),
            ["pw -R ROOT usermod app -s /bin/bash -G web,wheel"]
        );
        let unknown = UserSpec {
            groups: vec!["nope".into()],
            ..same
        };
        let err = plan_user(OsFamily::Debian, &env, &unknown).unwrap_err();
        assert_eq!(err.to_string(), "no group 'nope' on this guest");
    }

    #[test]
    fn busybox_where_shadow_is_missing() {
        let (d, env, runner) = sandbox();
        runner.mark_missing("useradd");
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        for tool in ["adduser", "addgroup"] {
            std::fs::write(d.path().join("bin").join(tool), "").unwrap();
        }
        let spec = UserSpec {
            name: "svc".into(),
            groups: vec!["web".into()],
            system: true,
            ..UserSpec::default()
        };
        let plan = plan_user(OsFamily::Alpine, &env, &spec).unwrap();
        assert_eq!(
            lines(&env, &plan),
            [
                "chroot ROOT adduser -D -S -H svc",
                "chroot ROOT addgroup svc web"
            ]
        );
    }
}
