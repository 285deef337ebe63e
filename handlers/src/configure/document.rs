//! The `configure` document: JSON in, checked resources out. Everything a host can get wrong
//! is found here, before anything runs: unknown or disabled kinds, unknown fields, duplicate
//! names, values the validators of `guestd_core::configure` refuse, paths the configuration
//! keeps `configure` away from.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use guestd_core::PathPolicy;
use guestd_core::configure::{
    self as model, ArchiveSpec, DirectorySpec, Ensure, FileSpec, GroupSpec, PackageSource,
    PackageSpec, Principal, ResourceKind, ResourceSpec, RunSpec, SelinuxContext, ServiceSpec,
    ServiceState, UserSpec,
};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// One resource of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub after: Vec<String>,
    pub spec: ResourceSpec,
}

/// A checked document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    pub dry_run: bool,
    pub atomic: bool,
    pub resources: Vec<Resource>,
}

/// What the parser needs from the configuration.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub kinds: &'a BTreeSet<ResourceKind>,
    pub max_resources: usize,
    /// Where file, directory and archive resources may write (checked again by `Root` on the
    /// path each write reaches).
    pub policy: &'a PathPolicy,
    /// `run` parameters per resource.
    pub max_params: usize,
}

/// Most bytes of all of a `run` resource's parameters together.
const MAX_PARAMS_BYTES: usize = 64 * 1024;

/// The longest `timeout_secs` a `run` resource may ask for.
const MAX_SCRIPT_TIMEOUT: u64 = 24 * 3600;

/// Parse and check a document (a JSON object).
pub fn parse(value: &Value, rules: &Rules<'_>) -> Result<Document, String> {
    let Value::Object(top) = value else {
        return Err("the document must be a JSON object with \"resources\"".into());
    };
    let mut fields = Fields::new("the document", top);
    let dry_run = fields.bool("dry_run")?.unwrap_or(false);
    let atomic = fields.bool("atomic")?.unwrap_or(false);
    let list = fields
        .take("resources")
        .ok_or("the document has no \"resources\" list")?;
    fields.finish()?;
    let Value::Array(list) = list else {
        return Err("\"resources\" must be a list".into());
    };
    if list.is_empty() {
        return Err("\"resources\" is empty".into());
    }
    if list.len() > rules.max_resources {
        return Err(format!(
            "the document has {} resources; at most {} are accepted ([configure] max_resources)",
            list.len(),
            rules.max_resources
        ));
    }
    let mut resources: Vec<Resource> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let resource = parse_resource(i, item, rules)?;
        if resources.iter().any(|r| r.name == resource.name) {
            return Err(format!("two resources are named '{}'", resource.name));
        }
        resources.push(resource);
    }
    Ok(Document {
        dry_run,
        atomic,
        resources,
    })
}

fn parse_resource(index: usize, item: &Value, rules: &Rules<'_>) -> Result<Resource, String> {
    let Value::Object(map) = item else {
        return Err(format!("resource #{} is not a JSON object", index + 1));
    };
    let name = match map.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => return Err(format!("resource #{} has no \"name\" string", index + 1)),
    };
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(format!(
            "resource #{}: a name is 1-128 characters without control characters",
            index + 1
        ));
    }
    let label = format!("resource '{name}'");
    let mut f = Fields::new(&label, map);
    f.take("name");
    let kind_name = f
        .str("kind")?
        .ok_or_else(|| format!("{label} has no \"kind\""))?;
    let kind = ResourceKind::from_name(&kind_name).ok_or_else(|| {
        format!(
            "{label} has an unknown kind '{}' (kinds: {})",
            kind_name.escape_default(),
            ResourceKind::ALL.map(ResourceKind::name).join(", ")
        )
    })?;
    if !rules.kinds.contains(&kind) {
        return Err(format!(
            "{label}: resources of kind '{kind}' are not enabled on this guest ([configure] kinds)"
        ));
    }
    let after = f.str_list("after")?.unwrap_or_default();
    let spec = match kind {
        ResourceKind::File => ResourceSpec::File(file(&mut f, &label, rules)?),
        ResourceKind::Directory => ResourceSpec::Directory(directory(&mut f, &label, rules)?),
        // The account, package or service is named by its own field, or by the resource's name
        // (so a group and a user of the same name can be two resources).
        ResourceKind::User => {
            let target = f.str("user")?.unwrap_or_else(|| name.clone());
            ResourceSpec::User(user(&mut f, &target, rules)?)
        }
        ResourceKind::Group => {
            let target = f.str("group")?.unwrap_or_else(|| name.clone());
            ResourceSpec::Group(group(&mut f, &target)?)
        }
        ResourceKind::Package => {
            let target = f.str("package")?.unwrap_or_else(|| name.clone());
            ResourceSpec::Package(package(&mut f, &target)?)
        }
        ResourceKind::Service => {
            let target = f.str("service")?.unwrap_or_else(|| name.clone());
            ResourceSpec::Service(service(&mut f, &target)?)
        }
        ResourceKind::Archive => ResourceSpec::Archive(archive(&mut f, &label, rules)?),
        ResourceKind::Run => ResourceSpec::Run(run(&mut f, &label, rules)?),
    };
    f.finish()?;
    Ok(Resource { name, after, spec })
}

