//! Hostile host text in every string field, for every renderer (issue 15, point 3).
//!
//! One table of hostile pieces (newline, carriage return, both quotes, `$(…)`, backquotes,
//! backslash, `;`, `#`, NUL, non-ASCII, …), put in the middle and at the end of every string
//! field:
//! - the fields the host sends as JSON (nova's objects, the config drive's files): every typed
//!   field is refused with an error naming it; the label is refused for a control character and
//!   otherwise accepted;
//! - the free text the renderers write (the network label; the device name, which comes from
//!   the guest but is checked all the same), through `network::plan` for every manager: refused
//!   with an error naming the field, or the files are exactly those of a plain label with the
//!   label written reduced (`escape::informational`) and nothing else different;
//! - then the real parsers read what was written where they run here: `ifquery` (Debian
//!   ifupdown), `busybox ifup -n` (Alpine), `netplan generate` in a sandbox root, GLib's own
//!   GKeyFile (NetworkManager keyfiles, through python3's ctypes), `sh` sourcing the shell
//!   files in a temp dir (every variable must read back as meant and the canary file that every
//!   payload would create must not appear);
//! - the quoting functions themselves, fed every piece, read back by dash, bash and busybox sh,
//!   PyYAML and GLib.
//!
//! Needs `ifupdown`, `netplan.io` (with python3-yaml and GLib), `busybox` and `bash`
//! (scripts/test-all installs them).
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // tests run the real parsers

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use guestd_core::{FileChange, Root};
use guestd_distro::OsFamily;
use guestd_distro::network::configdrive::read_dir;
use guestd_distro::network::render::escape;
use guestd_distro::network::{NetworkTool, plan};
use guestd_network_model::config_drive::{self, parse_network_data};
use guestd_network_model::nova::parse_inline;
use guestd_network_model::{Hostname, Interface, InterfaceSpec, IpNet, Mac, Network, Route};
use guestd_testkit::FakeRunner;
use serde_json::{Value, json};

/// Every payload that would run a command runs `touch CANARY`; the tests put the path of a file
/// in their temp dir there and check it never appears.
const CANARY: &str = "CANARY";

/// (what, piece)
const HOSTILE: &[(&str, &str)] = &[
    ("newline", "\n    up touch CANARY\n"),
    ("carriage return", "\r"),
    ("tab", "\t"),
    ("single quote", "'"),
    ("double quote", "\""),
    ("command substitution", "$(touch CANARY)"),
    ("backquote", "`touch CANARY`"),
    ("backslash", "\\"),
    ("semicolon", "; touch CANARY"),
    ("hash", "# x"),
    ("NUL", "\0"),
    ("non-ASCII", "é"),
    ("typographic quote", "\u{2019}"),
    ("line separator", "\u{2028}"),
    ("next line (C1)", "\u{85}"),
    ("DEL", "\u{7f}"),
    ("percent", "%n"),
    ("YAML", "\": x, ["),
    ("brace", "${PATH}"),
];

