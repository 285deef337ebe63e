//! The resources of a `configure` document, as handlers parse them and backends plan them.
//!
//! The handler (`guestd_handlers::configure`) turns the host's JSON into these types, checking
//! every value with the validators below; a backend turns one resource into a
//! [`ResourcePlan`] ([`Backend::plan_resource`](crate::Backend::plan_resource)): what differs
//! from the guest's state and the [`Plan`] that changes it. Nothing here touches the guest.
//!
//! The validators are the one definition of what a host may name: they refuse anything that
//! could be read as an option (a leading `-`), a path where a name belongs, and control
//! characters anywhere, so that planners may hand the values to the guest's tools as argv.

use std::fmt;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::plan::Plan;

/// The kinds of resource, in the order the README lists them (named in lower case in documents
/// and in `[configure] kinds`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    File,
    Directory,
    User,
    Group,
    Package,
    Service,
    Archive,
    Run,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 8] = [
        Self::File,
        Self::Directory,
        Self::User,
        Self::Group,
        Self::Package,
        Self::Service,
        Self::Archive,
        Self::Run,
    ];

    /// The name in documents and in `[configure] kinds`.
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::User => "user",
            Self::Group => "group",
            Self::Package => "package",
            Self::Service => "service",
            Self::Archive => "archive",
            Self::Run => "run",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the thing should exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ensure {
    #[default]
    Present,
    Absent,
}

/// An owner or group: a name (looked up in the guest's account files) or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Name(String),
    Id(u32),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Id(id) => write!(f, "{id}"),
        }
    }
}

/// An SELinux label for a file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelinuxContext {
    /// The policy's default label for the path (`restorecon`).
    Default,
    /// Exactly this context (`chcon`), e.g. `system_u:object_r:httpd_config_t:s0`.
    Exact(String),
}

/// `file`: a regular file with this content, mode, owner and label (or no file).
#[derive(Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub ensure: Ensure,
    /// `None`: the file must already exist; only its mode, owner and label are managed.
    pub content: Option<Zeroizing<Vec<u8>>>,
    pub mode: Option<u32>,
    pub owner: Option<Principal>,
    pub group: Option<Principal>,
    pub selinux: Option<SelinuxContext>,
}

impl fmt::Debug for FileSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSpec")
            .field("path", &self.path)
            .field("ensure", &self.ensure)
            .field("content", &self.content.as_ref().map(|c| c.len()))
            .field("mode", &self.mode.map(|m| format!("{m:o}")))
            .field("owner", &self.owner)
            .field("group", &self.group)
            .field("selinux", &self.selinux)
            .finish()
    }
}

/// `directory`: a directory with this mode, owner and label (or, absent, no empty directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySpec {
    pub path: String,
    pub ensure: Ensure,
    pub mode: Option<u32>,
    pub owner: Option<Principal>,
    pub group: Option<Principal>,
    pub selinux: Option<SelinuxContext>,
}

/// `user`: a local account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSpec {
    pub name: String,
    pub ensure: Ensure,
    pub uid: Option<u32>,
    /// Primary group (a name).
    pub group: Option<String>,
    /// Supplementary groups the account must be in (others it is in are left alone).
    pub groups: Vec<String>,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub comment: Option<String>,
    /// A system account (a uid from the system range, no home created unless asked).
    pub system: bool,
    /// Create the home directory (default: yes for ordinary accounts, no for system ones).
    pub create_home: Option<bool>,
}

/// `group`: a local group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupSpec {
    pub name: String,
    pub ensure: Ensure,
    pub gid: Option<u32>,
    pub system: bool,
}

/// Which package manager a `package` resource is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackageSource {
    /// The OS's own (apt, dnf/yum, zypper, apk, pkg).
    #[default]
    System,
    /// Python's pip (`python3 -m pip`), only when the document asks for it.
    Pip,
}

/// `package`: installed (at a version, where the manager can pin one) or not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackageSpec {
    pub name: String,
    pub ensure: Ensure,
    pub version: Option<String>,
    pub source: PackageSource,
}

/// What a service should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    Stopped,
    /// Running, and restarted when a resource it comes `after` changed in this run.
    Restarted,
}

/// `service`: started at boot or not, running or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub enabled: Option<bool>,
    pub state: Option<ServiceState>,
}

/// `archive`: a tarball already on the guest unpacked into a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSpec {
    /// A `.tar` or `.tar.gz` file in a location only root can change.
    pub source: String,
    pub destination: String,
    /// Owner and group of what is unpacked (default root).
    pub owner: Option<Principal>,
    pub group: Option<Principal>,
}