fn file(f: &mut Fields<'_>, label: &str, rules: &Rules<'_>) -> Result<FileSpec, String> {
    let path = f.path("path", rules.policy)?;
    let ensure = f.ensure()?;
    let text = f.str("content")?;
    let b64 = f.str("base64")?;
    let content = match (text, b64) {
        (Some(_), Some(_)) => {
            return Err(format!("{label} gives both \"content\" and \"base64\""));
        }
        (Some(t), None) => Some(Zeroizing::new(t.into_bytes())),
        (None, Some(b)) => Some(Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|_| format!("{label}: \"base64\" is not valid base64"))?,
        )),
        (None, None) => None,
    };
    let spec = FileSpec {
        path,
        ensure,
        content,
        mode: f.mode()?,
        owner: f.principal("owner")?,
        group: f.principal("group")?,
        selinux: f.selinux()?,
    };
    if spec.ensure == Ensure::Absent
        && (spec.content.is_some() || spec.mode.is_some() || spec.owner.is_some())
    {
        return Err(format!(
            "{label} is \"absent\" and also gives content, mode or owner"
        ));
    }
    Ok(spec)
}

fn directory(f: &mut Fields<'_>, _label: &str, rules: &Rules<'_>) -> Result<DirectorySpec, String> {
    Ok(DirectorySpec {
        path: f.path("path", rules.policy)?,
        ensure: f.ensure()?,
        mode: f.mode()?,
        owner: f.principal("owner")?,
        group: f.principal("group")?,
        selinux: f.selinux()?,
    })
}

fn user(f: &mut Fields<'_>, name: &str, rules: &Rules<'_>) -> Result<UserSpec, String> {
    check(model::check_account_name("user", name))?;
    let group = f.str("group")?;
    if let Some(g) = &group {
        check(model::check_account_name("group", g))?;
    }
    let groups = f.str_list("groups")?.unwrap_or_default();
    for g in &groups {
        check(model::check_account_name("group", g))?;
    }
    let home = f.str("home")?;
    if let Some(h) = &home {
        check(model::check_guest_path("home", h))?;
        if !rules.policy.permits(h) {
            return Err(format!(
                "home '{h}' is in a place configure may not write to"
            ));
        }
    }
    let shell = f.str("shell")?;
    if let Some(s) = &shell {
        check(model::check_guest_path("shell", s))?;
    }
    let comment = f.str("comment")?;
    if let Some(c) = &comment {
        check(model::check_field_text("comment", c))?;
    }
    Ok(UserSpec {
        name: name.to_string(),
        ensure: f.ensure()?,
        uid: f.id("uid")?,
        group,
        groups,
        home,
        shell,
        comment,
        system: f.bool("system")?.unwrap_or(false),
        create_home: f.bool("create_home")?,
    })
}

fn group(f: &mut Fields<'_>, name: &str) -> Result<GroupSpec, String> {
    check(model::check_account_name("group", name))?;
    Ok(GroupSpec {
        name: name.to_string(),
        ensure: f.ensure()?,
        gid: f.id("gid")?,
        system: f.bool("system")?.unwrap_or(false),
    })
}

fn package(f: &mut Fields<'_>, name: &str) -> Result<PackageSpec, String> {
    check(model::check_package_name(name))?;
    let version = f.str("version")?;
    if let Some(v) = &version {
        check(model::check_package_version(v))?;
    }
    let source = match f.str("manager")?.as_deref() {
        None | Some("system") => PackageSource::System,
        Some("pip") => PackageSource::Pip,
        Some(other) => {
            return Err(format!(
                "package '{name}': manager '{}' is not known (\"system\" or \"pip\")",
                other.escape_default()
            ));
        }
    };
    let ensure = f.ensure()?;
    if ensure == Ensure::Absent && version.is_some() {
        return Err(format!(
            "package '{name}' is \"absent\" and gives a version"
        ));
    }
    Ok(PackageSpec {
        name: name.to_string(),
        ensure,
        version,
        source,
    })
}

