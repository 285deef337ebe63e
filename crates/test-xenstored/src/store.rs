//! The tree of nodes with Xen's permission model, path rules and quotas, independent of any
//! connection. Transactions and watches are layered on top in `server.rs`.

use std::collections::HashMap;

use guestd_transport_xenstore::wire::errno;

/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
const REL_PATH_MAX: usize = 2048;

/// One permission entry. The first entry of a node names its owner and the access of every
/// domain not listed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    pub domid: u32,
    pub read: bool,
    pub write: bool,
}

impl Perm {
    pub fn parse(text: &str) -> Option<Perm> {
        let (kind, id) = text.split_at_checked(1)?;
        let domid = id.parse().ok()?;
        let (read, write) = match kind {
            "n" => (false, false),
            "r" => (true, false),
            "w" => (false, true),
            "b" => (true, true),
            _ => return None,
        };
        Some(Perm { domid, read, write })
    }

    pub fn render(&self) -> String {
        let kind = match (self.read, self.write) {
            (false, false) => 'n',
            (true, false) => 'r',
            (false, true) => 'w',
            (true, true) => 'b',
        };
        format!("{kind}{}", self.domid)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub value: Vec<u8>,
    pub perms: Vec<Perm>,
    /// Child names in creation order (what DIRECTORY returns, as C xenstored does).
    pub children: Vec<String>,
}

/// Who is asking: dom0 connections are privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub domid: u32,
}

impl Caller {
    pub fn privileged(&self) -> bool {
        self.domid == 0
    }

    fn can(&self, node: &Node, want_write: bool) -> bool {
        if self.privileged() {
            return true;
        }
        let owner = node.perms[0];
        if owner.domid == self.domid {
            return true;
        }
        let entry = node.perms[1..]
            .iter()
            .find(|p| p.domid == self.domid)
            .unwrap_or(&owner);
        if want_write { entry.write } else { entry.read }
    }
}

/// Limits applied to unprivileged domains (oxenstored's defaults).
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    /// Largest value a guest may write (`quota-maxsize`).
    pub max_value: usize,
    /// Most nodes a guest may own (`quota-maxentity`).
    pub max_nodes: usize,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            max_value: 2048,
            max_nodes: 1000,
        }
    }
}

/// A failed operation: the errno name sent back.
pub type OpResult<T> = Result<T, &'static str>;

/// How a guest's home looks when the domain is created, as a toolstack lays it out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Toolstack {
    /// `name`, `domid`, `vm-data/` (read-only to the guest) and `data/` (the guest's): what the
    /// request lifecycle needs, and nothing else.
    #[default]
    Minimal,
    /// XAPI's xenopsd: besides the minimal home, `unique-domain-id` and `memory/` read-only,
    /// and guest-owned `attr/`, `control/`, `device/`, `drivers/`, `error/`, `feature/`,
    /// `xenserver/attr/` and `xenserver/device/` (where the toolstack's static IP requests
    /// go: the guest answers and removes them there).
    Xapi,
    /// libxl: `control/` read-only with the guest's own `shutdown`, `feature-poweroff`,
    /// `feature-reboot`, `feature-suspend` and `sysrq` below it (so any other `control/`
    /// key is refused with `EACCES`), and guest-owned `attr/`, `drivers/`, `error/`,
    /// `feature/`.
    Libxl,
}

impl Toolstack {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "minimal" => Some(Self::Minimal),
            "xapi" => Some(Self::Xapi),
            "libxl" => Some(Self::Libxl),
            _ => None,
        }
    }

    /// `(path below the home, guest-owned)` of the nodes besides the minimal home, parents
    /// first.
    fn extra_nodes(self) -> &'static [(&'static str, bool)] {
        match self {
            Self::Minimal => &[],
            Self::Xapi => &[
                ("unique-domain-id", false),
                ("memory", false),
                ("attr", true),
                ("control", true),
                ("device", true),
                ("device/vif", true),
                ("drivers", true),
                ("error", true),
                ("feature", true),
                ("xenserver", false),
                ("xenserver/attr", true),
                ("xenserver/device", true),
            ],
            Self::Libxl => &[
                ("memory", false),
                ("control", false),
                ("control/shutdown", true),
                ("control/feature-poweroff", true),
                ("control/feature-reboot", true),
                ("control/feature-suspend", true),
                ("control/sysrq", true),
                ("attr", true),
                ("drivers", true),
                ("error", true),
                ("feature", true),
            ],
        }
    }
}

/// The `unique-domain-id` a [`Toolstack::Xapi`] home starts with.
pub fn initial_unique_domain_id(domid: u32) -> String {
    format!("{domid:08x}-0000-4000-8000-{domid:012x}")
}

