//! Issue 20, `configure`, against a real Debian 12 tree: the debootstrap root with systemd that
//! tests/vm/guest-root.sh builds once per checkout (copied per test, never changed). guestd
//! runs with `--root` on the copy, so every tool acts inside it and nothing on this machine:
//! `groupadd -R`/`useradd -R`, `chroot ROOT apt-get` (from a local file: repository made here,
//! no network), `systemctl --root=ROOT`, the archive written through `Root`, and the script
//! through `chroot ROOT`. These tools act on the tree only, so the `--root` effect sandbox runs
//! them; the script could act on the machine, and runs because the test allows that one effect
//! (`[sandbox] allow_effects = ["script"]`). The host side is the real `guestctl configure` over
//! a unix socket, and a nova-style host writing XenStore with Debian's xenstore-write against
//! test-xenstored.
//!
//! Needs root (chroot, chown) and the cached root: `tests/vm/guest-root.sh` builds it (once,
//! with network); scripts/test-all runs it before the tests.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // these tests build trees by path and run the binaries

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use guestd_tests::{Guestd, bin};
use serde_json::{Value, json};
use sha2::Digest;

/// The cached Debian root (built by tests/vm/guest-root.sh when missing).
fn debian_root() -> Option<PathBuf> {
    if !is_root() {
        eprintln!("SKIP: configure in a Debian root needs root (chroot, chown)");
        return None;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(repo.join("tests/vm/guest-root.sh"))
        .current_dir(repo)
        .output()
        .expect("run tests/vm/guest-root.sh");
    assert!(
        out.status.success(),
        "tests/vm/guest-root.sh could not build the Debian root (it needs debootstrap and the \
         network once): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A copy of the Debian root prepared as a guest whose administrator put a script and a
/// tarball on it, with a local package repository and no other apt source.
struct Guest {
    dir: tempfile::TempDir,
}

impl Guest {
    fn new(base: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("guestd-configure.")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        run(Command::new("cp").arg("-a").arg(base).arg(&root));
        let g = Self { dir };
        g.local_repository();
        // The administrator's script, root's and not writable by others.
        let scripts = g.path("etc/guestd/scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        std::fs::write(
            scripts.join("demo-setup.sh"),
            "#!/bin/sh\n# Written by the guest's administrator, not by the host.\nset -eu\n\
             printf 'greeting=%s\\nport=%s\\nresource=%s\\n' \"$DEMO_GREETING\" \"$DEMO_PORT\" \
             \"$GUESTD_RESOURCE\" > /srv/demo-site/setup.out\n",
        )
        .unwrap();
        std::fs::set_permissions(
            scripts.join("demo-setup.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // A tarball already on the guest (as file_inject or an image would leave it).
        let site = g.path("var/lib/guestd-demo");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(site.join("site.tar.gz"), site_tarball()).unwrap();
        // Account, package and service tools act on the tree (-R, --root=, chroot) and run
        // under the --root sandbox as they are; the script could act on the machine, so the
        // sandbox runs it only because `script` is allowed here (it writes one file in the tree).
        std::fs::write(
            g.dir.path().join("guestd.toml"),
            "[configure]\nkinds = [\"file\", \"directory\", \"user\", \"group\", \"package\", \
             \"service\", \"archive\", \"run\"]\n[sandbox]\nallow_effects = [\"script\"]\n",
        )
        .unwrap();
        g
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// A one-package repository at /srv/local-repo (file:, trusted), the only apt source,
    /// and apt's index of it (read from disk: no network).
    fn local_repository(&self) {
        let repo = self.path("srv/local-repo");
        std::fs::create_dir_all(&repo).unwrap();
        let deb = demo_deb(self.dir.path());
        let bytes = std::fs::read(&deb).unwrap();
        std::fs::write(repo.join("guestd-demo_1.0_all.deb"), &bytes).unwrap();
        let packages = format!(
            "Package: guestd-demo\nVersion: 1.0\nArchitecture: all\nMaintainer: guestd tests \
             <tests@example.invalid>\nInstalled-Size: 1\nFilename: ./guestd-demo_1.0_all.deb\n\
             Size: {}\nSHA256: {:x}\nDescription: configure test package\n\n",
            bytes.len(),
            sha2::Sha256::digest(&bytes)
        );
        std::fs::write(repo.join("Packages"), packages).unwrap();
        std::fs::write(
            self.path("etc/apt/sources.list"),
            "deb [trusted=yes] file:/srv/local-repo ./\n",
        )
        .unwrap();
        let parts = self.path("etc/apt/sources.list.d");
        if parts.is_dir() {
            for entry in std::fs::read_dir(&parts).unwrap().flatten() {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        run(Command::new("chroot")
            .arg(self.root())
            .args(["apt-get", "update", "-qq"])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
    }

    /// guestd with --root on this guest, on a unix socket.
    fn start(&self) -> Guestd {
        let state = tempfile::Builder::new()
            .prefix("guestd-configure-run.")
            .tempdir()
            .unwrap();
        let config = self.dir.path().join("guestd.toml");
        let root = self.root();
        Guestd::start_in(
            state,
            &[
                "--root",
                root.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
        )
    }

    /// Metadata of every entry of the tree (what a "nothing changed" check compares), without
    /// guestd's kept results.
    fn snapshot(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let path = e.path();
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                if rel == "var/lib/guestd/configure" || rel.starts_with("proc") {
                    continue;
                }
                let md = std::fs::symlink_metadata(&path).unwrap();
                out.push(format!(
                    "{rel} {:o} {}:{} {} {}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.len(),
                    md.mtime_nsec() + md.mtime() * 1_000_000_000
                ));
                if md.is_dir() {
                    walk(base, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root(), &self.root(), &mut out);
        out
    }
}

/// `guestd-demo` 1.0: a README and a systemd unit, built with dpkg-deb.
fn demo_deb(work: &Path) -> PathBuf {
    let tree = work.join("deb");
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(tree.join("usr/share/doc/guestd-demo")).unwrap();
    std::fs::create_dir_all(tree.join("lib/systemd/system")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        "Package: guestd-demo\nVersion: 1.0\nArchitecture: all\nMaintainer: guestd tests \
         <tests@example.invalid>\nDescription: configure test package\n",
    )
    .unwrap();
    std::fs::write(
        tree.join("usr/share/doc/guestd-demo/README"),
        "installed by configure\n",
    )
    .unwrap();
    std::fs::write(
        tree.join("lib/systemd/system/guestd-demo.service"),
        "[Unit]\nDescription=guestd configure demo\n\n[Service]\nExecStart=/bin/sleep infinity\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let deb = work.join("guestd-demo_1.0_all.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(&deb));
    deb
}

/// index.html and assets/style.css, with a link inside it.
fn site_tarball() -> Vec<u8> {
    let mut builder = TarBuilder::default();
    builder.dir("assets");
    builder.file("index.html", b"<h1>hello</h1>\n", 0o644);
    builder.file("assets/style.css", b"h1 { color: teal }\n", 0o644);
    builder.link("style.css", "assets/style.css");
    gzip(&builder.finish())
}

/// The document of the acceptance test.
fn document() -> Value {
    json!({"resources": [
        {"name": "demo-group", "kind": "group", "group": "demo", "gid": 2500},
        {"name": "demo-user", "kind": "user", "user": "demo", "uid": 2500, "group": "demo",
         "home": "/home/demo", "shell": "/bin/bash", "comment": "guestd demo",
         "after": ["demo-group"]},
        {"name": "demo-package", "kind": "package", "package": "guestd-demo", "version": "1.0"},
        {"name": "demo-conf", "kind": "file", "path": "/etc/guestd-demo/demo.conf",
         "content": "greeting=hello\n", "mode": "0640", "group": "demo",
         "after": ["demo-group"]},
        {"name": "demo-service", "kind": "service", "service": "guestd-demo.service",
         "enabled": true, "state": "running", "after": ["demo-package", "demo-conf"]},
        {"name": "demo-site", "kind": "archive", "source": "/var/lib/guestd-demo/site.tar.gz",
         "destination": "/srv/demo-site", "owner": "demo", "group": "demo",
         "after": ["demo-user"]},
        {"name": "demo-setup", "kind": "run", "script": "demo-setup.sh",
         "params": {"DEMO_GREETING": "hello world", "DEMO_PORT": 8080},
         "creates": "/srv/demo-site/setup.out", "after": ["demo-site", "demo-conf"]}
    ]})
}

fn statuses(result: &Value) -> Vec<(String, String)> {
    result["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources in {result}"))
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all(status: &str) -> Vec<(String, String)> {
    [
        "demo-group",
        "demo-user",
        "demo-package",
        "demo-conf",
        "demo-service",
        "demo-site",
        "demo-setup",
    ]
    .iter()
    .map(|n| (n.to_string(), status.to_string()))
    .collect()
}

/// `guestctl configure FILE [args]` → (exit code, stdout JSON or stderr).
fn ctl_configure(g: &Guestd, doc: &Value, args: &[&str]) -> (i32, Value, String) {
    let file = g.dir.path().join("doc.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let mut all = vec!["--timeout", "600", "configure", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = g.ctl(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), value, stderr)
}

#[test]
fn configure_a_debian_root_then_nothing_changes() {
    let Some(base) = debian_root() else { return };
    let guest = Guest::new(&base);
    let g = guest.start();
    let root = guest.root();

    // 1. Apply.
    let (code, result, stderr) = ctl_configure(&g, &document(), &[]);
    assert_eq!(code, 0, "{stderr}\n{result:#}\n{}", g.log());
    assert_eq!(statuses(&result), all("changed"), "{result:#}");
    let group = std::fs::read_to_string(guest.path("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("demo:x:2500:")),
        "{group}"
    );
    let passwd = std::fs::read_to_string(guest.path("etc/passwd")).unwrap();
    assert!(
        passwd.contains("demo:x:2500:2500:guestd demo:/home/demo:/bin/bash"),
        "{passwd}"
    );
    assert!(guest.path("home/demo").is_dir());
    let status = run(Command::new("chroot").arg(&root).args([
        "dpkg-query",
        "-W",
        "-f=${Status} ${Version}",
        "guestd-demo",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "install ok installed 1.0"
    );
    let conf = guest.path("etc/guestd-demo/demo.conf");
    assert_eq!(std::fs::read(&conf).unwrap(), b"greeting=hello\n");
    let md = std::fs::metadata(&conf).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o640, 0, 2500));
    // Enabled, checked the way a tree without a running systemd allows.
    let enabled = Command::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .args(["is-enabled", "guestd-demo.service"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "enabled");
    let service = &result["resources"][4];
    assert!(
        service["notes"][0]
            .as_str()
            .unwrap_or("")
            .contains("state 'running' is not applied"),
        "{service}"
    );
    let index = guest.path("srv/demo-site/index.html");
    assert_eq!(std::fs::read(&index).unwrap(), b"<h1>hello</h1>\n");
    assert_eq!(std::fs::metadata(&index).unwrap().uid(), 2500);
    assert_eq!(
        std::fs::read_link(guest.path("srv/demo-site/style.css")).unwrap(),
        Path::new("assets/style.css")
    );
    assert_eq!(
        std::fs::read_to_string(guest.path("srv/demo-site/setup.out")).unwrap(),
        "greeting=hello world\nport=8080\nresource=demo-setup\n"
    );
    assert_eq!(result["resources"][6]["output"]["exit_code"], 0);

    // 2. The same document again: everything is as asked.
    let (code, again, stderr) = ctl_configure(&g, &document(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(statuses(&again), all("unchanged"), "{again:#}");

    // 3. A dry run of a changed document reports and changes nothing.
    let mut changed = document();
    changed["resources"][3]["content"] = json!("greeting=bonjour\n");
    changed["resources"][0]["gid"] = json!(2600);
    let before = guest.snapshot();
    let (code, dry, stderr) = ctl_configure(&g, &changed, &["--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(dry["dry_run"], true);
    let mut want = all("unchanged");
    want[0].1 = "changed".into();
    want[3].1 = "changed".into();
    assert_eq!(statuses(&dry), want, "{dry:#}");
    assert_eq!(dry["resources"][0]["changes"][0], "gid 2500 -> 2600");
    assert_eq!(guest.snapshot(), before, "a dry run changed the tree");

    // 4. Refusals: each with a clear reason, nothing changed, nothing run.
    let refusals: Vec<(Value, &str)> = vec![
        (
            with(
                json!({"name": "a", "kind": "group", "group": "ga", "after": ["b"]}),
                json!({"name": "b", "kind": "group", "group": "gb", "after": ["a"]}),
            ),
            "form a cycle: a -> b -> a",
        ),
        (
            with(
                json!({"name": "x", "kind": "shell", "command": "id"}),
                json!(null),
            ),
            "unknown kind 'shell'",
        ),
        (
            with(
                json!({"name": "x", "kind": "run", "script": "../../../bin/sh"}),
                json!(null),
            ),
            "is not a plain file name",
        ),
        (
            with(
                json!({"name": "x", "kind": "run", "script": "demo-setup.sh",
                        "params": {"DEMO_GREETING": "two\nlines"}}),
                json!(null),
            ),
            "parameter 'DEMO_GREETING' holds a control character",
        ),
    ];
    for (doc, want) in refusals {
        let (code, _, stderr) = ctl_configure(&g, &doc, &[]);
        assert_eq!(code, 1, "{doc}: {stderr}");
        assert!(
            stderr.contains("configure refused, nothing was changed") && stderr.contains(want),
            "{doc}: {stderr}"
        );
        assert_eq!(guest.snapshot(), before, "{doc} changed the tree");
    }
    // A script outside scripts_dir by way of a link in it.
    std::os::unix::fs::symlink("/bin/sh", guest.path("etc/guestd/scripts/sh")).unwrap();
    let before = guest.snapshot();
    let (code, _, stderr) = ctl_configure(
        &g,
        &with(
            json!({"name": "x", "kind": "run", "script": "sh"}),
            json!(null),
        ),
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert_eq!(guest.snapshot(), before);
    std::fs::remove_file(guest.path("etc/guestd/scripts/sh")).unwrap();
    // scripts_dir writable by others.
    let scripts = guest.path("etc/guestd/scripts");
    std::fs::set_permissions(&scripts, std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = guest.snapshot();
    let mut doc = document();
    doc["resources"][6]["creates"] = json!("/nonexistent");
    let (code, _, stderr) = ctl_configure(&g, &doc, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("'/etc/guestd/scripts' can be changed by an account other than root"),
        "{stderr}"
    );
    assert_eq!(guest.snapshot(), before);
    std::fs::set_permissions(&scripts, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!g.log().contains("demo-setup.sh' failed"));
}

/// A document of a file resource plus `extra` (and `more` when not null), to show that the
/// valid part does not run either when the document is refused.
fn with(extra: Value, more: Value) -> Value {
    let mut resources = vec![
        json!({"name": "would-be-written", "kind": "file", "path": "/etc/refused.conf",
               "content": "must not appear\n"}),
        extra,
    ];
    if !more.is_null() {
        resources.push(more);
    }
    json!({ "resources": resources })
}

/// test-xenstored with guestd on its guest socket (domain 5) and the dom0 socket for the host.
struct Xen {
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

const HOME: &str = "/local/domain/5";

impl Xen {
    fn start(guest: &Guest) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut xenstored = Command::new(bin::path("test-xenstored"))
            .arg("--dom0")
            .arg(dir.path().join("dom0.sock"))
            .arg("--guest")
            .arg(format!("5:{}", dir.path().join("guest5.sock").display()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn test-xenstored");
        let mut line = String::new();
        BufReader::new(xenstored.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let guestd = Command::new(bin::path("guestd"))
            .arg("--root")
            .arg(guest.root())
            .arg("--config")
            .arg(guest.dir.path().join("guestd.toml"))
            .arg("--xenstore")
            .arg(dir.path().join("guest5.sock"))
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("guestd.log")).unwrap())
            .spawn()
            .expect("spawn guestd");
        let xen = Self {
            dir,
            children: vec![guestd, xenstored],
        };
        xen.wait(|| {
            xen.xs("xenstore-read", &[&format!("{HOME}/data/host")])
                .status
                .success()
        });
        xen
    }

    fn xs(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .env("XENSTORED_PATH", self.dir.path().join("dom0.sock"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e} (install xenstore-utils)"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("guestd.log")).unwrap_or_default()
    }

    fn wait(&self, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out; guestd log:\n{}", self.log());
    }

    /// nova's way: write the request, poll for the reply (`-R`: the bytes as they are, no
    /// backslash escapes either way).
    fn nova_call(&self, id: &str, request: &str) -> Value {
        let write = self.xs(
            "xenstore-write",
            &["-R", &format!("{HOME}/data/host/{id}"), request],
        );
        assert!(write.status.success(), "{write:?}");
        let mut reply = String::new();
        self.wait(|| {
            let read = self.xs("xenstore-read", &["-R", &format!("{HOME}/data/guest/{id}")]);
            reply = String::from_utf8_lossy(&read.stdout).trim().to_string();
            read.status.success()
        });
        assert!(reply.len() <= 2048, "{} bytes", reply.len());
        serde_json::from_str(&reply).unwrap()
    }
}

impl Drop for Xen {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn the_same_document_through_xenstore() {
    let Some(base) = debian_root() else { return };
    let guest = Guest::new(&base);
    let xen = Xen::start(&guest);
    // nova-style: the document as the request's string value.
    let request = json!({"name": "configure", "value": document().to_string()}).to_string();
    assert!(request.len() < 4096, "{} bytes", request.len());
    let reply = xen.nova_call("cfg-1", &request);
    assert_eq!(reply["returncode"], "0", "{reply}\n{}", xen.log());
    let summary: Value = serde_json::from_str(reply["message"].as_str().unwrap()).unwrap();
    assert_eq!(summary["counts"]["changed"], 7, "{summary:#}");
    assert_eq!(
        std::fs::read_to_string(guest.path("srv/demo-site/setup.out")).unwrap(),
        "greeting=hello world\nport=8080\nresource=demo-setup\n"
    );
    let again = xen.nova_call("cfg-2", &request);
    let summary: Value = serde_json::from_str(again["message"].as_str().unwrap()).unwrap();
    assert_eq!(summary["counts"]["unchanged"], 7, "{summary:#}");
    // A document larger than one XenStore request: guestctl puts it on the guest in parts
    // with file_inject and has configure read them; the whole result comes back in pages.
    let mut big = document();
    let list = big["resources"].as_array_mut().unwrap();
    for i in 0..30 {
        list.push(json!({"name": format!("note-{i}"), "kind": "file",
                         "path": format!("/etc/guestd-demo/notes/{i}.txt"),
                         "content": format!("{}\n", "note ".repeat(20))}));
    }
    let file = xen.dir.path().join("big.json");
    std::fs::write(&file, big.to_string()).unwrap();
    let out = Command::new(bin::path("guestctl"))
        .env("XENSTORED_PATH", xen.dir.path().join("dom0.sock"))
        .args(["--connect", "xenstore:5", "--timeout", "600", "configure"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        xen.log()
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["resources"].as_array().unwrap().len(), 37);
    assert_eq!(result["counts"]["changed"], 30);
    assert_eq!(result["counts"]["unchanged"], 7);
    assert!(guest.path("etc/guestd-demo/notes/29.txt").is_file());
    let inbox = guest.path("var/lib/guestd/configure/inbox");
    assert_eq!(
        std::fs::read_dir(&inbox).map(|d| d.count()).unwrap_or(0),
        0,
        "the parts were removed"
    );
}

// ---- a tarball without extra dependencies: tar written here, compressed by gzip(1) ----

#[derive(Default)]
struct TarBuilder {
    out: Vec<u8>,
}

impl TarBuilder {
    fn header(&mut self, name: &str, kind: u8, size: usize, mode: u32, link: &str) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0width$o}\0", width = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.extend_from_slice(&h);
    }

    fn dir(&mut self, name: &str) {
        self.header(&format!("{name}/"), b'5', 0, 0o755, "");
    }

    fn file(&mut self, name: &str, contents: &[u8], mode: u32) {
        self.header(name, b'0', contents.len(), mode, "");
        self.out.extend_from_slice(contents);
        let pad = (512 - contents.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    fn link(&mut self, name: &str, target: &str) {
        self.header(name, b'2', 0, 0o777, target);
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdin.take().unwrap().write_all(tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}