fn service(f: &mut Fields<'_>, name: &str) -> Result<ServiceSpec, String> {
    check(model::check_service_name(name))?;
    let state = match f.str("state")?.as_deref() {
        None => None,
        Some("running") => Some(ServiceState::Running),
        Some("stopped") => Some(ServiceState::Stopped),
        Some("restarted") => Some(ServiceState::Restarted),
        Some(other) => {
            return Err(format!(
                "service '{name}': state '{}' is not known (running, stopped, restarted)",
                other.escape_default()
            ));
        }
    };
    let enabled = f.bool("enabled")?;
    if enabled.is_none() && state.is_none() {
        return Err(format!(
            "service '{name}' gives neither \"enabled\" nor \"state\""
        ));
    }
    Ok(ServiceSpec {
        name: name.to_string(),
        enabled,
        state,
    })
}

fn archive(f: &mut Fields<'_>, label: &str, rules: &Rules<'_>) -> Result<ArchiveSpec, String> {
    let source = f
        .str("source")?
        .ok_or_else(|| format!("{label} has no \"source\""))?;
    check(model::check_guest_path("source", &source))?;
    Ok(ArchiveSpec {
        source,
        destination: f.path("destination", rules.policy)?,
        owner: f.principal("owner")?,
        group: f.principal("group")?,
    })
}

fn run(f: &mut Fields<'_>, label: &str, rules: &Rules<'_>) -> Result<RunSpec, String> {
    let script = f
        .str("script")?
        .ok_or_else(|| format!("{label} has no \"script\""))?;
    check(model::check_script_name(&script))?;
    let mut params = Vec::new();
    let mut total = 0usize;
    match f.take("params") {
        None => {}
        Some(Value::Object(map)) => {
            if map.len() > rules.max_params {
                return Err(format!(
                    "{label} has {} parameters; at most {} are accepted",
                    map.len(),
                    rules.max_params
                ));
            }
            for (name, value) in map {
                check(model::check_param_name(name))?;
                let text = match value {
                    Value::String(s) => Zeroizing::new(s.clone()),
                    Value::Number(n) => Zeroizing::new(n.to_string()),
                    Value::Bool(b) => Zeroizing::new(b.to_string()),
                    _ => {
                        return Err(format!(
                            "{label}: parameter '{name}' must be a string, number or boolean"
                        ));
                    }
                };
                check(model::check_param_value(name, &text))?;
                total += name.len() + text.len();
                params.push((name.clone(), text));
            }
        }
        Some(_) => return Err(format!("{label}: \"params\" must be an object")),
    }
    if total > MAX_PARAMS_BYTES {
        return Err(format!(
            "{label}: the parameters are longer than {MAX_PARAMS_BYTES} bytes together"
        ));
    }
    let creates = f.str("creates")?;
    if let Some(c) = &creates {
        check(model::check_guest_path("creates", c))?;
    }
    let timeout = match f.take("timeout_secs") {
        None => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) if (1..=MAX_SCRIPT_TIMEOUT).contains(&s) => Some(Duration::from_secs(s)),
            _ => {
                return Err(format!(
                    "{label}: \"timeout_secs\" must be 1 to {MAX_SCRIPT_TIMEOUT}"
                ));
            }
        },
        Some(_) => return Err(format!("{label}: \"timeout_secs\" must be a number")),
    };
    Ok(RunSpec {
        script,
        params,
        creates,
        refresh: f.bool("refresh")?.unwrap_or(false),
        timeout,
    })
}

fn check(result: Result<(), model::InvalidValue>) -> Result<(), String> {
    result.map_err(|e| e.0)
}

/// A JSON object's fields, taken one by one; what is left at the end is an unknown field.
struct Fields<'a> {
    label: &'a str,
    map: &'a Map<String, Value>,
    used: BTreeSet<&'a str>,
}

impl<'a> Fields<'a> {
    fn new(label: &'a str, map: &'a Map<String, Value>) -> Self {
        Self {
            label,
            map,
            used: BTreeSet::new(),
        }
    }

    fn take(&mut self, key: &'a str) -> Option<&'a Value> {
        self.used.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn str(&mut self, key: &'a str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{}: \"{key}\" must be a string", self.label)),
        }
    }

    fn bool(&mut self, key: &'a str) -> Result<Option<bool>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("{}: \"{key}\" must be true or false", self.label)),
        }
    }