#[derive(Debug, Clone)]
pub struct Store {
    nodes: HashMap<String, Node>,
    quota: Quota,
}

/// Resolve `path` as sent by `caller`: absolute paths stay, relative ones go under the caller's
/// home. Returns `(absolute, was_relative)`.
pub fn canonical(caller: Caller, path: &str) -> OpResult<(String, bool)> {
    let (abs, relative) = if path.starts_with('/') {
        (path.to_string(), false)
    } else {
        if path.len() > REL_PATH_MAX || path.is_empty() {
            return Err(errno::EINVAL);
        }
        (format!("/local/domain/{}/{path}", caller.domid), true)
    };
    if !valid_path(&abs) {
        return Err(errno::EINVAL);
    }
    Ok((abs, relative))
}

fn valid_path(path: &str) -> bool {
    path.len() <= ABS_PATH_MAX
        && path.starts_with('/')
        && (path == "/" || !path.ends_with('/'))
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b))
}

pub fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

fn leaf_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `path` is `base` or below it.
pub fn is_at_or_below(path: &str, base: &str) -> bool {
    path == base
        || base == "/"
        || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

impl Store {
    /// A tree with `/`, `/local`, `/local/domain`, and a home for each guest as a toolstack
    /// creates it: `/local/domain/D` readable by D, `data` writable by D, `vm-data` read-only.
    pub fn new(guests: &[u32], quota: Quota) -> Self {
        Self::with_toolstack(guests, quota, Toolstack::Minimal)
    }

    /// As [`new`](Self::new), with each home laid out as `toolstack` does it.
    pub fn with_toolstack(guests: &[u32], quota: Quota, toolstack: Toolstack) -> Self {
        let mut store = Store {
            nodes: HashMap::new(),
            quota,
        };
        let root_perms = vec![Perm {
            domid: 0,
            read: false,
            write: false,
        }];
        store.nodes.insert(
            "/".into(),
            Node {
                value: Vec::new(),
                perms: root_perms,
                children: Vec::new(),
            },
        );
        let dom0 = Caller { domid: 0 };
        for path in ["/local", "/local/domain", "/tool"] {
            store.mkdir(dom0, path).expect("fresh tree");
        }
        for &domid in guests {
            let home = format!("/local/domain/{domid}");
            let read_only = |domid| {
                vec![
                    Perm {
                        domid: 0,
                        read: false,
                        write: false,
                    },
                    Perm {
                        domid,
                        read: true,
                        write: false,
                    },
                ]
            };
            for (path, value, perms) in [
                (home.clone(), String::new(), read_only(domid)),
                (
                    format!("{home}/name"),
                    format!("guest-{domid}"),
                    read_only(domid),
                ),
                (format!("{home}/domid"), domid.to_string(), read_only(domid)),
                (format!("{home}/vm-data"), String::new(), read_only(domid)),
                (
                    format!("{home}/data"),
                    String::new(),
                    vec![Perm {
                        domid,
                        read: false,
                        write: false,
                    }],
                ),
            ] {
                store
                    .write(dom0, &path, value.as_bytes())
                    .expect("fresh tree");
                store.set_perms(dom0, &path, perms).expect("fresh tree");
            }
            for (rel, guest_owned) in toolstack.extra_nodes() {
                let path = format!("{home}/{rel}");
                let value = if *rel == "unique-domain-id" {
                    initial_unique_domain_id(domid)
                } else {
                    String::new()
                };
                let perms = if *guest_owned {
                    vec![Perm {
                        domid,
                        read: false,
                        write: false,
                    }]
                } else {
                    read_only(domid)
                };
                store
                    .write(dom0, &path, value.as_bytes())
                    .expect("fresh tree");
                store.set_perms(dom0, &path, perms).expect("fresh tree");
            }
        }
        store
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    fn node_for(&self, caller: Caller, path: &str, want_write: bool) -> OpResult<&Node> {
        let node = self.nodes.get(path).ok_or(errno::ENOENT)?;
        if !caller.can(node, want_write) {
            return Err(errno::EACCES);
        }
        Ok(node)
    }

    pub fn read(&self, caller: Caller, path: &str) -> OpResult<Vec<u8>> {
        Ok(self.node_for(caller, path, false)?.value.clone())
    }

    pub fn directory(&self, caller: Caller, path: &str) -> OpResult<Vec<String>> {
        Ok(self.node_for(caller, path, false)?.children.clone())
    }

    pub fn get_perms(&self, caller: Caller, path: &str) -> OpResult<Vec<Perm>> {
        Ok(self.node_for(caller, path, false)?.perms.clone())
    }

    /// Whether `caller` may see a watch event about `path` (node as it is now or was).
    pub fn can_read(&self, caller: Caller, node: &Node) -> bool {
        caller.can(node, false)
    }

    /// Write (creating missing ancestors). Returns whether anything was created.
    pub fn write(&mut self, caller: Caller, path: &str, value: &[u8]) -> OpResult<()> {
        if !caller.privileged() && value.len() > self.quota.max_value {
            return Err(errno::E2BIG);
        }
        if self.nodes.contains_key(path) {
            self.node_for(caller, path, true)?;
        } else {
            self.create(caller, path)?;
        }
        self.nodes.get_mut(path).expect("present").value = value.to_vec();
        Ok(())
    }

    pub fn mkdir(&mut self, caller: Caller, path: &str) -> OpResult<()> {
        if self.nodes.contains_key(path) {
            self.node_for(caller, path, false)?;
            return Ok(());
        }
        self.create(caller, path)
    }

    /// Create `path` and any missing ancestors, checking write access on the nearest existing
    /// ancestor and the node quota. New nodes inherit their parent's permissions; a guest owns
    /// what it creates.
    fn create(&mut self, caller: Caller, path: &str) -> OpResult<()> {
        let mut missing = vec![path.to_string()];
        let mut ancestor = parent_of(path).ok_or(errno::EINVAL)?;
        while !self.nodes.contains_key(ancestor) {
            missing.push(ancestor.to_string());
            ancestor = parent_of(ancestor).ok_or(errno::EINVAL)?;
        }
        self.node_for(caller, ancestor, true)?;
        if !caller.privileged() {
            let owned = self
                .nodes
                .values()
                .filter(|n| n.perms[0].domid == caller.domid)
                .count();
            if owned + missing.len() > self.quota.max_nodes {
                return Err("EQUOTA");
            }
        }
        for new in missing.into_iter().rev() {
            let parent = parent_of(&new).expect("not root");
            let parent_node = self.nodes.get_mut(parent).expect("created in order");
            parent_node.children.push(leaf_of(&new).to_string());
            let mut perms = parent_node.perms.clone();
            if !caller.privileged() {
                perms[0].domid = caller.domid;
            }
            self.nodes.insert(
                new,
                Node {
                    value: Vec::new(),
                    perms,
                    children: Vec::new(),
                },
            );
        }
        Ok(())
    }

    /// Remove a subtree. Removing an absent node whose parent exists succeeds (as in C
    /// xenstored). Returns the removed nodes (path, node) for watch delivery.
    pub fn rm(&mut self, caller: Caller, path: &str) -> OpResult<Vec<(String, Node)>> {
        if path == "/" {
            return Err(errno::EINVAL);
        }
        if !self.nodes.contains_key(path) {
            let parent = parent_of(path).ok_or(errno::EINVAL)?;
            return if self.nodes.contains_key(parent) {
                Ok(Vec::new())
            } else {
                Err(errno::ENOENT)
            };
        }
        self.node_for(caller, path, true)?;
        let doomed: Vec<String> = self
            .nodes
            .keys()
            .filter(|p| is_at_or_below(p, path))
            .cloned()
            .collect();
        let removed = doomed
            .into_iter()
            .filter_map(|p| self.nodes.remove_entry(&p))
            .collect();
        let parent = parent_of(path).expect("not root");
        let leaf = leaf_of(path);
        if let Some(parent) = self.nodes.get_mut(parent) {
            parent.children.retain(|c| c != leaf);
        }
        Ok(removed)
    }

    pub fn set_perms(&mut self, caller: Caller, path: &str, perms: Vec<Perm>) -> OpResult<()> {
        if perms.is_empty() {
            return Err(errno::EINVAL);
        }
        let node = self.nodes.get(path).ok_or(errno::ENOENT)?;
        if !caller.privileged() && node.perms[0].domid != caller.domid {
            return Err(errno::EACCES);
        }
        self.nodes.get_mut(path).expect("present").perms = perms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOM0: Caller = Caller { domid: 0 };
    const GUEST: Caller = Caller { domid: 5 };
    const OTHER: Caller = Caller { domid: 6 };

    fn store() -> Store {
        Store::new(&[5, 6], Quota::default())
    }

    #[test]
    fn relative_paths_resolve_under_home() {
        assert_eq!(
            canonical(GUEST, "data/host").unwrap(),
            ("/local/domain/5/data/host".into(), true)
        );
        assert_eq!(canonical(DOM0, "/x").unwrap(), ("/x".into(), false));
        for bad in ["/a//b", "/a/", "", "/a b", "/\u{e9}"] {
            assert_eq!(canonical(GUEST, bad), Err(errno::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn guest_permissions() {
        let mut s = store();
        s.write(GUEST, "/local/domain/5/data/host/x", b"v").unwrap();
        assert_eq!(s.read(DOM0, "/local/domain/5/data/host/x").unwrap(), b"v");
        // The guest owns what it creates; another guest sees nothing.
        assert_eq!(
            s.read(OTHER, "/local/domain/5/data/host/x"),
            Err(errno::EACCES)
        );
        assert_eq!(
            s.write(GUEST, "/local/domain/5/vm-data/x", b"v"),
            Err(errno::EACCES)
        );
        assert_eq!(
            s.write(GUEST, "/local/domain/5/name", b"v"),
            Err(errno::EACCES)
        );
        assert_eq!(s.read(GUEST, "/local/domain/5/name").unwrap(), b"guest-5");
        assert_eq!(s.read(GUEST, "/local/domain/6/name"), Err(errno::EACCES));
        // dom0 writing below the guest's data keeps the guest's ownership.
        s.write(DOM0, "/local/domain/5/data/host/y", b"req")
            .unwrap();
        assert_eq!(
            s.get_perms(GUEST, "/local/domain/5/data/host/y").unwrap()[0].domid,
            5
        );
        s.rm(GUEST, "/local/domain/5/data/host/y").unwrap();
    }

    #[test]
    fn quotas_apply_to_guests_only() {
        let mut s = Store::new(
            &[5],
            Quota {
                max_value: 2048,
                max_nodes: 4,
            },
        );
        let big = vec![b'x'; 2049];
        assert_eq!(
            s.write(GUEST, "/local/domain/5/data/a", &big),
            Err(errno::E2BIG)
        );
        s.write(GUEST, "/local/domain/5/data/a", &big[..2048])
            .unwrap();
        s.write(DOM0, "/local/domain/5/data/b", &big).unwrap();
        // data, a, b owned by 5: one more allowed, then the quota bites.
        s.write(GUEST, "/local/domain/5/data/c", b"").unwrap();
        assert_eq!(s.write(GUEST, "/local/domain/5/data/d", b""), Err("EQUOTA"));
    }

    #[test]
    fn rm_semantics_and_child_order() {
        let mut s = store();
        for leaf in ["b", "a", "c"] {
            s.write(DOM0, &format!("/t/{leaf}"), b"").unwrap();
        }
        assert_eq!(s.directory(DOM0, "/t").unwrap(), ["b", "a", "c"]);
        assert_eq!(s.rm(DOM0, "/t/a").unwrap().len(), 1);
        assert!(s.rm(DOM0, "/t/a").unwrap().is_empty());
        assert_eq!(s.rm(DOM0, "/nope/a").unwrap_err(), errno::ENOENT);
        assert_eq!(s.rm(DOM0, "/t").unwrap().len(), 3);
        assert_eq!(s.rm(DOM0, "/").unwrap_err(), errno::EINVAL);
        assert!(!s.directory(DOM0, "/").unwrap().contains(&"t".to_string()));
    }

    #[test]
    fn toolstack_layouts() {
        let s = Store::with_toolstack(&[5], Quota::default(), Toolstack::Xapi);
        s.read(GUEST, "/local/domain/5/unique-domain-id").unwrap();
        let mut s2 = s.clone();
        s2.write(GUEST, "/local/domain/5/control/feature-balloon", b"1")
            .unwrap();
        s2.write(GUEST, "/local/domain/5/attr/vif/0/ipv4/0", b"10.0.0.1")
            .unwrap();
        assert_eq!(
            s2.write(GUEST, "/local/domain/5/unique-domain-id", b"x"),
            Err(errno::EACCES)
        );
        let mut l = Store::with_toolstack(&[5], Quota::default(), Toolstack::Libxl);
        l.write(GUEST, "/local/domain/5/control/feature-poweroff", b"1")
            .unwrap();
        assert_eq!(
            l.write(GUEST, "/local/domain/5/control/feature-balloon", b"1"),
            Err(errno::EACCES)
        );
        assert!(!l.exists("/local/domain/5/unique-domain-id"));
        assert_eq!(Toolstack::parse("xapi"), Some(Toolstack::Xapi));
        assert_eq!(Toolstack::parse("xend"), None);
    }

    #[test]
    fn perm_text_round_trips() {
        for t in ["n0", "r5", "w12", "b7"] {
            assert_eq!(Perm::parse(t).unwrap().render(), t);
        }
        assert!(Perm::parse("x1").is_none());
        assert!(Perm::parse("r").is_none());
    }

    #[test]
    fn prefix_rule() {
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/a", "/"));
    }
}
