//! Issue "qemu-guest-agent protocol": the real guestd on `qga+unix:` against Debian's real
//! `qemu-ga` on a unix socket (same requests, replies of the same structure), and the qga
//! commands that change a sandbox root (password, SSH keys, vCPUs, memory blocks) checked on
//! the files. The peers are Debian 12's qemu-ga 7.2 and, when `scripts/fetch-qemu-ga` has put
//! it in `target/`, QEMU 10's from bookworm-backports. The system-information queries are
//! compared on this machine's real /proc and /sys (guestd with `--root /` and only those
//! commands enabled); every reply is also checked against the schema's types (`qga_schema`).
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // qemu-ga and openssl run as peers

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guestd_tests::Guestd;
use serde_json::{Value, json};

mod qga_schema;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n";
const SHADOW: &str = "root:*:19700:0:99999:7:::\n\
alice:!:19701:0:99999:7:::\n";

/// A sandbox root that looks like this machine (its os-release) with two users.
fn sandbox_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("root/etc");
    std::fs::create_dir_all(&etc).unwrap();
    let os_release = std::fs::read("/etc/os-release")
        .or_else(|_| std::fs::read("/usr/lib/os-release"))
        .unwrap_or_else(|_| b"ID=debian\nNAME=\"Debian GNU/Linux\"\n".to_vec());
    std::fs::write(etc.join("os-release"), os_release).unwrap();
    std::fs::write(etc.join("passwd"), PASSWD).unwrap();
    std::fs::write(
        etc.join("group"),
        "root:x:0:\nshadow:x:42:\nalice:x:1000:\n",
    )
    .unwrap();
    std::fs::write(etc.join("shadow"), SHADOW).unwrap();
    std::fs::set_permissions(etc.join("shadow"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::create_dir_all(dir.path().join("root/home/alice")).unwrap();
    dir
}

/// guestd with the native socket and `qga+unix:<dir>/qga.sock`.
fn start_guestd(dir: tempfile::TempDir, extra: &[&str]) -> (Guestd, PathBuf) {
    let qga = dir.path().join("qga.sock");
    let spec = format!("qga+unix:{}", qga.display());
    let mut args = vec!["--listen", spec.as_str()];
    args.extend_from_slice(extra);
    let g = Guestd::start_in(dir, &args);
    wait_for(&qga);
    (g, qga)
}

fn wait_for(sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never listened",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real qemu-ga on a unix socket with a throwaway state directory.
struct QemuGa {
    child: Child,
    sock: PathBuf,
    /// `qemu-ga --version`'s number, for messages.
    version: String,
    _dir: tempfile::TempDir,
}

/// Debian 12's qemu-ga (7.2), which the suite requires.
fn system_qemu_ga() -> PathBuf {
    ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("qemu-ga is required (apt-get install qemu-guest-agent)")
}

/// QEMU 10's qemu-ga from bookworm-backports, extracted into `target/` by
/// `scripts/fetch-qemu-ga` (`$QEMU_GA_NEWER` names another binary).
fn newer_qemu_ga() -> Option<PathBuf> {
    let path = std::env::var_os("QEMU_GA_NEWER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/qemu-ga-backports/usr/sbin/qemu-ga")
        });
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "NOTE: {} is missing (scripts/fetch-qemu-ga fetches it): comparing with qemu-ga 7.2 only",
            path.display()
        );
        None
    }
}

/// Every qemu-ga this machine has, oldest first.
fn peers() -> Vec<QemuGa> {
    std::iter::once(system_qemu_ga())
        .chain(newer_qemu_ga())
        .map(|bin| QemuGa::start_bin(&bin))
        .collect()
}

impl QemuGa {
    fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    fn start() -> Self {
        Self::start_bin(&system_qemu_ga())
    }