    fn str_list(&mut self, key: &'a str) -> Result<Option<Vec<String>>, String> {
        let label = self.label;
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.chars().any(char::is_control) => Ok(s.clone()),
                    _ => Err(format!("{label}: \"{key}\" must be a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(format!("{label}: \"{key}\" must be a list of strings")),
        }
    }

    fn id(&mut self, key: &'a str) -> Result<Option<u32>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n < u32::MAX)
                .map(Some)
                .ok_or_else(|| format!("{}: \"{key}\" is not a valid id", self.label)),
            Some(_) => Err(format!("{}: \"{key}\" must be a number", self.label)),
        }
    }

    fn ensure(&mut self) -> Result<Ensure, String> {
        match self.str("ensure")?.as_deref() {
            None | Some("present") => Ok(Ensure::Present),
            Some("absent") => Ok(Ensure::Absent),
            Some(other) => Err(format!(
                "{}: \"ensure\" is \"present\" or \"absent\", not '{}'",
                self.label,
                other.escape_default()
            )),
        }
    }

    /// An octal mode as a string (`"0640"`, `"640"`): JSON numbers are refused, since 640
    /// and 0o640 are too easy to confuse.
    fn mode(&mut self) -> Result<Option<u32>, String> {
        let label = self.label;
        match self.take("mode") {
            None => Ok(None),
            Some(Value::String(s)) => {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                match u32::from_str_radix(digits, 8) {
                    Ok(m) if !digits.is_empty() && digits.len() <= 5 && m <= 0o7777 => Ok(Some(m)),
                    _ => Err(format!(
                        "{label}: \"mode\" must be an octal string such as \"0644\""
                    )),
                }
            }
            Some(_) => Err(format!(
                "{label}: \"mode\" must be an octal string such as \"0644\" (not a number)"
            )),
        }
    }

    fn principal(&mut self, key: &'a str) -> Result<Option<Principal>, String> {
        let label = self.label;
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n < u32::MAX)
                .map(|n| Some(Principal::Id(n)))
                .ok_or_else(|| format!("{label}: \"{key}\" is not a valid id")),
            Some(Value::String(s)) => {
                if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
                    return s
                        .parse()
                        .map(|n| Some(Principal::Id(n)))
                        .map_err(|_| format!("{label}: \"{key}\" is not a valid id"));
                }
                check(model::check_account_name(key, s))?;
                Ok(Some(Principal::Name(s.clone())))
            }
            Some(_) => Err(format!("{label}: \"{key}\" must be a name or a number")),
        }
    }

    fn selinux(&mut self) -> Result<Option<SelinuxContext>, String> {
        match self.str("selinux_context")?.as_deref() {
            None => Ok(None),
            Some("default") => Ok(Some(SelinuxContext::Default)),
            Some(c) => {
                check(model::check_selinux_context(c))?;
                Ok(Some(SelinuxContext::Exact(c.to_string())))
            }
        }
    }

    /// An absolute path configure may write to.
    fn path(&mut self, key: &'a str, policy: &PathPolicy) -> Result<String, String> {
        let path = self
            .str(key)?
            .ok_or_else(|| format!("{} has no \"{key}\"", self.label))?;
        check(model::check_guest_path(key, &path))?;
        if !policy.permits(&path) {
            return Err(format!(
                "{}: '{path}' is in a place configure may not write to (guestd's own \
                 configuration, state and scripts directory, and [configure] deny)",
                self.label
            ));
        }
        Ok(path)
    }

    fn finish(self) -> Result<(), String> {
        match self.map.keys().find(|k| !self.used.contains(k.as_str())) {
            Some(k) => Err(format!(
                "{}: unknown field '{}'",
                self.label,
                k.escape_default()
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules_with<'a>(kinds: &'a BTreeSet<ResourceKind>, policy: &'a PathPolicy) -> Rules<'a> {
        Rules {
            kinds,
            max_resources: 16,
            policy,
            max_params: 4,
        }
    }

    fn all() -> BTreeSet<ResourceKind> {
        ResourceKind::ALL.into_iter().collect()
    }

    fn err(doc: Value) -> String {
        let kinds = all();
        let policy = PathPolicy::unix(vec![], vec!["/etc/guestd".into()]);
        parse(&doc, &rules_with(&kinds, &policy)).unwrap_err()
    }

    #[test]
    fn a_full_document() {
        let kinds = all();
        let policy = PathPolicy::unix(vec![], vec![]);
        let doc = json!({"dry_run": true, "resources": [
            {"name": "g", "kind": "group", "gid": 2000},
            {"name": "app", "kind": "user", "group": "g", "groups": ["adm"], "after": ["g"],
             "shell": "/bin/bash", "comment": "App, 1"},
            {"name": "app-group", "kind": "group", "group": "app"},
            {"name": "conf", "kind": "file", "path": "/etc/app.conf", "content": "a=1\n",
             "mode": "0640", "owner": "app", "group": 0, "selinux_context": "default"},
            {"name": "bin", "kind": "file", "path": "/usr/local/bin/x", "base64": "AAEC"},
            {"name": "d", "kind": "directory", "path": "/srv/app", "mode": "750"},
            {"name": "hello", "kind": "package", "version": "2.10-3"},
            {"name": "requests", "kind": "package", "manager": "pip"},
            {"name": "web.service", "kind": "service", "enabled": true, "state": "restarted"},
            {"name": "tgz", "kind": "archive", "source": "/var/tmp/a.tgz", "destination": "/opt/a"},
            {"name": "setup", "kind": "run", "script": "setup.sh",
             "params": {"PORT": 8080, "NAME": "x y", "ON": true}, "creates": "/srv/done",
             "timeout_secs": 30}
        ]});
        let d = parse(&doc, &rules_with(&kinds, &policy)).unwrap();
        assert!(d.dry_run && !d.atomic);
        assert_eq!(d.resources.len(), 11);
        let ResourceSpec::Group(g) = &d.resources[2].spec else {
            panic!()
        };
        assert_eq!(g.name, "app");
        let ResourceSpec::File(f) = &d.resources[3].spec else {
            panic!()
        };
        assert_eq!(f.mode, Some(0o640));
        assert_eq!(f.owner, Some(Principal::Name("app".into())));
        assert_eq!(f.group, Some(Principal::Id(0)));
        let ResourceSpec::File(b) = &d.resources[4].spec else {
            panic!()
        };
        assert_eq!(
            b.content.as_deref().map(|c| c.to_vec()),
            Some(vec![0, 1, 2])
        );
        let ResourceSpec::Run(r) = &d.resources[10].spec else {
            panic!()
        };
        assert_eq!(r.params.len(), 3);
        assert_eq!(*r.params.iter().find(|p| p.0 == "PORT").unwrap().1, "8080");
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            (
                json!({"resources": [{"name": "a", "kind": "nope"}]}),
                "unknown kind 'nope'",
            ),
            (
                json!({"resources": [{"name": "a", "kind": "file", "path": "/x", "contnet": ""}]}),
                "unknown field 'contnet'",
            ),
            (
                json!({"resources": [{"name": "a", "kind": "run", "script": "../x.sh"}]}),
                "not a plain file name",
            ),
            (
                json!({"resources": [{"name": "a", "kind": "run", "script": "/usr/bin/id"}]}),
                "not a plain file name",
            ),
            (
                json!({"resources": [{"name": "a", "kind": "run", "script": "x", "params": {"A": "1\n2"}}]}),
                "control character",
            ),
            (
                json!({"resources": [{"name": "a", "kind": "run", "script": "x", "params": {"LD_PRELOAD": "x"}}]}),
                "reserved",
            ),
            (
                json!({"resources": [{"name": "a", "kind": "file", "path": "/etc/guestd/guestd.toml", "content": ""}]}),
                "may not write",
            ),
            (
                json!({"resources": [{"name": "a", "kind": "file", "path": "/x", "mode": 644}]}),
                "octal string",
            ),
            (
                json!({"resources": [{"name": "a", "kind": "user"}, {"name": "a", "kind": "group"}]}),
                "two resources are named 'a'",
            ),
            (
                json!({"resources": [{"name": "-rf", "kind": "user"}]}),
                "not a valid account name",
            ),
            (
                json!({"resources": [{"name": "x", "kind": "package", "version": "1 2"}]}),
                "version",
            ),
            (
                json!({"resources": [{"name": "x", "kind": "service"}]}),
                "neither",
            ),
            (json!({"resources": []}), "empty"),
            (
                json!({"resources": [{"name": "a", "kind": "file", "path": "relative", "content": ""}]}),
                "not an absolute path",
            ),
        ];
        for (doc, want) in cases {
            let e = err(doc.clone());
            assert!(e.contains(want), "{doc}: {e} should say {want}");
        }
        let e = err(
            json!({"resources": [{"name": "a", "kind": "run", "script": "x", "params": {"A": "secret\nline"}}]}),
        );
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn disabled_kinds_are_refused() {
        let kinds: BTreeSet<ResourceKind> = [ResourceKind::File].into_iter().collect();
        let policy = PathPolicy::unix(vec![], vec![]);
        let e = parse(
            &json!({"resources": [{"name": "p", "kind": "package"}]}),
            &rules_with(&kinds, &policy),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "resource 'p': resources of kind 'package' are not enabled on this guest ([configure] kinds)"
        );
    }
}