fn has_control(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// The piece in the middle and at the end of `base`.
fn variants(base: &str, piece: &str) -> [String; 2] {
    let mid = base.len() / 2;
    [
        format!("{}{piece}{}", &base[..mid], &base[mid..]),
        format!("{base}{piece}"),
    ]
}

fn tool(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: apt-get install {package} (scripts/test-all does this)");
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

// ---------------------------------------------------------------------------------------------
// The JSON the host sends: typed fields are refused with an error naming them.

/// A nova interface object with `path` (slash-separated) set to `value`.
fn nova_with(path: &str, value: &str) -> Value {
    let mut v = json!({
        "mac": "BC:76:4E:20:6C:5A", "label": "public",
        "gateway": "198.51.100.1", "gateway_v6": "2001:db8::1",
        "ips": [{"ip": "198.51.100.10", "netmask": "255.255.255.0", "gateway": "198.51.100.1"}],
        "ip6s": [{"ip": "2001:db8::10", "netmask": "64", "gateway": "2001:db8::1"}],
        "routes": [{"route": "10.176.0.0", "netmask": "255.240.0.0", "gateway": "198.51.100.254"}],
        "dns": ["192.0.2.53"]
    });
    *pointer(&mut v, path) = Value::String(value.to_string());
    v
}

fn pointer<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    v.pointer_mut(&format!("/{path}"))
        .unwrap_or_else(|| panic!("no {path}"))
}

#[test]
fn nova_fields_are_typed_or_refused_by_name() {
    // (field, plain value, what the error must name)
    let fields = [
        ("mac", "BC:76:4E:20:6C:5A", "MAC address"),
        ("gateway", "198.51.100.1", "'gateway'"),
        ("gateway_v6", "2001:db8::1", "'gateway_v6'"),
        ("ips/0/ip", "198.51.100.10", "ips[0]: 'ip'"),
        ("ips/0/netmask", "255.255.255.0", "ips[0]: "),
        ("ips/0/gateway", "198.51.100.1", "ips[0]: 'gateway'"),
        ("ip6s/0/ip", "2001:db8::10", "ip6s[0]: 'ip'"),
        ("ip6s/0/netmask", "64", "ip6s[0]: IPv6 prefix"),
        ("ip6s/0/gateway", "2001:db8::1", "ip6s[0]: 'gateway'"),
        ("routes/0/route", "10.176.0.0", "routes[0]: 'route'"),
        ("routes/0/netmask", "255.240.0.0", "routes[0]: "),
        ("routes/0/gateway", "198.51.100.254", "routes[0]: 'gateway'"),
        ("dns/0", "192.0.2.53", "dns[0]"),
    ];
    for (field, plain, names) in fields {
        for (what, piece) in HOSTILE {
            for value in variants(plain, piece) {
                let result = parse_inline(&json!([nova_with(field, &value)]));
                if value.trim() == plain {
                    // Blanks around a value are not part of it: the typed value is the plain one.
                    assert!(result.is_ok(), "{field} {what}: {result:?}");
                    continue;
                }
                let err = result
                    .err()
                    .unwrap_or_else(|| panic!("{field} {what}: {value:?} accepted"));
                let err = err.to_string();
                assert!(err.contains(names), "{field} {what}: {err}");
                assert!(
                    !has_control(&err),
                    "{field} {what}: the error carries it: {err:?}"
                );
                if field.ends_with("netmask") {
                    assert!(err.contains("netmask") || err.contains("prefix"), "{err}");
                }
            }
        }
    }
    // The label is free text: refused only for a control character.
    for (what, piece) in HOSTILE {
        for value in variants("public", piece) {
            let result = parse_inline(&json!([nova_with("label", &value)]));
            if has_control(value.trim()) {
                let err = result.unwrap_err().to_string();
                assert!(
                    err.contains("'label' contains a control character"),
                    "{what}: {err}"
                );
            } else {
                assert!(result.is_ok(), "{what}: {result:?}");
            }
        }
    }
    // The hostname is RFC 1123.
    for (what, piece) in HOSTILE {
        for value in variants("web1", piece) {
            let result = parse_inline(&json!({"hostname": value}));
            if value.trim() == "web1" {
                assert!(result.is_ok(), "hostname {what}: {result:?}");
                continue;
            }
            let err = result
                .err()
                .unwrap_or_else(|| panic!("hostname {what}: {value:?} accepted"))
                .to_string();
            assert!(err.contains("is not a valid hostname"), "{what}: {err}");
            assert!(!has_control(&err), "{what}: {err:?}");
        }
    }
}

fn drive_with(path: &str, value: &str) -> Value {
    let mut v = json!({
        "links": [{"id": "tap0", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
        "networks": [{"id": "net0", "type": "ipv4", "link": "tap0", "network_id": "public",
            "ip_address": "10.0.0.5", "netmask": "255.255.255.0",
            "routes": [{"network": "172.16.0.0", "netmask": "255.240.0.0", "gateway": "10.0.0.254"}]}],
        "services": [{"type": "dns", "address": "10.0.0.2"}]
    });
    *pointer(&mut v, path) = Value::String(value.to_string());
    v
}

#[test]
fn config_drive_fields_are_typed_or_refused_by_name() {
    let fields = [
        (
            "links/0/ethernet_mac_address",
            "fa:16:3e:00:00:01",
            "'ethernet_mac_address'",
        ),
        ("networks/0/ip_address", "10.0.0.5", "'ip_address'"),
        ("networks/0/netmask", "255.255.255.0", "'netmask'"),
        ("networks/0/routes/0/network", "172.16.0.0", "route network"),
        (
            "networks/0/routes/0/netmask",
            "255.240.0.0",
            "route 'netmask'",
        ),
        ("networks/0/routes/0/gateway", "10.0.0.254", "route gateway"),
    ];
    for (field, plain, names) in fields {
        for (what, piece) in HOSTILE {
            for value in variants(plain, piece) {
                let result = parse_network_data(&drive_with(field, &value));
                if value.trim() == plain {
                    assert!(result.is_ok(), "{field} {what}: {result:?}");
                    continue;
                }
                let err = result
                    .err()
                    .unwrap_or_else(|| panic!("{field} {what}: {value:?} accepted"))
                    .to_string();
                assert!(err.contains(names), "{field} {what}: {err}");
                assert!(!has_control(&err), "{field} {what}: {err:?}");
            }
        }
    }
    for (what, piece) in HOSTILE {
        for value in variants("public", piece) {
            let result = parse_network_data(&drive_with("networks/0/network_id", &value));
            if has_control(value.trim()) {
                let err = result.unwrap_err().to_string();
                assert!(
                    err.contains("'network_id' contains a control character"),
                    "{what}: {err}"
                );
            } else {
                assert_eq!(
                    result.unwrap().interfaces[0].label.as_deref(),
                    Some(value.trim())
                );
            }
            // A DNS service address that is not an IP is left out (logged), never kept.
            let spec = parse_network_data(&drive_with("services/0/address", &value)).unwrap();
            assert!(spec.interfaces[0].dns.is_empty(), "{what}");
            // Ids only name links and networks in messages, escaped there.
            let mut doc = drive_with("networks/0/netmask", "bad");
            *pointer(&mut doc, "networks/0/id") = Value::String(value.clone());
            let err = parse_network_data(&doc).unwrap_err().to_string();
            assert!(!has_control(&err), "{what}: {err:?}");
            let mut doc = drive_with("links/0/ethernet_mac_address", "bad");
            *pointer(&mut doc, "links/0/id") = Value::String(value.clone());
            let err = parse_network_data(&doc).unwrap_err().to_string();
            assert!(!has_control(&err), "{what}: {err:?}");
        }
    }
    // meta_data.json's hostname, read from a drive directory.
    for (what, piece) in HOSTILE {
        for value in variants("vm1", piece) {
            if value.trim() == "vm1" {
                continue;
            }
            let d = tempfile::tempdir().unwrap();
            let latest = d.path().join("cd/openstack/latest");
            std::fs::create_dir_all(&latest).unwrap();
            std::fs::write(
                latest.join("network_data.json"),
                drive_with("networks/0/network_id", "public").to_string(),
            )
            .unwrap();
            std::fs::write(
                latest.join("meta_data.json"),
                json!({ "hostname": value }).to_string(),
            )
            .unwrap();
            let root = Root::sandbox(d.path()).unwrap();
            let files = read_dir(&root, "/cd", false).unwrap();
            let err = config_drive::parse(&files)
                .err()
                .unwrap_or_else(|| panic!("meta hostname {what}: {value:?} accepted"))
                .to_string();
            assert!(err.contains("is not a valid hostname"), "{what}: {err}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The renderers.

const PLAIN_LABEL: &str = "public";

fn family_of(manager: NetworkTool) -> Vec<OsFamily> {
    match manager {
        NetworkTool::Netplan => vec![OsFamily::Debian],
        NetworkTool::NetworkManager | NetworkTool::NetworkScripts => vec![OsFamily::RedHat],
        NetworkTool::Networkd => vec![OsFamily::Arch],
        NetworkTool::Ifupdown => vec![OsFamily::Debian, OsFamily::Alpine],
        NetworkTool::Wicked => vec![OsFamily::Suse],
        NetworkTool::Netifrc => vec![OsFamily::Gentoo],
        NetworkTool::FreeBsd => vec![OsFamily::FreeBsd],
        NetworkTool::Windows => vec![OsFamily::Windows],
    }
}

fn plain_device(manager: NetworkTool) -> &'static str {
    if manager == NetworkTool::Windows {
        "Ethernet 2"
    } else {
        "eth0"
    }
}

fn network(name: &str, label: &str) -> Network {
    let net = |a: &str, p: u8| IpNet::new(a.parse().unwrap(), p).unwrap();
    Network {
        interfaces: vec![Interface {
            name: name.to_string(),
            spec: InterfaceSpec {
                mac: Mac::parse("bc:76:4e:20:6c:5a").unwrap(),
                label: Some(label.to_string()),
                addresses: vec![net("198.51.100.10", 24), net("2001:db8::10", 64)],
                gateway4: Some("198.51.100.1".parse().unwrap()),
                gateway6: Some("2001:db8::1".parse().unwrap()),
                routes: vec![Route {
                    dest: net("10.176.0.0", 12),
                    gateway: Some("198.51.100.254".parse().unwrap()),
                }],
                dns: vec!["192.0.2.53".parse().unwrap()],
            },
        }],
        hostname: Some(Hostname::parse("web1.example.com").unwrap()),
    }
}

/// What a plan writes and runs.
#[derive(Debug, PartialEq, Eq)]
struct Planned {
    files: BTreeMap<String, String>,
    commands: Vec<Vec<String>>,
}

fn planned(manager: NetworkTool, family: OsFamily, net: &Network) -> Result<Planned, String> {
    let d = tempfile::tempdir().unwrap();
    let root = Root::sandbox(d.path()).unwrap();
    let runner = FakeRunner::new();
    let p = plan(&root, &runner, family, manager, net).map_err(|e| e.to_string())?;
    let mut files = BTreeMap::new();
    for change in &p.changes {
        if let FileChange::Write { path, contents, .. } = change {
            let text = String::from_utf8(contents.to_vec()).expect("files are UTF-8");
            files.insert(path.clone(), text);
        }
    }
    let commands = p
        .commands
        .iter()
        .chain(&p.rollback_commands)
        .map(|c| {
            let mut argv = vec![c.command.program.clone()];
            argv.extend(c.command.args.iter().cloned());
            argv
        })
        .collect();
    Ok(Planned { files, commands })
}

/// No control character except the files' own line structure (newlines, and the tab guestd
/// writes in `/etc/hosts`), none at all in a command's arguments.
fn assert_clean(p: &Planned, case: &str) {
    for (path, text) in &p.files {
        for line in text.lines() {
            assert!(
                !line
                    .chars()
                    .any(|c| c != '\t' && (c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))),
                "{case}: {path} has a control character in {line:?}"
            );
        }
    }
    for argv in &p.commands {
        for arg in argv {
            assert!(!has_control(arg), "{case}: command {argv:?}");
        }
    }
}

/// The parsers' view of a plan, for the managers whose parser runs here; equal views mean the
/// tools read the same configuration.
fn parsed(
    manager: NetworkTool,
    family: OsFamily,
    p: &Planned,
    scratch: &Path,
) -> BTreeMap<String, String> {
    let mut view = BTreeMap::new();
    let canary = scratch.join("canary");
    match manager {
        NetworkTool::Ifupdown => {
            let file = scratch.join("interfaces");
            std::fs::write(&file, &p.files["/etc/network/interfaces"]).unwrap();
            if family == OsFamily::Alpine {
                let out = output(
                    Command::new(tool("busybox", "busybox"))
                        .args(["ifup", "-n", "-i"])
                        .arg(&file)
                        .arg("eth0"),
                );
                view.insert("busybox ifup -n eth0".into(), out);
            } else {
                let ifquery = tool("ifquery", "ifupdown");
                let list = output(Command::new(&ifquery).arg("-i").arg(&file).arg("--list"));
                assert_eq!(list, "lo\neth0\n");
                view.insert("ifquery --list".into(), list);
                let eth0 = output(Command::new(&ifquery).arg("-i").arg(&file).arg("eth0"));
                assert!(!eth0.contains("touch"), "{eth0}");
                view.insert("ifquery eth0".into(), eth0);
            }
        }
        NetworkTool::Netplan => {
            let root = scratch.join("netplan-root");
            let dir = root.join("etc/netplan");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("90-guestd.yaml"),
                &p.files["/etc/netplan/90-guestd.yaml"],
            )
            .unwrap();
            output(
                Command::new(tool("netplan", "netplan.io"))
                    .arg("generate")
                    .arg("--root-dir")
                    .arg(&root),
            );
            let out = root.join("run/systemd/network");
            let mut names: Vec<_> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert!(
                !names.is_empty() && names.iter().all(|n| n.starts_with("10-netplan-eth0.")),
                "netplan configured exactly eth0: {names:?}"
            );
            for n in names {
                view.insert(n.clone(), std::fs::read_to_string(out.join(n)).unwrap());
            }
        }
        NetworkTool::NetworkManager => {
            let path = "/etc/NetworkManager/system-connections/guestd-eth0.nmconnection";
            view.insert("keyfile".into(), glib_keyfile(&p.files[path]));
        }
        NetworkTool::Networkd => {
            let path = "/etc/systemd/network/10-guestd-eth0.network";
            view.insert("unit".into(), systemd_unit(&p.files[path]));
        }
        NetworkTool::NetworkScripts
        | NetworkTool::Wicked
        | NetworkTool::Netifrc
        | NetworkTool::FreeBsd => {
            for (path, text) in &p.files {
                if is_sh_file(path) {
                    view.insert(path.clone(), source_sh(text, scratch));
                }
            }
            if manager == NetworkTool::Wicked {
                let path = "/etc/sysconfig/network/ifcfg-eth0";
                view.insert("wicked".into(), wicked_values(&p.files[path]));
            }
        }
        NetworkTool::Windows => {}
    }
    assert!(!canary.exists(), "a payload ran");
    view
}

fn is_sh_file(path: &str) -> bool {
    path.contains("/ifcfg-")
        || path == "/etc/sysconfig/network/config"
        || path == "/etc/conf.d/net"
        || path == "/etc/conf.d/hostname"
        || path == "/etc/rc.conf"
}

/// Source `text` with `sh` in `scratch` and print every variable it assigns (name=value, one
/// per NUL), with payloads pointed at `scratch/canary`.
fn source_sh(text: &str, scratch: &Path) -> String {
    let file = scratch.join("sourced");
    std::fs::write(&file, text).unwrap();
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .filter(|n| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !n.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    const DUMP: &str =
        r#". ./sourced || exit 1; for v; do eval "printf '%s=%s\0' \"\$v\" \"\${$v}\""; done"#;
    let out = Command::new(tool("sh", "dash"))
        .current_dir(scratch)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("-c")
        .arg(DUMP)
        .arg("sh")
        .args(&names)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "sourcing failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Values as wicked's own sysconfig parser reads them: `KEY=` then, if the value starts with a
/// quote, everything up to the next such quote (no escapes), else up to a blank.
fn wicked_values(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let parsed: String = match value.chars().next() {
            Some(q @ ('\'' | '"')) => value[1..].chars().take_while(|c| *c != q).collect(),
            _ => value.chars().take_while(|c| !c.is_whitespace()).collect(),
        };
        out.push_str(&format!("{key}={parsed}\n"));
    }
    out
}

/// A systemd unit file as systemd.syntax(7) reads it: comments (`#`, `;`), `[Section]`,
/// `Key=Value`, a trailing `\` continuing the line.
fn systemd_unit(text: &str) -> String {
    let mut out = String::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = format!("{pending}{line}");
        pending.clear();
        if let Some(cont) = line.strip_suffix('\\') {
            pending = format!("{cont} ");
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with('[') {
            section = t.to_string();
            continue;
        }
        let (k, v) = t.split_once('=').expect("Key=Value");
        out.push_str(&format!("{section} {}={}\n", k.trim(), v.trim()));
    }
    assert!(pending.is_empty(), "a line continues past the end");
    out
}

/// Every group, key and value of a keyfile as GLib's GKeyFile reads it (the parser
/// NetworkManager uses), through python3's ctypes.
fn glib_keyfile(text: &str) -> String {
    const SCRIPT: &str = r#"
import ctypes, json, sys
g = ctypes.CDLL("libglib-2.0.so.0")
P, S = ctypes.c_void_p, ctypes.c_char_p
g.g_key_file_new.restype = P
g.g_key_file_load_from_data.argtypes = [P, S, ctypes.c_size_t, ctypes.c_int, P]
g.g_key_file_get_groups.argtypes = [P, P]
g.g_key_file_get_groups.restype = ctypes.POINTER(S)
g.g_key_file_get_keys.argtypes = [P, S, P, P]
g.g_key_file_get_keys.restype = ctypes.POINTER(S)
g.g_key_file_get_string.argtypes = [P, S, S, P]
g.g_key_file_get_string.restype = P
kf = g.g_key_file_new()
data = sys.stdin.buffer.read()
assert g.g_key_file_load_from_data(kf, data, len(data), 0, None), "GKeyFile refused it"
out = []
groups = g.g_key_file_get_groups(kf, None)
i = 0
while groups[i]:
    keys = g.g_key_file_get_keys(kf, groups[i], None, None)
    j = 0
    while keys[j]:
        v = ctypes.string_at(g.g_key_file_get_string(kf, groups[i], keys[j], None))
        out.append(json.dumps([groups[i].decode(), keys[j].decode(), v.decode()]))
        j += 1
    i += 1
sys.stdout.write("\n".join(out))
"#;
    python(SCRIPT, text.as_bytes())
}

fn python(script: &str, stdin: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new(tool("python3", "python3"))
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `text` with every payload's `CANARY` pointed into `scratch`.
fn armed(text: &str, scratch: &Path) -> String {
    text.replace(CANARY, &scratch.join("canary").display().to_string())
}

#[test]
fn labels_in_every_renderer() {
    for manager in NetworkTool::ALL {
        for family in family_of(manager) {
            let device = plain_device(manager);
            let base = planned(manager, family, &network(device, PLAIN_LABEL)).unwrap();
            assert_clean(&base, "plain");
            let scratch = tempfile::tempdir().unwrap();
            let base_view = parsed(manager, family, &base, scratch.path());
            // The same bytes parse the same: each distinct set of files goes to the tools once.
            let mut seen: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for (what, piece) in HOSTILE {
                for label in variants(PLAIN_LABEL, piece) {
                    let scratch = tempfile::tempdir().unwrap();
                    let label = armed(&label, scratch.path());
                    let case = format!("{manager} ({family:?}) label with {what} {label:?}");
                    let result = planned(manager, family, &network(device, &label));
                    if has_control(&label) {
                        let err = result.unwrap_err();
                        assert!(
                            err.contains("network label contains a control character"),
                            "{case}: {err}"
                        );
                        continue;
                    }
                    let got = result.unwrap_or_else(|e| panic!("{case}: {e}"));
                    assert_clean(&got, &case);
                    // Exactly the plain files, with the label reduced where it was.
                    let shown = escape::informational(&label);
                    for (path, text) in &base.files {
                        assert_eq!(
                            got.files.get(path),
                            Some(&text.replace(PLAIN_LABEL, &shown)),
                            "{case}: {path}"
                        );
                    }
                    assert_eq!(got.files.len(), base.files.len(), "{case}");
                    assert_eq!(got.commands, base.commands, "{case}");
                    // And the tools read the same configuration, the label aside.
                    let key = format!("{:?}", got.files);
                    let view = match seen.get(&key) {
                        Some(view) => view.clone(),
                        None => {
                            let view = parsed(manager, family, &got, scratch.path());
                            seen.insert(key, view.clone());
                            view
                        }
                    };
                    for (k, v) in &base_view {
                        assert_eq!(
                            view.get(k),
                            Some(&v.replace(PLAIN_LABEL, &shown)),
                            "{case}: {k}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn device_names_in_every_renderer() {
    for manager in NetworkTool::ALL {
        for family in family_of(manager) {
            let plain = plain_device(manager);
            let base = planned(manager, family, &network(plain, PLAIN_LABEL)).unwrap();
            for (what, piece) in HOSTILE {
                for name in variants(plain, piece) {
                    let case = format!("{manager} device name with {what} {name:?}");
                    let result = planned(manager, family, &network(&name, PLAIN_LABEL));
                    let windows_ok = manager == NetworkTool::Windows
                        && !has_control(&name)
                        && !name.contains(['"', '\\']);
                    if !windows_ok {
                        let err = result.err().unwrap_or_else(|| panic!("{case}: accepted"));
                        assert!(err.starts_with("network device name '"), "{case}: {err}");
                        assert!(!has_control(&err), "{case}: {err:?}");
                        continue;
                    }
                    let got = result.unwrap_or_else(|e| panic!("{case}: {e}"));
                    assert_clean(&got, &case);
                    assert_windows_commands(&base, &got, plain, &name, &case);
                }
            }
        }
    }
}

/// Windows: the commands of `got` are those of `base` with the adapter name replaced, as a
/// whole netsh argument value and as a PowerShell literal that reads back as the name.
fn assert_windows_commands(base: &Planned, got: &Planned, plain: &str, name: &str, case: &str) {
    assert_eq!(got.commands.len(), base.commands.len(), "{case}");
    for (b, g) in base.commands.iter().zip(&got.commands) {
        assert_eq!(b.len(), g.len(), "{case}: {g:?}");
        for (ba, ga) in b.iter().zip(g) {
            if let Some(script) = ga.strip_prefix("Get-NetIPAddress -InterfaceAlias ") {
                let (literal, rest) = powershell_literal(script);
                assert_eq!(literal, name, "{case}: {ga}");
                let base_rest = ba
                    .strip_prefix(&format!("Get-NetIPAddress -InterfaceAlias '{plain}'"))
                    .unwrap();
                assert_eq!(rest, base_rest, "{case}");
            } else if *ba == format!("name={plain}") {
                assert_eq!(*ga, format!("name={name}"), "{case}");
            } else if *ba == format!("interface={plain}") {
                assert_eq!(*ga, format!("interface={name}"), "{case}");
            } else {
                assert_eq!(ga, ba, "{case}");
            }
        }
    }
}

/// Read a PowerShell single-quoted string at the start of `script` (about_Quoting_Rules: any
/// of `'` U+2018 U+2019 U+201A U+201B opens and closes it; two in a row are one literal quote).
/// Returns the literal and the rest of the script.
fn powershell_literal(script: &str) -> (String, &str) {
    let quote = |c: char| matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}');
    let mut chars = script.char_indices().peekable();
    let (_, first) = chars.next().expect("a literal");
    assert!(quote(first), "not a single-quoted string: {script}");
    let mut literal = String::new();
    while let Some((i, c)) = chars.next() {
        if quote(c) {
            match chars.peek() {
                Some(&(_, n)) if quote(n) => {
                    literal.push(c);
                    chars.next();
                }
                _ => return (literal, &script[i + c.len_utf8()..]),
            }
        } else {
            literal.push(c);
        }
    }
    panic!("unterminated literal: {script}");
}

#[test]
fn unusual_valid_device_names_become_the_tools_variable_names() {
    for (manager, family, file, var) in [
        (
            NetworkTool::Netifrc,
            OsFamily::Gentoo,
            "/etc/conf.d/net",
            "config_eth0_100",
        ),
        (
            NetworkTool::FreeBsd,
            OsFamily::FreeBsd,
            "/etc/rc.conf",
            "ifconfig_eth0_100",
        ),
    ] {
        let got = planned(manager, family, &network("eth0.100", PLAIN_LABEL)).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let vars = source_sh(&got.files[file], scratch.path());
        assert!(
            vars.split('\0')
                .any(|kv| kv.starts_with(&format!("{var}="))),
            "{manager}: {vars:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The quoting functions, read back by the real parsers.

/// Every piece alone and in a value, every printable ASCII character, and the empty string.
fn printable_samples(scratch: &Path) -> Vec<String> {
    let mut samples = vec![String::new(), (' '..='~').collect::<String>()];
    for (_, piece) in HOSTILE {
        if !has_control(piece) {
            samples.push(piece.to_string());
            samples.extend(variants("value", piece));
        }
    }
    samples.push("'".repeat(3));
    samples.push(" lead and trail ".into());
    samples.iter().map(|s| armed(s, scratch)).collect()
}

#[test]
fn shell_quoting_reads_back_in_every_sh() {
    let scratch = tempfile::tempdir().unwrap();
    let samples = printable_samples(scratch.path());
    let mut file = String::new();
    for (n, s) in samples.iter().enumerate() {
        file.push_str(&format!("Q{n}={}\n", escape::sh_quote("f", s).unwrap()));
        file.push_str(&format!("V{n}={}\n", escape::sh_value("f", s).unwrap()));
        file.push_str(&format!(
            "L{n}={}\n",
            escape::sh_lines("f", &[s.clone(), s.clone()]).unwrap()
        ));
    }
    std::fs::write(scratch.path().join("sourced"), &file).unwrap();
    let shells = [
        vec![tool("dash", "dash").display().to_string()],
        vec![tool("bash", "bash").display().to_string()],
        vec![
            tool("busybox", "busybox").display().to_string(),
            "sh".into(),
        ],
    ];
    for shell in shells {
        for (n, s) in samples.iter().enumerate() {
            let out = Command::new(&shell[0])
                .args(&shell[1..])
                .current_dir(scratch.path())
                .env_clear()
                .arg("-c")
                .arg(format!(
                    ". ./sourced && printf '%s\\0%s\\0%s' \"$Q{n}\" \"$V{n}\" \"$L{n}\""
                ))
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell:?}: {:?}", out);
            let text = String::from_utf8(out.stdout).unwrap();
            let got: Vec<&str> = text.split('\0').collect();
            assert_eq!(
                got,
                [s.as_str(), s.as_str(), &format!("{s}\n{s}")],
                "{shell:?} {s:?}"
            );
        }
        assert!(
            !scratch.path().join("canary").exists(),
            "{shell:?} ran a payload"
        );
    }
    for (what, piece) in HOSTILE.iter().filter(|(_, p)| has_control(p)) {
        let err = escape::sh_quote("the field", &format!("a{piece}b")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the field contains a control character"),
            "{what}"
        );
        assert!(escape::sh_value("f", piece).is_err());
        assert!(escape::sh_lines("f", &[piece.to_string()]).is_err());
    }
}

#[test]
fn yaml_quoting_reads_back_in_pyyaml() {
    let scratch = tempfile::tempdir().unwrap();
    let samples = printable_samples(scratch.path());
    let mut doc = String::from("values:\n");
    for s in &samples {
        doc.push_str(&format!("  - {}\n", escape::yaml_quote("f", s).unwrap()));
    }
    let out = python(
        "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(sys.stdin)['values']))",
        doc.as_bytes(),
    );
    let got: Vec<String> = serde_json::from_str(&out).unwrap();
    assert_eq!(got, samples);
    for (_, piece) in HOSTILE.iter().filter(|(_, p)| has_control(p)) {
        assert!(escape::yaml_quote("f", piece).is_err());
    }
}

#[test]
fn keyfile_values_read_back_in_glib() {
    let scratch = tempfile::tempdir().unwrap();
    let samples = printable_samples(scratch.path());
    let mut doc = String::from("[g]\n");
    for (n, s) in samples.iter().enumerate() {
        doc.push_str(&format!(
            "k{n:03}={}\n",
            escape::keyfile_value("f", s).unwrap()
        ));
    }
    let out = glib_keyfile(&doc);
    let got: Vec<(String, String, String)> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<(String, String, String)> = samples
        .iter()
        .enumerate()
        .map(|(n, s)| ("g".to_string(), format!("k{n:03}"), s.clone()))
        .collect();
    assert_eq!(got, want);
    for (_, piece) in HOSTILE.iter().filter(|(_, p)| has_control(p)) {
        assert!(escape::keyfile_value("f", piece).is_err());
    }
}

#[test]
fn powershell_literals_read_back() {
    let scratch = tempfile::tempdir().unwrap();
    for s in printable_samples(scratch.path()) {
        let quoted = escape::ps_quote("f", &s).unwrap();
        let (literal, rest) = powershell_literal(&quoted);
        assert_eq!((literal.as_str(), rest), (s.as_str(), ""), "{quoted}");
    }
    for (_, piece) in HOSTILE.iter().filter(|(_, p)| has_control(p)) {
        assert!(escape::ps_quote("f", piece).is_err());
    }
}

#[test]
fn wicked_values_read_back_or_are_refused() {
    let scratch = tempfile::tempdir().unwrap();
    for s in printable_samples(scratch.path()) {
        match escape::wicked_quote("f", &s) {
            Ok(q) => {
                assert_eq!(wicked_values(&format!("K={q}")), format!("K={s}\n"));
                let vars = source_sh(&format!("K={q}\n"), scratch.path());
                assert_eq!(vars, format!("K={s}\0"));
            }
            Err(e) => {
                assert!(s.contains('\''), "{s:?}: {e}");
                assert!(e.to_string().contains("single quote"));
            }
        }
    }
    assert!(!scratch.path().join("canary").exists());
}