/// `run`: a script that already exists in `[configure] scripts_dir`, with parameters in its
/// environment.
#[derive(Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// A plain file name inside the scripts directory.
    pub script: String,
    /// Environment variables (validated names and values; values may be secret: never logged).
    pub params: Vec<(String, Zeroizing<String>)>,
    /// The script is not run when this path exists.
    pub creates: Option<String>,
    /// Run only when a resource it comes `after` changed in this run.
    pub refresh: bool,
    pub timeout: Option<Duration>,
}

impl fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RunSpec")
            .field("script", &self.script)
            .field("params", &names)
            .field("creates", &self.creates)
            .field("refresh", &self.refresh)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One resource's desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceSpec {
    File(FileSpec),
    Directory(DirectorySpec),
    User(UserSpec),
    Group(GroupSpec),
    Package(PackageSpec),
    Service(ServiceSpec),
    Archive(ArchiveSpec),
    Run(RunSpec),
}

impl ResourceSpec {
    pub fn kind(&self) -> ResourceKind {
        match self {
            Self::File(_) => ResourceKind::File,
            Self::Directory(_) => ResourceKind::Directory,
            Self::User(_) => ResourceKind::User,
            Self::Group(_) => ResourceKind::Group,
            Self::Package(_) => ResourceKind::Package,
            Self::Service(_) => ResourceKind::Service,
            Self::Archive(_) => ResourceKind::Archive,
            Self::Run(_) => ResourceKind::Run,
        }
    }
}

/// Limits and places from `[configure]` that planners need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigureSettings {
    /// Where `run` scripts live (absolute).
    pub scripts_dir: String,
    /// Largest archive file read, in bytes.
    pub max_archive_bytes: u64,
    /// Most bytes an archive may unpack to.
    pub max_unpacked_bytes: u64,
    /// Most entries an archive may hold.
    pub max_archive_entries: usize,
    /// A script's time limit unless the resource gives one.
    pub script_timeout: Duration,
    /// Longest script output kept (per stream) in the result.
    pub max_output_bytes: usize,
}

impl Default for ConfigureSettings {
    fn default() -> Self {
        Self {
            scripts_dir: "/etc/guestd/scripts".into(),
            max_archive_bytes: 256 * 1024 * 1024,
            max_unpacked_bytes: 1024 * 1024 * 1024,
            max_archive_entries: 100_000,
            script_timeout: Duration::from_secs(600),
            max_output_bytes: 16 * 1024,
        }
    }
}

/// What a planner knows about the run it plans for.
#[derive(Debug, Clone, Copy)]
pub struct ResourceContext<'a> {
    pub settings: &'a ConfigureSettings,
    /// The `configure` run's id (given to scripts as `GUESTD_CONFIGURE_ID`).
    pub run_id: &'a str,
    /// The resource's name in the document (given to scripts as `GUESTD_RESOURCE`).
    pub resource: &'a str,
    /// A resource this one comes `after` changed in this run (`restarted`, `refresh`).
    pub dependency_changed: bool,
}

/// What it takes to bring one resource to its desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourcePlan {
    /// What differs from the guest's state, one short line each (empty: unchanged).
    pub changes: Vec<String>,
    /// What the report should say besides (a context not applied because SELinux is off…).
    pub notes: Vec<String>,
    /// How to change it (empty when nothing differs).
    pub plan: Plan,
}

impl ResourcePlan {
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }

    /// Note a difference.
    pub fn change(&mut self, what: impl Into<String>) {
        self.changes.push(what.into());
    }

    pub fn note(&mut self, what: impl Into<String>) {
        self.notes.push(what.into());
    }
}

/// Why a value was refused; `Display` is safe to send back (the value itself is quoted only
/// when it holds no control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn shown(value: &str) -> String {
    if value.chars().any(char::is_control) || value.len() > 80 {
        "(a value with control characters or over 80 bytes)".into()
    } else {
        format!("'{value}'")
    }
}

/// An account or group name: 1-32 of `A-Z a-z 0-9 _ . -`, not starting with `-` or `.`,
/// not only digits (a tool would take it for an id); a trailing `$` (Samba machine accounts)
/// is allowed.
pub fn check_account_name(what: &str, name: &str) -> Result<(), InvalidValue> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 32
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !body.starts_with(['-', '.'])
        && !body.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "{what} {} is not a valid account name (1-32 letters, digits, '_', '.', '-', not \
             starting with '-' or '.', not only digits)",
            shown(name)
        )))
    }
}