    fn start_bin(bin: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .expect("qemu-ga --version");
        let version = String::from_utf8_lossy(&version.stdout)
            .split_whitespace()
            .last()
            .unwrap_or("?")
            .to_string();
        let child = Command::new(bin)
            .args(["-m", "unix-listen", "-p"])
            .arg(&sock)
            .arg("-t")
            .arg(&state)
            .arg("-f")
            .arg(dir.path().join("qemu-ga.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu-ga");
        wait_for(&sock);
        Self {
            child,
            sock,
            version,
            _dir: dir,
        }
    }
}

impl Drop for QemuGa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw qga client: one request line out, one reply line (with any leading 0xFF) back.
struct QgaClient {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl QgaClient {
    fn connect(sock: &Path) -> Self {
        let stream = UnixStream::connect(sock).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    fn raw(&mut self, line: &str) -> Vec<u8> {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
        let mut out = Vec::new();
        self.reader.read_until(b'\n', &mut out).unwrap();
        assert_eq!(out.pop(), Some(b'\n'), "reply to {line} ended early");
        out
    }

    fn call(&mut self, line: &str) -> Value {
        let raw = self.raw(line);
        serde_json::from_slice(&raw)
            .unwrap_or_else(|e| panic!("{line}: {e}: {}", String::from_utf8_lossy(&raw)))
    }
}

/// The structure of a reply: keys and JSON types, values left out. Arrays become the set of
/// their elements' structures (so lists of different lengths compare equal).
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => {
            let mut shapes: Vec<Value> = items.iter().map(shape).collect();
            shapes.sort_by_key(|s| s.to_string());
            shapes.dedup();
            Value::Array(shapes)
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
    }
}

/// Requests both agents must answer with the same structure. Nothing here changes the machine
/// qemu-ga runs on (no exec, no shutdown, no password of an existing user).
const SAME_STRUCTURE: &[&str] = &[
    r#"{"execute":"guest-ping"}"#,
    r#"{"execute":"guest-ping","id":5}"#,
    r#"{"execute":"guest-ping","id":"abc"}"#,
    r#"{"execute":"guest-ping","id":{"a":[1,"x"]}}"#,
    r#"{"execute":"guest-sync","arguments":{"id":123456}}"#,
    r#"{"execute":"guest-sync","arguments":{"id":7},"id":"s"}"#,
    r#"{"execute":"guest-sync"}"#,
    r#"{"execute":"guest-info"}"#,
    r#"{"execute":"guest-get-osinfo"}"#,
    r#"{"execute":"guest-get-host-name"}"#,
    r#"{"execute":"guest-get-time"}"#,
    r#"{"execute":"guest-fsfreeze-status"}"#,
    r#"{"execute":"guest-no-such-command","id":9}"#,
    r#"{"foo":1}"#,
    r#"[1]"#,
    r#"{"execute":5}"#,
    r#"{"execute":"guest-ping","arguments":{"x":1}}"#,
    r#"{"execute":"guest-ssh-get-authorized-keys","arguments":{"username":"no-such-user-qga"}}"#,
    r#"{"execute":"guest-set-user-password","arguments":{"username":"no-such-user-qga","password":"!!!","crypted":false}}"#,
    r#"{"execute":"guest-shutdown","arguments":{"mode":"sideways"}}"#,
    // Argument errors of the effect commands: refused before anything happens, in both.
    r#"{"execute":"guest-set-time","arguments":{"time":"now"}}"#,
    r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":5}}"#,
    r#"{"execute":"guest-set-memory-blocks","arguments":{"mem-blks":"x"}}"#,
    r#"{"execute":"guest-fstrim","arguments":{"minimum":"x"}}"#,
    r#"{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":5}}"#,
    r#"{"execute":"guest-suspend-ram","arguments":{"x":1}}"#,
    r#"{"execute":"guest-set-user-password","arguments":{"username":"no-such-user-qga","password":"!!!","crypted":true}}"#,
    // Windows-only in qemu-ga: refused as a blocked or unknown command.
    r#"{"execute":"guest-get-devices"}"#,
];

#[test]
fn replies_have_the_structure_of_qemu_ga() {
    let (_g, sock) = start_guestd(sandbox_dir(), &[]);
    for qemu in peers() {
        replies_have_the_structure_of(&qemu, &sock);
    }
}

fn replies_have_the_structure_of(qemu: &QemuGa, sock: &Path) {
    let mut theirs = QgaClient::connect(&qemu.sock);
    let mut ours = QgaClient::connect(sock);
    let v = &qemu.version;
    for line in SAME_STRUCTURE {
        let (t, o) = (theirs.call(line), ours.call(line));
        assert_eq!(
            shape(&o),
            shape(&t),
            "{line}\n qemu-ga {v}: {t}\n guestd: {o}"
        );
        if let Some(class) = t.pointer("/error/class") {
            assert_eq!(o.pointer("/error/class"), Some(class), "{line}: {o}");
        }
        assert_eq!(o.get("id"), t.get("id"), "{line}: the id is echoed");
    }
    // Values that do not depend on the guest are equal, not only alike.
    for line in [
        r#"{"execute":"guest-sync","arguments":{"id":123456}}"#,
        r#"{"execute":"guest-ping","id":{"a":[1,"x"]}}"#,
        r#"{"execute":"guest-fsfreeze-status"}"#,
        r#"{"execute":"guest-get-host-name"}"#,
    ] {
        assert_eq!(ours.call(line), theirs.call(line), "{line}");
    }
    let (t, o) = (
        theirs.call(r#"{"execute":"guest-get-osinfo"}"#),
        ours.call(r#"{"execute":"guest-get-osinfo"}"#),
    );
    assert_eq!(o, t, "same os-release and kernel: same osinfo");
    // guest-sync-delimited: 0xFF, then the same reply.
    let line = r#"{"execute":"guest-sync-delimited","arguments":{"id":42}}"#;
    assert_eq!(ours.raw(line), theirs.raw(line));
    assert_eq!(ours.raw(line), b"\xff{\"return\": 42}");
    // The time is the guest's clock in nanoseconds.
    let (t, o) = (
        theirs.call(r#"{"execute":"guest-get-time"}"#),
        ours.call(r#"{"execute":"guest-get-time"}"#),
    );
    let diff = t["return"].as_i64().unwrap() - o["return"].as_i64().unwrap();
    assert!(diff.abs() < 60_000_000_000, "{t} vs {o}");
}

#[test]
fn network_interfaces_match_qemu_ga() {
    let qemu = QemuGa::start();
    let (_g, sock) = start_guestd(sandbox_dir(), &[]);
    let line = r#"{"execute":"guest-network-get-interfaces"}"#;
    let t = QgaClient::connect(&qemu.sock).call(line);
    let o = QgaClient::connect(&sock).call(line);
    let by_name = |v: &Value| -> std::collections::BTreeMap<String, Value> {
        v["return"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|i| (i["name"].as_str().unwrap().to_string(), i.clone()))
            .collect()
    };
    let (t, o) = (by_name(&t), by_name(&o));
    assert_eq!(o.keys().collect::<Vec<_>>(), t.keys().collect::<Vec<_>>());
    for (name, theirs) in &t {
        let ours = &o[name];
        for key in ["name", "hardware-address", "ip-addresses"] {
            assert_eq!(ours.get(key), theirs.get(key), "{name}: {key}");
        }
        if let Some(stats) = theirs.get("statistics") {
            assert_eq!(shape(&ours["statistics"]), shape(stats), "{name}");
        }
    }
}

/// The shadow field of `user` in the sandbox.
fn shadow_field(dir: &Path, user: &str) -> String {
    let text = std::fs::read_to_string(dir.join("root/etc/shadow")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{user}:")))
        .and_then(|rest| rest.split(':').next())
        .unwrap()
        .to_string()
}

/// `openssl passwd -6` with the stored salt gives the stored hash (the reference peer).
fn assert_password(field: &str, password: &str) {
    let salt = field
        .strip_prefix("$6$")
        .unwrap_or_else(|| panic!("not SHA-512 crypt: {field}"))
        .split('$')
        .next()
        .unwrap();
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, password])
        .output()
        .expect("the openssl CLI is required (apt-get install openssl)");
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), field);
}

#[test]
fn set_user_password_changes_the_shadow_entry() {
    use base64::Engine;
    let (g, sock) = start_guestd(sandbox_dir(), &[]);
    let dir = g.dir.path().to_path_buf();
    let mut c = QgaClient::connect(&sock);
    let password = "correct horse battery staple €";
    let b64 = base64::engine::general_purpose::STANDARD.encode(password);
    let req = json!({"execute": "guest-set-user-password", "id": 1,
        "arguments": {"username": "alice", "password": b64, "crypted": false}});
    assert_eq!(c.call(&req.to_string()), json!({"return": {}, "id": 1}));
    assert_password(&shadow_field(&dir, "alice"), password);
    assert_eq!(shadow_field(&dir, "root"), "*", "other entries untouched");
    let md = std::fs::metadata(dir.join("root/etc/shadow")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);

    // crypted: true with something that is not a crypt(3) hash: refused, nothing changes.
    let before = shadow_field(&dir, "alice");
    let req = json!({"execute": "guest-set-user-password",
        "arguments": {"username": "alice", "password": b64, "crypted": true}});
    let r = c.call(&req.to_string());
    assert_eq!(r["error"]["class"], "GenericError", "{r}");
    assert!(
        r["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("crypt(3) hash"),
        "{r}"
    );
    assert_eq!(shadow_field(&dir, "alice"), before);
    // A hash made by a real peer (`openssl passwd -6`) is stored exactly as sent.
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-salt", "PeerMadeSalt1234", "from the host"])
        .output()
        .expect("the openssl CLI is required (apt-get install openssl)");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let hash_b64 = base64::engine::general_purpose::STANDARD.encode(&hash);
    let req = json!({"execute": "guest-set-user-password",
        "arguments": {"username": "alice", "password": hash_b64, "crypted": true}});
    assert_eq!(c.call(&req.to_string()), json!({"return": {}}));
    assert_eq!(shadow_field(&dir, "alice"), hash);
    assert_password(&hash, "from the host");
    assert!(!g.log().contains(&hash), "the hash is not logged");
    let before = shadow_field(&dir, "alice");
    // An unknown user, bad base64 and missing arguments are errors too.
    for args in [
        json!({"username": "mallory", "password": b64, "crypted": false}),
        json!({"username": "alice", "password": "%%%", "crypted": false}),
        json!({"username": "alice", "password": b64}),
    ] {
        let req = json!({"execute": "guest-set-user-password", "arguments": args});
        let r = c.call(&req.to_string());
        assert_eq!(r["error"]["class"], "GenericError", "{args}: {r}");
    }
    assert_eq!(shadow_field(&dir, "alice"), before);
    // The password never reaches the log.
    assert!(!g.log().contains(password) && !g.log().contains(&b64));
}

#[test]
fn ssh_keys_are_added_listed_and_removed() {
    let (g, sock) = start_guestd(sandbox_dir(), &[]);
    let home = g.dir.path().join("root/home/alice");
    let mut c = QgaClient::connect(&sock);
    let k1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1 one@host";
    let k2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ two@host";
    let call = |c: &mut QgaClient, name: &str, args: Value| {
        c.call(&json!({"execute": name, "arguments": args}).to_string())
    };
    let add = |c: &mut QgaClient, keys: Value| {
        call(
            c,
            "guest-ssh-add-authorized-keys",
            json!({"username": "alice", "keys": keys}),
        )
    };
    let get = |c: &mut QgaClient| {
        call(
            c,
            "guest-ssh-get-authorized-keys",
            json!({"username": "alice"}),
        )
    };
    assert_eq!(add(&mut c, json!([k1, k2, k1])), json!({"return": {}}));
    assert_eq!(get(&mut c), json!({"return": {"keys": [k1, k2]}}));
    let file = home.join(".ssh/authorized_keys");
    let md = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o600, 1000, 1000)
    );
    let md = std::fs::metadata(home.join(".ssh")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o700, 1000));
    let r = call(
        &mut c,
        "guest-ssh-remove-authorized-keys",
        json!({"username": "alice", "keys": [k1]}),
    );
    assert_eq!(r, json!({"return": {}}));
    assert_eq!(get(&mut c), json!({"return": {"keys": [k2]}}));
    let r = call(
        &mut c,
        "guest-ssh-add-authorized-keys",
        json!({"username": "alice", "keys": [k1], "reset": true}),
    );
    assert_eq!(r, json!({"return": {}}));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{k1}\n"));
    // A multi-line "key" would inject a second entry: refused.
    let r = add(&mut c, json!([format!("{k2}\n{k1}")]));
    assert_eq!(r["error"]["class"], "GenericError", "{r}");
    // A symlinked ~/.ssh is not written through.
    std::fs::remove_dir_all(home.join(".ssh")).unwrap();
    std::os::unix::fs::symlink("/etc", home.join(".ssh")).unwrap();
    let r = add(&mut c, json!([k2]));
    assert_eq!(r["error"]["class"], "GenericError", "{r}");
    assert!(!g.dir.path().join("root/etc/authorized_keys").exists());
}

#[test]
fn policy_applies_and_guest_info_matches_features() {
    let dir = sandbox_dir();
    let config = dir.path().join("guestd.toml");
    std::fs::write(
        &config,
        "[commands]\ndisabled = [\"guest-get-time\", \"guest-shutdown\", \"version\"]\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let (g, sock) = start_guestd(dir, &["--config", &config]);
    let mut c = QgaClient::connect(&sock);
    let r = c.call(r#"{"execute":"guest-get-time"}"#);
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");
    assert!(
        r["error"]["desc"].as_str().unwrap().contains("disabled"),
        "{r}"
    );
    let r = c.call(r#"{"execute":"guest-shutdown"}"#);
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");

    let info = c.call(r#"{"execute":"guest-info"}"#);
    let commands = info["return"]["supported_commands"].as_array().unwrap();
    let enabled: Vec<&str> = commands
        .iter()
        .filter(|c| c["enabled"] == true)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let disabled: Vec<&str> = commands
        .iter()
        .filter(|c| c["enabled"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(disabled, ["version", "guest-get-time", "guest-shutdown"]);
    assert!(enabled.contains(&"guest-set-user-password"));
    assert!(
        !enabled
            .iter()
            .any(|n| n.starts_with("guest-exec") || n.starts_with("guest-file"))
    );
    let features = g.ctl(&["features"]);
    assert!(features.status.success(), "{features:?}");
    let native = String::from_utf8(features.stdout).unwrap();
    assert_eq!(native.trim(), enabled.join(","));

    // A plain password is not taken over a native channel.
    let mut n = guestd_tests::LineClient::connect(&g.sock);
    let r = n.roundtrip(
        br#"{"id": 1, "name": "guest-set-user-password", "value": {"username": "alice", "password": "eA==", "crypted": false}}"#,
    );
    assert_eq!(r["returncode"], "500", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("qga channel"),
        "{r}"
    );
    assert_eq!(shadow_field(g.dir.path(), "alice"), "!");
}

/// The read-only queries compared on this machine's real /proc and /sys. Only these are
/// enabled in the guestd that runs with `--root /`: nothing it can be asked changes the host.
const QUERIES: &[&str] = &[
    "guest-ping",
    "guest-info",
    "guest-get-osinfo",
    "guest-get-host-name",
    "guest-get-time",
    "guest-fsfreeze-status",
    "guest-get-fsinfo",
    "guest-get-disks",
    "guest-get-diskstats",
    "guest-get-cpustats",
    "guest-get-load",
    "guest-get-users",
    "guest-get-timezone",
    "guest-get-vcpus",
    "guest-get-memory-blocks",
    "guest-get-memory-block-info",
    "guest-network-get-route",
    "guest-get-devices",
];

/// guestd on the real root, with only [`QUERIES`] enabled.
fn start_guestd_on_this_machine() -> (Guestd, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guestd.toml");
    let enabled: Vec<String> = QUERIES.iter().map(|q| format!("\"{q}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "[commands]\nenabled = [{}]\n[update]\nready_marker = \"{}\"\n",
            enabled.join(", "),
            dir.path().join("ready").display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    start_guestd(dir, &["--root", "/", "--config", &config])
}

/// The sort key of list items, per command, so that order does not matter.
fn sort_key(command: &str, item: &Value) -> String {
    let field = match command {
        "guest-get-fsinfo" => "mountpoint",
        "guest-get-disks" | "guest-get-diskstats" => "name",
        "guest-get-cpustats" => "cpu",
        "guest-get-vcpus" => "logical-id",
        "guest-get-memory-blocks" => "phys-index",
        "guest-get-users" => "user",
        "guest-network-get-route" => {
            return format!(
                "{} {} {} {} {}",
                item["version"],
                item["iface"],
                item["destination"],
                item["desprefixlen"],
                item["metric"]
            );
        }
        _ => return item.to_string(),
    };
    format!("{:>20}", item[field].to_string())
}

/// Values that change from one call to the next (counters, usage) replaced by 0, lists
/// sorted: what is left must be equal between guestd and qemu-ga.
fn stable(command: &str, v: &Value) -> Value {
    let zero = |v: &mut Value, keys: &[&str]| {
        for k in keys {
            if let Some(x) = v.get_mut(*k) {
                *x = json!(0);
            }
        }
    };
    let mut v = v.clone();
    if let Some(items) = v.as_array_mut() {
        items.sort_by_key(|i| sort_key(command, i));
        for item in items.iter_mut() {
            match command {
                "guest-get-fsinfo" => zero(item, &["used-bytes", "total-bytes"]),
                "guest-get-diskstats" => {
                    if let Some(stats) = item["stats"].as_object_mut() {
                        stats.values_mut().for_each(|x| *x = json!(0));
                    }
                }
                "guest-get-cpustats" => {
                    let keys: Vec<String> = item
                        .as_object()
                        .unwrap()
                        .keys()
                        .filter(|k| !matches!(k.as_str(), "cpu" | "type"))
                        .cloned()
                        .collect();
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    zero(item, &keys);
                }
                "guest-network-get-route" => {
                    zero(item, &["refcnt", "use"]);
                    // qemu-ga 10 reads IPv6 flags and metrics into a signed int: 0x80200001
                    // becomes 2^64 - 2^31 + …, 0xffffffff becomes -1. guestd reports the
                    // kernel's unsigned 32-bit values; compare those.
                    for key in ["flags", "metric"] {
                        if let Some(n) = item[key].as_i64().or(item[key].as_u64().map(|u| u as i64))
                        {
                            item[key] = json!(n & 0xffff_ffff);
                        }
                    }
                }
                _ => {}
            }
        }
    } else if command == "guest-get-load" {
        zero(&mut v, &["load1m", "load5m", "load15m"]);
    } else if command == "guest-get-time" {
        v = json!(0);
    }
    v
}

/// `ours` has every member of `theirs` with the same value (and may have members an older
/// qemu-ga does not know, e.g. 7.2 lacks `total-bytes-privileged`).
fn covers(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => t
            .iter()
            .all(|(k, tv)| o.get(k).is_some_and(|ov| covers(ov, tv))),
        (Value::Array(o), Value::Array(t)) => {
            o.len() == t.len() && o.iter().zip(t).all(|(a, b)| covers(a, b))
        }
        (o, t) => o == t,
    }
}

#[test]
fn information_matches_qemu_ga_on_this_machine() {
    let (_g, sock) = start_guestd_on_this_machine();
    let mut ours = QgaClient::connect(&sock);
    let peers = peers();
    for command in QUERIES {
        let line = json!({ "execute": command }).to_string();
        let o = ours.call(&line);
        if *command == "guest-get-devices" {
            assert_eq!(o["error"]["class"], "CommandNotFound", "{o}");
        } else {
            qga_schema::check_reply(command, &o).unwrap_or_else(|e| panic!("guestd: {e}"));
        }
        for qemu in &peers {
            let mut theirs = QgaClient::connect(&qemu.sock);
            // Other tests on this machine mount and unmount (network namespaces) and create
            // loop devices: a difference must persist over a few tries to count.
            let mut attempt = 0;
            while let Err(diff) = same_answer(command, &mut ours, &mut theirs, qemu) {
                attempt += 1;
                assert!(attempt < 5, "{diff}");
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
}

/// guestd's and qemu-ga's answers to `command` agree (see [`stable`] and [`covers`]).
fn same_answer(
    command: &str,
    ours: &mut QgaClient,
    theirs: &mut QgaClient,
    qemu: &QemuGa,
) -> Result<(), String> {
    let line = json!({ "execute": command }).to_string();
    let (o, t) = (ours.call(&line), theirs.call(&line));
    let v = &qemu.version;
    if t.pointer("/error/class") == Some(&json!("CommandNotFound"))
        && command != "guest-get-devices"
    {
        // Newer than this qemu-ga (guest-get-load, guest-network-get-route): only the schema
        // speaks for guestd's answer.
        eprintln!("qemu-ga {v} has no {command}");
        return Ok(());
    }
    if let Some(class) = t.pointer("/error/class") {
        assert_eq!(
            o.pointer("/error/class"),
            Some(class),
            "{command}: {o} vs {v}: {t}"
        );
        return Ok(());
    }
    qga_schema::check_reply(command, &t).unwrap_or_else(|e| panic!("qemu-ga {v}: {e}"));
    if matches!(command, "guest-info" | "guest-ping") {
        return Ok(()); // different command sets and versions; structure checked elsewhere
    }
    let (os, mut ts) = (stable(command, &o["return"]), stable(command, &t["return"]));
    // QEMU 10 knows every member guestd reports: equal. Older ones lack some (7.2 has no
    // total-bytes-privileged): guestd's answer covers theirs. And before QEMU 10 bind mounts
    // (a device's second mount) were listed, which guestd leaves out as QEMU 10 does.
    if command == "guest-get-fsinfo" && qemu.major() < 10 {
        let ours: Vec<&Value> = os
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["mountpoint"])
            .collect();
        ts.as_array_mut()
            .unwrap()
            .retain(|f| ours.contains(&&f["mountpoint"]));
    }
    let same = if qemu.major() >= 10 {
        os == ts
    } else {
        covers(&os, &ts)
    };
    if same {
        Ok(())
    } else {
        Err(format!("{command}\n qemu-ga {v}: {t}\n guestd: {o}"))
    }
}

/// A sandbox with sysfs CPU and memory-block files: the writes of set-vcpus and
/// set-memory-blocks land there, not in the real /sys.
#[test]
fn vcpus_and_memory_blocks_are_changed_in_the_sandbox() {
    let dir = sandbox_dir();
    let sys = dir.path().join("root/sys/devices/system");
    for (path, text) in [
        ("cpu/cpu0/uevent", ""),
        ("cpu/cpu1/online", "1\n"),
        ("memory/block_size_bytes", "8000000\n"),
        ("memory/memory0/state", "online\n"),
        ("memory/memory0/removable", "0\n"),
        ("memory/memory1/state", "online\n"),
        ("memory/memory1/removable", "1\n"),
    ] {
        let p = sys.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let (g, sock) = start_guestd(dir, &[]);
    let mut c = QgaClient::connect(&sock);
    let mut call = |command: &str, args: Value| {
        let r = c.call(&json!({"execute": command, "arguments": args}).to_string());
        qga_schema::check_reply(command, &r).unwrap_or_else(|e| panic!("{e}"));
        r["return"].clone()
    };
    assert_eq!(
        call("guest-get-vcpus", json!({})),
        json!([{"logical-id": 0, "online": true, "can-offline": false},
               {"logical-id": 1, "online": true, "can-offline": true}])
    );
    let vcpus =
        json!({"vcpus": [{"logical-id": 1, "online": false}, {"logical-id": 0, "online": false}]});
    assert_eq!(call("guest-set-vcpus", vcpus), json!(1));
    let blocks = json!({"mem-blks": [{"phys-index": 1, "online": false}, {"phys-index": 7, "online": false}]});
    assert_eq!(
        call("guest-set-memory-blocks", blocks),
        json!([{"phys-index": 1, "response": "success"},
               {"phys-index": 7, "response": "not-found", "error-code": 2}])
    );
    assert_eq!(
        call("guest-get-memory-block-info", json!({})),
        json!({"size": 134217728})
    );
    let root = g.dir.path().join("root/sys/devices/system");
    assert!(
        std::fs::read_to_string(root.join("cpu/cpu1/online"))
            .unwrap()
            .starts_with('0')
    );
    assert!(
        std::fs::read_to_string(root.join("memory/memory1/state"))
            .unwrap()
            .starts_with("offline")
    );
}
