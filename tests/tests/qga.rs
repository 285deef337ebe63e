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
        Self::start_bin_with(bin, &[])
    }

    /// With extra options (`-b guest-exec,...` blocks commands).
    fn start_bin_with(bin: &Path, extra: &[&str]) -> Self {
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
            .args(extra)
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
    // guest-info lists exactly the qga channel's commands, blocked ones as disabled (the exec
    // and file commands too: off without [qga] allow lists).
    assert_eq!(
        disabled,
        [
            "guest-get-time",
            "guest-shutdown",
            "guest-exec",
            "guest-exec-status",
            "guest-file-open",
            "guest-file-close",
            "guest-file-read",
            "guest-file-write",
            "guest-file-seek",
            "guest-file-flush"
        ]
    );
    for name in [
        "guest-sync",
        "guest-sync-delimited",
        "guest-set-user-password",
    ] {
        assert!(enabled.contains(&name), "{name}: {enabled:?}");
    }
    assert!(
        !enabled
            .iter()
            .any(|n| n.starts_with("guest-exec") || n.starts_with("guest-file"))
    );
    assert!(
        commands
            .iter()
            .all(|c| c["name"].as_str().unwrap().starts_with("guest-")),
        "{info}"
    );
    // features on the native channel: the native enabled commands only.
    let features = g.ctl(&["features"]);
    assert!(features.status.success(), "{features:?}");
    let native = String::from_utf8(features.stdout).unwrap();
    let native: Vec<&str> = native.trim().split(',').collect();
    assert!(
        native.contains(&"features") && native.contains(&"file_inject"),
        "{native:?}"
    );
    assert!(!native.contains(&"version"), "disabled: {native:?}");
    assert!(
        !native.iter().any(|n| n.starts_with("guest-")),
        "{native:?}"
    );

    // Native commands do not exist on the qga channel, qga commands not on the native one
    // (a plain password is never taken over a channel such as XenStore).
    let r = c
        .call(r#"{"execute":"file_inject","arguments":{"b64_path":"L3RtcC94","b64_file":"eA=="}}"#);
    assert_eq!(
        r,
        json!({"error": {"class": "CommandNotFound", "desc": "The command file_inject has not been found"}})
    );
    let r = c.call(r#"{"execute":"agentupdate"}"#);
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");
    assert!(!g.dir.path().join("root/tmp/x").exists());
    let mut n = guestd_tests::LineClient::connect(&g.sock);
    let r = n.roundtrip(
        br#"{"id": 1, "name": "guest-set-user-password", "value": {"username": "alice", "password": "eA==", "crypted": false}}"#,
    );
    assert_eq!(r["returncode"], "404", "{r}");
    assert_eq!(
        r["message"], "No such agent command 'guest-set-user-password'",
        "{r}"
    );
    assert_eq!(shadow_field(g.dir.path(), "alice"), "!");
}

/// Raw byte sequences, as a client may write them, that qemu-ga and guestd must answer with
/// the same replies: requests back to back and without a newline, single-quoted strings,
/// lexical and syntax errors (and the recovery after them), non-objects, argument errors.
const SAME_REPLIES: &[(&[u8], usize)] = &[
    (
        br#"{"execute":"guest-ping"}{"execute":"guest-ping","id":2}"#,
        2,
    ),
    (
        b"{\"execute\":\"guest-ping\"}\r\n\r\n  {\"execute\":\"guest-ping\",\"id\":3}",
        2,
    ),
    (
        br#"{'execute':'guest-sync','arguments':{'id':77},'id':'sq'}"#,
        1,
    ),
    (b"@\n{\"execute\":\"guest-ping\"}", 2),
    (br#"[1]"#, 1),
    (br#""abc" "#, 1),
    (br#"nul {"execute":"guest-ping"}"#, 2),
    (br#"} {"execute":"guest-ping"}"#, 2),
    (br#"{"execute":"guest-sync","arguments":{"id":"x"}}"#, 1),
    (br#"{"execute":"guest-sync","arguments":{"id":1.5}}"#, 1),
    (br#"{"execute":"guest-sync","arguments":{}}"#, 1),
    (br#"{"execute":"guest-ping","arguments":{"bogus":1}}"#, 1),
    (
        br#"{"execute":"guest-ssh-get-authorized-keys","arguments":{"username":5}}"#,
        1,
    ),
    (
        br#"{"execute":"guest-set-user-password","arguments":{"username":"x","password":"y"}}"#,
        1,
    ),
    (br#"{"execute":"guest-get-time","arguments":null}"#, 1),
];

/// Write `bytes` and read `n` reply lines.
fn exchange(sock: &Path, bytes: &[u8], n: usize) -> Vec<Value> {
    let mut stream = UnixStream::connect(sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut reader = BufReader::new(stream);
    (0..n)
        .map(|_| {
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).unwrap();
            serde_json::from_slice(&line).unwrap_or_else(|e| {
                panic!(
                    "{:?}: {e}: {}",
                    String::from_utf8_lossy(bytes),
                    String::from_utf8_lossy(&line)
                )
            })
        })
        .collect()
}

#[test]
fn framing_and_errors_match_qemu_ga() {
    let qemu = QemuGa::start();
    let (_g, sock) = start_guestd(sandbox_dir(), &[]);
    for (bytes, n) in SAME_REPLIES {
        let (t, o) = (exchange(&qemu.sock, bytes, *n), exchange(&sock, bytes, *n));
        assert_eq!(o, t, "{}", String::from_utf8_lossy(bytes));
    }
}

/// The python of `scripts/qmp-venv` (QEMU's `qemu.qmp` library, pinned), or `GUESTD_QMP_PYTHON`.
fn qmp_python() -> PathBuf {
    if let Some(python) = std::env::var_os("GUESTD_QMP_PYTHON") {
        return python.into();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let python = workspace.join(target).join("qmp-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/qmp-venv (scripts/test-all does)",
        python.display()
    );
    python
}

/// Run tests/qmp/qga_client.py with `args`; its JSON output.
fn qmp_client(args: &[&std::ffi::OsStr]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("qmp/qga_client.py");
    let out = Command::new(qmp_python())
        .arg(&script)
        .args(args)
        .output()
        .expect("run the qemu.qmp client");
    assert!(
        out.status.success(),
        "qemu.qmp client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// QEMU's own client code path, unchanged: `qemu.qmp`'s `QEMUMonitorProtocol` connected with
/// `negotiate=False`, qemu-ga-client's ping + `guest-sync` handshake, then `cmd_obj` per
/// read-only command (tests/qmp/qga_client.py lists them, each with the guestd that can answer
/// it: a sandbox, or this machine's /proc and /sys). The library sends each request without a
/// newline, which a line-based agent never answers ("Agent seems not alive").
#[test]
fn qemu_s_own_python_client_drives_every_read_only_command() {
    let dir = sandbox_dir();
    let ssh = dir.path().join("root/home/alice/.ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1 alice@host";
    std::fs::write(ssh.join("authorized_keys"), format!("{key}\n")).unwrap();
    let (_sandboxed, sandbox_sock) = start_guestd(dir, &[]);
    let (_host, host_sock) = start_guestd_on_this_machine();
    let mut replies = serde_json::Map::new();
    for (sock, group) in [(&sandbox_sock, "sandbox"), (&host_sock, "host")] {
        let result = qmp_client(&[sock.as_os_str(), group.as_ref()]);
        assert_eq!(result["synced"], true, "{group}");
        replies.extend(result["replies"].as_object().unwrap().clone());
    }
    // Every command of the list was asked, and answered with a return value.
    let listed = qmp_client(&["--list".as_ref()]);
    let asked: Vec<&String> = replies.keys().collect();
    let mut all: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(asked, all, "a command of READ_ONLY was not asked");
    for (name, reply) in &replies {
        assert!(reply.get("return").is_some(), "{name}: {reply}");
    }
    // What the client saw is what the guest is.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        replies["guest-get-host-name"]["return"]["host-name"],
        host.trim()
    );
    assert_eq!(replies["guest-fsfreeze-status"]["return"], "thawed");
    assert_eq!(
        replies["guest-ssh-get-authorized-keys"]["return"],
        json!({"keys": [key]})
    );
    let enabled: Vec<&str> = replies["guest-info"]["return"]["supported_commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["enabled"] == true)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in replies.keys().map(String::as_str).chain(["guest-sync"]) {
        assert!(
            enabled.contains(&name),
            "guest-info lacks {name}: {enabled:?}"
        );
    }
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

/// The exec and file commands guestd and qemu-ga both answer, in order: `$T` is a temporary
/// directory, `$h` the handle the last `guest-file-open` returned, `$pid` the pid the last
/// `guest-exec` returned; `wait` polls `guest-exec-status` for `$pid` until it has exited.
/// Only harmless programs (`/bin/sh` with echo, cat, sleep 1, exit, kill of itself) and files
/// in `$T`.
const EXEC_FILE_STEPS: &[(&str, &str)] = &[
    ("guest-file-open", r#"{"path": "$T/f.txt"}"#),
    ("guest-file-read", r#"{"handle": $h, "count": 5}"#),
    ("guest-file-read", r#"{"handle": $h}"#),
    ("guest-file-read", r#"{"handle": $h}"#),
    (
        "guest-file-seek",
        r#"{"handle": $h, "offset": 2, "whence": "set"}"#,
    ),
    (
        "guest-file-seek",
        r#"{"handle": $h, "offset": 2, "whence": 1}"#,
    ),
    (
        "guest-file-seek",
        r#"{"handle": $h, "offset": -100, "whence": "cur"}"#,
    ),
    (
        "guest-file-seek",
        r#"{"handle": $h, "offset": 0, "whence": 7}"#,
    ),
    (
        "guest-file-seek",
        r#"{"handle": $h, "offset": 0, "whence": "bogus"}"#,
    ),
    (
        "guest-file-seek",
        r#"{"handle": $h, "offset": 0, "whence": 1.5}"#,
    ),
    ("guest-file-write", r#"{"handle": $h, "buf-b64": "eHl6"}"#),
    ("guest-file-read", r#"{"handle": $h, "count": -1}"#),
    ("guest-file-flush", r#"{"handle": $h}"#),
    ("guest-file-close", r#"{"handle": $h}"#),
    ("guest-file-close", r#"{"handle": $h}"#),
    ("guest-file-open", r#"{"path": "$T/new.txt", "mode": "w+"}"#),
    (
        "guest-file-write",
        r#"{"handle": $h, "buf-b64": "YWJjZGVm", "count": 3}"#,
    ),
    (
        "guest-file-write",
        r#"{"handle": $h, "buf-b64": "YWJjZGVm", "count": 10}"#,
    ),
    ("guest-file-write", r#"{"handle": $h, "buf-b64": "!!!"}"#),
    (
        "guest-file-seek",
        r#"{"handle": $h, "offset": 0, "whence": "set"}"#,
    ),
    ("guest-file-read", r#"{"handle": $h}"#),
    ("guest-file-close", r#"{"handle": $h}"#),
    ("guest-file-open", r#"{"path": "$T/new.txt", "mode": "ab"}"#),
    ("guest-file-write", r#"{"handle": $h, "buf-b64": "eg=="}"#),
    ("guest-file-close", r#"{"handle": $h}"#),
    ("guest-file-open", r#"{"path": "$T/new.txt", "mode": "r+"}"#),
    (
        "guest-file-seek",
        r#"{"handle": $h, "offset": -1, "whence": "end"}"#,
    ),
    ("guest-file-read", r#"{"handle": $h, "count": 100}"#),
    ("guest-file-close", r#"{"handle": $h}"#),
    ("guest-file-open", r#"{"path": "$T/missing.txt"}"#),
    ("guest-file-open", r#"{"path": "$T/f.txt", "mode": "rw"}"#),
    ("guest-file-open", r#"{"path": "$T/f.txt", "bogus": 1}"#),
    ("guest-file-open", r#"{}"#),
    ("guest-file-read", r#"{"handle": "x"}"#),
    ("guest-file-read", r#"{"handle": 12345}"#),
    (
        "guest-exec",
        r#"{"path": "/bin/sh", "arg": ["-c", "echo hi; echo err >&2; exit 3"], "capture-output": true}"#,
    ),
    ("wait", ""),
    ("guest-exec-status", r#"{"pid": $pid}"#),
    (
        "guest-exec",
        r#"{"path": "/bin/sh", "arg": ["-c", "cat"], "input-data": "aW5wdXQ=", "capture-output": true}"#,
    ),
    ("wait", ""),
    (
        "guest-exec",
        r#"{"path": "/bin/sh", "arg": ["-c", "echo \"$A\""], "env": ["A=from env"], "capture-output": true}"#,
    ),
    ("wait", ""),
    (
        "guest-exec",
        r#"{"path": "/bin/sh", "arg": ["-c", "kill -TERM $$"]}"#,
    ),
    ("wait", ""),
    (
        "guest-exec",
        r#"{"path": "/bin/sh", "arg": ["-c", "exit 0"], "capture-output": false}"#,
    ),
    ("wait", ""),
    (
        "guest-exec",
        r#"{"path": "/bin/sh", "arg": ["-c", "sleep 1"]}"#,
    ),
    ("guest-exec-status", r#"{"pid": $pid}"#),
    ("wait", ""),
    ("guest-exec", r#"{}"#),
    ("guest-exec", r#"{"path": "/bin/sh", "bogus": 1}"#),
    ("guest-exec", r#"{"path": "/bin/sh", "input-data": "!!"}"#),
    ("guest-exec", r#"{"path": "/bin/sh", "capture-output": 5}"#),
    ("guest-exec", r#"{"path": "/nonexistent/program"}"#),
    ("guest-exec-status", r#"{}"#),
    ("guest-exec-status", r#"{"pid": "x"}"#),
];

/// `capture-output` as `GuestExecCaptureOutputMode` (QEMU 8 and later). Not `"stderr"`:
/// qemu-ga 10.0 never reports such a program as exited (it spins on the closed stdout) and
/// answers later requests with the wrong output; guestd's `"stderr"` is checked on its own in
/// tests/tests/qga_exec.rs and crates/core's process tests.
const EXEC_MODE_STEPS: &[(&str, &str)] = &[
    ("mode", "none"),
    ("mode", "stdout"),
    ("mode", "separated"),
    ("mode", "merged"),
    (
        "guest-exec",
        r#"{"path": "/bin/sh", "capture-output": "everything"}"#,
    ),
];

/// Run `steps` against one agent; its replies in order.
fn run_steps(sock: &Path, dir: &Path, steps: &[(&str, &str)]) -> Vec<Value> {
    let mut c = QgaClient::connect(sock);
    let (mut handle, mut pid) = (json!(null), json!(null));
    let mut replies = Vec::new();
    for (command, args) in steps {
        let reply = match *command {
            "wait" => {
                let line = json!({"execute": "guest-exec-status", "arguments": {"pid": pid}});
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let r = c.call(&line.to_string());
                    if r["return"]["exited"] != false || Instant::now() > deadline {
                        break r;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            "mode" => {
                let script = "echo out; echo err >&2; exit 4";
                let exec = json!({"execute": "guest-exec", "arguments":
                    {"path": "/bin/sh", "arg": ["-c", script], "capture-output": args}});
                pid = c.call(&exec.to_string())["return"]["pid"].clone();
                let line = json!({"execute": "guest-exec-status", "arguments": {"pid": pid}});
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let r = c.call(&line.to_string());
                    if r["return"]["exited"] != false || Instant::now() > deadline {
                        break r;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            _ => {
                let args = args
                    .replace("$T", dir.to_str().unwrap())
                    .replace("$h", &handle.to_string())
                    .replace("$pid", &pid.to_string());
                let line = format!(r#"{{"execute": "{command}", "arguments": {args}}}"#);
                c.call(&line)
            }
        };
        if let Some(r) = reply.get("return") {
            match *command {
                "guest-file-open" => handle = r.clone(),
                "guest-exec" => pid = r["pid"].clone(),
                _ => {}
            }
        }
        replies.push(reply);
    }
    replies
}

/// What must be equal between guestd and qemu-ga: a success's value, except the handle and
/// the pid (only their type); an error's class. `out-truncated`/`err-truncated` are compared
/// only when true: qemu-ga 7.2 sends `false` with any output, qemu-ga 10 sends them only when
/// output was dropped.
fn comparable(command: &str, reply: &Value) -> Value {
    if let Some(class) = reply.pointer("/error/class") {
        return json!({ "error": class });
    }
    let mut r = reply["return"].clone();
    match command {
        "guest-file-open" => r = shape(&r),
        "guest-exec" => r = shape(&r),
        _ => {}
    }
    if let Some(map) = r.as_object_mut() {
        map.retain(|k, v| !(k.ends_with("-truncated") && *v == json!(false)));
    }
    json!({ "return": r })
}

#[test]
fn exec_and_file_commands_match_qemu_ga() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let config = dir.path().join("guestd.toml");
    std::fs::write(
        &config,
        format!(
            "[qga]\nexec_allow = [\"/bin/sh\"]\nfile_allow = [\"{}\"]\n\
             [update]\nready_marker = \"{}\"\n",
            files.path().display(),
            dir.path().join("ready").display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let (_g, sock) = start_guestd(dir, &["--root", "/", "--config", &config]);
    for qemu in peers() {
        let mut steps = EXEC_FILE_STEPS.to_vec();
        if qemu.major() >= 8 {
            steps.extend_from_slice(EXEC_MODE_STEPS);
        }
        let mut results = Vec::new();
        for sock in [&qemu.sock, &sock] {
            // The same fresh files for each agent.
            for f in ["f.txt", "new.txt"] {
                let _ = std::fs::remove_file(files.path().join(f));
            }
            std::fs::write(files.path().join("f.txt"), b"hello world").unwrap();
            results.push(run_steps(sock, files.path(), &steps));
        }
        let v = &qemu.version;
        for (i, (command, args)) in steps.iter().enumerate() {
            let (t, o) = (&results[0][i], &results[1][i]);
            assert_eq!(
                comparable(command, o),
                comparable(command, t),
                "step {i}: {command} {args}\n qemu-ga {v}: {t}\n guestd: {o}"
            );
            if let Some(r) = o.get("return") {
                let name = match *command {
                    "wait" | "mode" => "guest-exec-status",
                    c => c,
                };
                qga_schema::check_reply(name, o).unwrap_or_else(|e| panic!("step {i}: {e}: {r}"));
            }
        }
    }
}

/// Off by default, the eight commands look exactly like qemu-ga's when it blocks them
/// (`-b`, RHEL's default): listed as disabled, refused with the same error.
#[test]
fn disabled_exec_and_file_commands_answer_like_blocked_ones() {
    let blocked = [
        "guest-exec",
        "guest-exec-status",
        "guest-file-open",
        "guest-file-close",
        "guest-file-read",
        "guest-file-write",
        "guest-file-seek",
        "guest-file-flush",
    ];
    let (_g, sock) = start_guestd(sandbox_dir(), &[]);
    let list = blocked.join(",");
    for bin in std::iter::once(system_qemu_ga()).chain(newer_qemu_ga()) {
        let qemu = QemuGa::start_bin_with(&bin, &["-b", &list]);
        let (mut theirs, mut ours) = (QgaClient::connect(&qemu.sock), QgaClient::connect(&sock));
        let enabled = |info: &Value, name: &str| {
            info["return"]["supported_commands"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .map(|c| c["enabled"].clone())
        };
        let line = r#"{"execute":"guest-info"}"#;
        let (t, o) = (theirs.call(line), ours.call(line));
        for name in blocked {
            assert_eq!(enabled(&o, name), Some(json!(false)), "{name}");
            assert_eq!(enabled(&o, name), enabled(&t, name), "{name}");
            // QEMU 10 words it "Command NAME has been disabled: the command is not allowed";
            // 7.2 stops after "disabled".
            let line = json!({"execute": name, "arguments": {}}).to_string();
            let (t, o) = (theirs.call(&line), ours.call(&line));
            if qemu.major() >= 10 {
                assert_eq!(o, t, "{name}");
            } else {
                assert_eq!(o["error"]["class"], t["error"]["class"], "{name}");
                let (od, td) = (o["error"]["desc"].as_str(), t["error"]["desc"].as_str());
                assert!(od.unwrap().starts_with(td.unwrap()), "{name}: {o} vs {t}");
            }
        }
    }
}