/// A package name: 1-128 of `A-Z a-z 0-9 + . _ -` (Debian, RPM, apk, pkg and PyPI names all
/// fit), starting with a letter or digit.
pub fn check_package_name(name: &str) -> Result<(), InvalidValue> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "package name {} is not valid (letters, digits, '+', '.', '_', '-', starting with a \
             letter or digit)",
            shown(name)
        )))
    }
}

/// A package version: 1-128 of `A-Z a-z 0-9 . + ~ : _ -`, starting with a digit or letter.
pub fn check_package_version(version: &str) -> Result<(), InvalidValue> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b':' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "package version {} is not valid (letters, digits, '.', '+', '~', ':', '_', '-')",
            shown(version)
        )))
    }
}

/// A service name: 1-128 of `A-Z a-z 0-9 _ . @ : -`, starting with a letter, digit or `_`
/// (systemd units with their suffix, init scripts, rc.d and Windows service key names).
pub fn check_service_name(name: &str) -> Result<(), InvalidValue> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b':' | b'-'))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "service name {} is not valid (letters, digits, '_', '.', '@', ':', '-')",
            shown(name)
        )))
    }
}

/// A script name: a plain file name (no `/` or `\`, not `.` or `..`, no leading `.` or `-`),
/// 1-128 of `A-Z a-z 0-9 _ . + -`.
pub fn check_script_name(name: &str) -> Result<(), InvalidValue> {
    if name.contains(['/', '\\']) {
        return Err(InvalidValue(format!(
            "script {} is not a plain file name: a script can only be one that already exists \
             in [configure] scripts_dir, named without a directory",
            shown(name)
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "script name {} is not valid (letters, digits, '_', '.', '+', '-', not starting \
             with '.' or '-')",
            shown(name)
        )))
    }
}

/// Environment names a parameter may not take: what guestd sets itself, and what changes how
/// a shell, the dynamic loader or an interpreter behaves before the script's first line runs.
const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "USER",
    "LOGNAME",
    "IFS",
    "ENV",
    "BASH_ENV",
    "CDPATH",
    "GLOBIGNORE",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYLIB",
    "RUBYOPT",
    "NODE_OPTIONS",
    "NODE_PATH",
    "TMPDIR",
];

/// Prefixes a parameter name may not start with (the dynamic loader's, exported bash functions,
/// guestd's own).
const RESERVED_ENV_PREFIXES: &[&str] = &["LD_", "BASH_FUNC_", "GUESTD_", "DYLD_"];

/// Most bytes of one parameter value.
pub const MAX_PARAM_VALUE: usize = 4096;

/// A parameter name: 1-64 of `A-Z a-z 0-9 _`, not starting with a digit, not one of the names
/// that change how a program starts (`PATH`, `LD_*`, `BASH_ENV`, …).
pub fn check_param_name(name: &str) -> Result<(), InvalidValue> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(InvalidValue(format!(
            "parameter name {} is not valid (1-64 letters, digits and '_', not starting with a \
             digit)",
            shown(name)
        )));
    }
    let upper = name.to_ascii_uppercase();
    if RESERVED_ENV.contains(&upper.as_str())
        || RESERVED_ENV_PREFIXES.iter().any(|p| upper.starts_with(p))
    {
        return Err(InvalidValue(format!(
            "parameter name '{name}' is reserved (it would change how the script starts)"
        )));
    }
    Ok(())
}

/// A parameter value: at most [`MAX_PARAM_VALUE`] bytes, no control characters (no newline,
/// tab or escape: a value can never become a second line of anything). The value is never
/// repeated in the error (it may be a secret).
pub fn check_param_value(name: &str, value: &str) -> Result<(), InvalidValue> {
    if value.len() > MAX_PARAM_VALUE {
        return Err(InvalidValue(format!(
            "parameter '{name}' is longer than {MAX_PARAM_VALUE} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidValue(format!(
            "parameter '{name}' holds a control character (newline, tab, escape, ...); values \
             must be single-line text"
        )));
    }
    Ok(())
}

/// Free text that ends up in an account file field (a GECOS comment): at most 128 bytes, no
/// control characters, no `:` (the field separator).
pub fn check_field_text(what: &str, value: &str) -> Result<(), InvalidValue> {
    if value.len() > 128 || value.chars().any(char::is_control) || value.contains(':') {
        return Err(InvalidValue(format!(
            "{what} {} is not valid (at most 128 bytes, no ':' or control characters)",
            shown(value)
        )));
    }
    Ok(())
}

/// An absolute guest path: `/`-rooted (or `C:\` on Windows), no `..` component, no control
/// characters, no `:` outside a drive letter (account files use it as a separator), at most
/// 4096 bytes.
pub fn check_guest_path(what: &str, path: &str) -> Result<(), InvalidValue> {
    let bad = |why: &str| InvalidValue(format!("{what} {} {why}", shown(path)));
    if path.len() > 4096 || path.chars().any(char::is_control) {
        return Err(bad("is not valid (control characters or over 4096 bytes)"));
    }
    let windows =
        path.len() >= 3 && path.as_bytes()[0].is_ascii_alphabetic() && &path[1..3] == ":\\";
    if !(path.starts_with('/') || windows) {
        return Err(bad("is not an absolute path"));
    }
    let rest = if windows { &path[2..] } else { path };
    if rest.contains(':') {
        return Err(bad("contains ':'"));
    }
    if rest.split(['/', '\\']).any(|c| c == "..") {
        return Err(bad("contains '..'"));
    }
    Ok(())
}

/// An SELinux context given by the host: `user:role:type` with an optional MLS/MCS range, of
/// `A-Z a-z 0-9 _ . , : -` only (e.g. `system_u:object_r:httpd_config_t:s0:c0.c1023`).
pub fn check_selinux_context(context: &str) -> Result<(), InvalidValue> {
    let fields: Vec<&str> = context.split(':').collect();
    let ok = context.len() <= 256
        && fields.len() >= 3
        && fields[..3].iter().all(|f| {
            !f.is_empty()
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        })
        && context
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b',' | b':' | b'-'))
        && !context.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "SELinux context {} is not valid (user:role:type[:range], or \"default\")",
            shown(context)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for ok in ["app", "app-user", "_svc", "a.b", "WIN$", "x1"] {
            check_account_name("user", ok).unwrap();
        }
        for bad in [
            "",
            "-rf",
            ".hidden",
            "a b",
            "a:b",
            "a/b",
            "123",
            &"x".repeat(33),
            "é",
        ] {
            assert!(check_account_name("user", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn params() {
        check_param_name("APP_PORT").unwrap();
        check_param_name("port2").unwrap();
        for bad in [
            "",
            "1X",
            "A-B",
            "PATH",
            "path",
            "LD_PRELOAD",
            "BASH_ENV",
            "GUESTD_X",
        ] {
            assert!(check_param_name(bad).is_err(), "{bad}");
        }
        check_param_value("A", "hello world, with commas; and $dollars").unwrap();
        let err = check_param_value("A", "line1\nline2").unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        assert!(!err.to_string().contains("line1"));
        assert!(check_param_value("A", "tab\there").is_err());
        assert!(check_param_value("A", &"x".repeat(MAX_PARAM_VALUE + 1)).is_err());
    }

    #[test]
    fn scripts_are_plain_names() {
        check_script_name("setup-app.sh").unwrap();
        for bad in [
            "../x",
            "/usr/bin/id",
            "a/b",
            "..",
            ".",
            ".hidden",
            "-x",
            "a\\b",
            "",
        ] {
            assert!(check_script_name(bad).is_err(), "{bad}");
        }
        let err = check_script_name("/tmp/evil.sh").unwrap_err().to_string();
        assert!(err.contains("scripts_dir"), "{err}");
    }

    #[test]
    fn paths_and_contexts() {
        check_guest_path("path", "/etc/app.conf").unwrap();
        check_guest_path("path", "C:\\ProgramData\\app.ini").unwrap();
        for bad in ["etc/x", "/etc/../shadow", "/a\nb", "/a:b", ""] {
            assert!(check_guest_path("path", bad).is_err(), "{bad}");
        }
        check_selinux_context("system_u:object_r:etc_t:s0").unwrap();
        check_selinux_context("system_u:object_r:httpd_t:s0:c0.c1023").unwrap();
        for bad in ["etc_t", "a:b", "-a:b:c", "a:b:c d", "a::c"] {
            assert!(check_selinux_context(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn packages_and_services() {
        check_package_name("libc6").unwrap();
        check_package_name("python3-yaml").unwrap();
        check_package_name("g++").unwrap();
        assert!(check_package_name("-y").is_err());
        assert!(check_package_name("a b").is_err());
        check_package_version("1:2.36-9+deb12u4").unwrap();
        assert!(check_package_version("-1").is_err());
        check_service_name("nginx.service").unwrap();
        check_service_name("getty@tty1.service").unwrap();
        assert!(check_service_name("--now").is_err());
        assert!(check_service_name("../x").is_err());
    }
}
