#![cfg(unix)]
//! `configure` through a real dispatcher on a sandbox root with the real Debian planners; the
//! guest's tools are recorded, not run (tests/tests/configure_debootstrap.rs runs them for real
//! in a Debian root).
#![allow(clippy::disallowed_methods)] // tests build their trees by path

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use guestd_core::configure::ResourceKind;
use guestd_core::wire::parse_request;
use guestd_core::{Channel, DispatcherBuilder, Env, Reply, Root};
use guestd_distro::{OsBackend, OsFamily};
use guestd_handlers::{ConfigureConfig, ConfigureHandler};
use serde_json::{Value, json};
use support::Recorder;

struct Guest {
    dir: tempfile::TempDir,
    env: Env,
    runner: Arc<Recorder>,
}

impl Guest {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::create_dir_all(p.join("etc/guestd/scripts")).unwrap();
        fs::write(
            p.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\napp:x:1001:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(p.join("etc/group"), "root:x:0:\napp:x:1001:\n").unwrap();
        fs::write(p.join("etc/os-release"), "ID=debian\n").unwrap();
        fs::write(p.join("etc/guestd/scripts/setup.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            p.join("etc/guestd/scripts/setup.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let root = Root::sandbox(p).unwrap();
        let runner = Arc::new(Recorder::new());
        let env = Env {
            root: root.clone(),
            runner: runner.clone(),
            backend: Arc::new(OsBackend::new(OsFamily::Debian)),
        };
        Self { dir, env, runner }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn call_on(&self, config: &ConfigureConfig, channel: Channel, value: &Value) -> Reply {
        self.call_in(self.env.clone(), config, channel, value)
    }

    /// [`Self::call_on`] with another environment (another runner) on this guest's root.
    fn call_in(
        &self,
        env: Env,
        config: &ConfigureConfig,
        channel: Channel,
        value: &Value,
    ) -> Reply {
        let dispatcher = Arc::new(
            DispatcherBuilder::new()
                .register(ConfigureHandler::new(config.clone()))
                .unwrap()
                .build(env),
        );
        let request = json!({"name": "configure", "value": value}).to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(dispatcher.dispatch(&Arc::new(channel), parse_request(request.as_bytes())))
    }

    fn call(&self, value: &Value) -> Reply {
        self.call_on(&config(), Channel::new("test"), value)
    }

    /// Every file under the root with its content and mode (to show nothing changed).
    fn tree(&self) -> Vec<(String, Vec<u8>, u32)> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>, u32)>) {
            let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                let md = fs::symlink_metadata(e.path()).unwrap();
                let rel = e.path().strip_prefix(base).unwrap().display().to_string();
                if md.is_dir() {
                    out.push((rel, Vec::new(), md.permissions().mode()));
                    walk(base, &e.path(), out);
                } else {
                    out.push((
                        rel,
                        fs::read(e.path()).unwrap_or_default(),
                        md.permissions().mode(),
                    ));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }
}

fn config() -> ConfigureConfig {
    ConfigureConfig {
        kinds: ResourceKind::ALL.into_iter().collect::<BTreeSet<_>>(),
        ..ConfigureConfig::default()
    }
}

fn summary(reply: &Reply) -> Value {
    serde_json::from_str(&reply.message)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.message))
}

fn statuses(v: &Value) -> Vec<(String, String)> {
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn disabled_by_default() {
    let g = Guest::new();
    let reply = g.call_on(
        &ConfigureConfig::default(),
        Channel::new("t"),
        &json!({"resources": [{"name": "f", "kind": "file", "path": "/x", "content": ""}]}),
    );
    assert_eq!(reply.returncode, "500");
    assert!(
        reply.message.contains("[configure] kinds is empty"),
        "{}",
        reply.message
    );
}

#[test]
fn refusals_change_nothing() {
    let g = Guest::new();
    let before = g.tree();
    let file = json!({"name": "conf", "kind": "file", "path": "/etc/app.conf", "content": "x"});
    let cases = [
        (
            json!({"resources": [file, {"name": "a", "kind": "group", "after": ["b"]},
                                 {"name": "b", "kind": "group", "after": ["a"]}]}),
            "cycle: a -> b -> a",
        ),
        (
            json!({"resources": [file, {"name": "x", "kind": "exec", "command": "id"}]}),
            "unknown kind 'exec'",
        ),
        (
            json!({"resources": [file, {"name": "s", "kind": "run", "script": "/bin/sh"}]}),
            "not a plain file name",
        ),
        (
            json!({"resources": [file, {"name": "s", "kind": "run", "script": "missing.sh"}]}),
            "no script 'missing.sh' in scripts_dir '/etc/guestd/scripts'",
        ),
        (
            json!({"resources": [file, {"name": "s", "kind": "run", "script": "setup.sh",
                                        "params": {"NAME": "two\nlines"}}]}),
            "parameter 'NAME' holds a control character",
        ),
        (
            json!({"resources": [file, {"name": "s", "kind": "file",
                                        "path": "/etc/guestd/scripts/new.sh", "content": "id"}]}),
            "may not write",
        ),
        (
            json!({"resources": [file, {"name": "s", "kind": "archive", "source": "/x.tgz",
                                        "destination": "/etc/guestd/scripts"}]}),
            "may not write",
        ),
    ];
    for (doc, want) in cases {
        let reply = g.call(&doc);
        assert_eq!(reply.returncode, "500", "{doc}");
        assert!(
            reply
                .message
                .starts_with("configure refused, nothing was changed: ")
                && reply.message.contains(want),
            "{doc}: {}",
            reply.message
        );
    }
    // scripts_dir writable by others.
    fs::set_permissions(
        g.path("etc/guestd/scripts"),
        fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let before_writable = g.tree();
    let reply =
        g.call(&json!({"resources": [file, {"name": "s", "kind": "run", "script": "setup.sh"}]}));
    assert!(
        reply
            .message
            .contains("'/etc/guestd/scripts' can be changed by an account other than root"),
        "{}",
        reply.message
    );
    assert_eq!(g.tree(), before_writable);
    fs::set_permissions(
        g.path("etc/guestd/scripts"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_eq!(g.tree(), before);
    assert!(g.runner.lines().is_empty(), "{:?}", g.runner.lines());
}

#[test]
fn apply_then_unchanged_then_dry_run() {
    let g = Guest::new();
    let doc = json!({"resources": [
        {"name": "dir", "kind": "directory", "path": "/srv/app", "mode": "0750", "group": "app"},
        {"name": "conf", "kind": "file", "path": "/srv/app/app.conf", "content": "port=80\n",
         "mode": "0640", "group": "app", "after": ["dir"]},
        {"name": "setup", "kind": "run", "script": "setup.sh", "params": {"PORT": 80},
         "after": ["conf"], "creates": "/srv/app/.done"},
    ]});
    let reply = g.call(&doc);
    assert_eq!(reply.returncode, "0", "{}", reply.message);
    let v = summary(&reply);
    assert_eq!(
        statuses(&v),
        pairs(&[
            ("dir", "changed"),
            ("conf", "changed"),
            ("setup", "changed")
        ])
    );
    assert_eq!(v["complete"], true);
    assert_eq!(fs::read(g.path("srv/app/app.conf")).unwrap(), b"port=80\n");
    let base = g.dir.path().canonicalize().unwrap().display().to_string();
    let ran = g.runner.ran.lock().unwrap().clone();
    assert_eq!(
        ran.iter().map(|c| c.command_line()).collect::<Vec<_>>(),
        [format!("chroot {base} /etc/guestd/scripts/setup.sh")]
    );
    let vars = ran[0].env.clone().unwrap();
    assert!(vars.contains(&("PORT".into(), "80".into())));
    assert!(vars.contains(&(
        "GUESTD_CONFIGURE_ID".into(),
        v["id"].as_str().unwrap().into()
    )));
    // The script "ran": it leaves its marker, and the same document changes nothing now.
    fs::write(g.path("srv/app/.done"), "").unwrap();
    let again = summary(&g.call(&doc));
    assert_eq!(
        statuses(&again),
        pairs(&[
            ("dir", "unchanged"),
            ("conf", "unchanged"),
            ("setup", "unchanged")
        ])
    );
    assert_eq!(g.runner.lines().len(), 1);
    // A dry run reports and changes nothing.
    let mut changed = doc.clone();
    changed["resources"][1]["content"] = json!("port=8080\n");
    changed["dry_run"] = json!(true);
    let before = g.tree();
    let dry = summary(&g.call(&changed));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        statuses(&dry),
        pairs(&[
            ("dir", "unchanged"),
            ("conf", "changed"),
            ("setup", "unchanged")
        ])
    );
    let tree = g.tree();
    // Only the kept result (under /var/lib/guestd/configure) is new.
    let new: Vec<_> = tree.iter().filter(|e| !before.contains(e)).collect();
    assert!(
        new.iter()
            .all(|(p, _, _)| p.starts_with("var/lib/guestd/configure")),
        "{new:?}"
    );
    assert_eq!(fs::read(g.path("srv/app/app.conf")).unwrap(), b"port=80\n");
}

#[test]
fn a_failure_skips_its_dependents_and_leaves_independent_ones() {
    let g = Guest::new();
    let doc = json!({"resources": [
        {"name": "bad", "kind": "file", "path": "/etc/bad.conf", "content": "x", "owner": "nobody-here"},
        {"name": "needs-bad", "kind": "file", "path": "/etc/dep.conf", "content": "x", "after": ["bad"]},
        {"name": "chain", "kind": "file", "path": "/etc/chain.conf", "content": "x", "after": ["needs-bad"]},
        {"name": "free", "kind": "file", "path": "/etc/free.conf", "content": "free"},
    ]});
    let reply = g.call(&doc);
    assert_eq!(reply.returncode, "500");
    let v = summary(&reply);
    assert_eq!(
        statuses(&v),
        pairs(&[
            ("bad", "failed"),
            ("needs-bad", "skipped"),
            ("chain", "skipped"),
            ("free", "changed")
        ])
    );
    assert_eq!(
        v["resources"][0]["reason"],
        "no user 'nobody-here' on this guest"
    );
    assert!(
        v["resources"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("'needs-bad', which it comes after, did not succeed")
    );
    assert_eq!(fs::read(g.path("etc/free.conf")).unwrap(), b"free");
    assert!(!g.path("etc/dep.conf").exists());
}

#[test]
fn atomic_puts_every_file_back() {
    let g = Guest::new();
    fs::write(g.path("etc/kept.conf"), "old").unwrap();
    let doc = json!({"atomic": true, "resources": [
        {"name": "one", "kind": "file", "path": "/etc/kept.conf", "content": "new"},
        {"name": "two", "kind": "directory", "path": "/opt/new/dir"},
        {"name": "three", "kind": "file", "path": "/opt/new/dir/f", "content": "f", "after": ["two"]},
        {"name": "bad", "kind": "file", "path": "/etc/bad", "content": "x", "owner": "nobody-here"},
        {"name": "later", "kind": "file", "path": "/etc/later", "content": "x"},
    ]});
    let v = summary(&g.call(&doc));
    assert_eq!(v["rolled_back"], true);
    assert_eq!(
        statuses(&v),
        pairs(&[
            ("one", "changed"),
            ("two", "changed"),
            ("three", "changed"),
            ("bad", "failed"),
            ("later", "skipped")
        ])
    );
    assert_eq!(fs::read(g.path("etc/kept.conf")).unwrap(), b"old");
    assert!(!g.path("opt/new/dir").exists());
    assert!(!g.path("etc/later").exists());
}

#[test]
fn xenstore_sized_replies_and_fetching_the_whole_result() {
    let g = Guest::new();
    let resources: Vec<Value> = (0..40)
        .map(|i| {
            json!({"name": format!("file-{i:02}"), "kind": "file",
                        "path": format!("/etc/many/f{i}"), "content": "x"})
        })
        .collect();
    let channel = || Channel::new("xenstore").with_reply_limit(2048);
    let reply = g.call_on(&config(), channel(), &json!({"resources": resources}));
    assert!(reply.encode().len() <= 2048, "{}", reply.encode().len());
    let v = summary(&reply);
    assert_eq!(reply.returncode, "0");
    assert_eq!(v["counts"]["changed"], 40);
    assert_eq!(v["complete"], false);
    let id = v["id"].as_str().unwrap().to_string();
    let stored = g.path(&format!("var/lib/guestd/configure/{id}.json"));
    assert_eq!(
        fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut names = Vec::new();
    let mut from = 0;
    loop {
        let page = g.call_on(&config(), channel(), &json!({"result": id, "from": from}));
        assert_eq!(page.returncode, "0", "{}", page.message);
        assert!(page.encode().len() <= 2048);
        let p = summary(&page);
        for r in p["resources"].as_array().unwrap() {
            names.push(r["name"].as_str().unwrap().to_string());
            assert_eq!(r["changes"][0], "create (1 bytes, mode 0644)");
        }
        match p["next"].as_u64() {
            Some(n) => from = n as usize,
            None => break,
        }
    }
    assert_eq!(names.len(), 40);
    let bad = g.call(&json!({"result": "../../etc/shadow"}));
    assert!(
        bad.message.contains("is not a configure result id"),
        "{}",
        bad.message
    );
}

#[test]
fn documents_in_parts_from_the_inbox() {
    let g = Guest::new();
    let doc = json!({"resources": [
        {"name": "conf", "kind": "file", "path": "/etc/from-inbox.conf", "content": "inbox"}
    ]})
    .to_string();
    let (a, b) = doc.split_at(doc.len() / 2);
    let inbox = g.path("var/lib/guestd/configure/inbox");
    fs::create_dir_all(&inbox).unwrap();
    fs::write(inbox.join("doc.1"), a).unwrap();
    fs::write(inbox.join("doc.2"), b).unwrap();
    let parts = json!([
        "/var/lib/guestd/configure/inbox/doc.1",
        "/var/lib/guestd/configure/inbox/doc.2"
    ]);
    let dry = summary(&g.call(&json!({"document_path": parts, "dry_run": true})));
    assert_eq!(statuses(&dry), pairs(&[("conf", "changed")]));
    assert!(!inbox.join("doc.1").exists(), "parts are removed once read");
    assert!(!g.path("etc/from-inbox.conf").exists());
    // A document in a place a user can change is refused.
    fs::create_dir_all(g.path("tmp")).unwrap();
    fs::set_permissions(g.path("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(g.path("tmp/doc.json"), &doc).unwrap();
    let reply = g.call(&json!({"document_path": "/tmp/doc.json"}));
    assert!(
        reply
            .message
            .contains("not in a place only root can change ('/tmp')"),
        "{}",
        reply.message
    );
    assert!(!g.path("etc/from-inbox.conf").exists());
}

#[test]
fn an_archive_writes_only_under_its_destination_even_through_an_existing_link() {
    let g = Guest::new();
    let src = g.path("var/lib/site");
    fs::create_dir_all(&src).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(
        src.join("ok.tar.gz"),
        guestd_update::archive::build(&[("index.html", 0o4755, b"hi")]),
    )
    .unwrap();
    fs::write(
        src.join("out.tar.gz"),
        guestd_update::archive::build(&[("etc-link/passwd", 0o644, b"owned")]),
    )
    .unwrap();
    let doc = |source: &str| {
        json!({"resources": [{"name": "site", "kind": "archive", "source": source,
                              "destination": "/srv/site"}]})
    };
    let v = summary(&g.call(&doc("/var/lib/site/ok.tar.gz")));
    assert_eq!(statuses(&v), pairs(&[("site", "changed")]));
    let md = fs::metadata(g.path("srv/site/index.html")).unwrap();
    assert_eq!(
        md.permissions().mode() & 0o7777,
        0o755,
        "set-id bits are dropped"
    );
    assert_eq!(
        statuses(&summary(&g.call(&doc("/var/lib/site/ok.tar.gz")))),
        pairs(&[("site", "unchanged")])
    );
    // A link root left in the destination does not carry the archive's writes out of it.
    std::os::unix::fs::symlink("/etc", g.path("srv/site/etc-link")).unwrap();
    let passwd = fs::read(g.path("etc/passwd")).unwrap();
    let reply = g.call(&doc("/var/lib/site/out.tar.gz"));
    let v = summary(&reply);
    assert_eq!(statuses(&v), pairs(&[("site", "failed")]));
    assert!(
        v["resources"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("is not allowed by this guest's configuration"),
        "{v}"
    );
    assert_eq!(fs::read(g.path("etc/passwd")).unwrap(), passwd);
    assert!(!g.path("etc/passwd.guestd-tmp").exists());
    // A tarball a user could have swapped is not read.
    fs::create_dir_all(g.path("tmp")).unwrap();
    fs::set_permissions(g.path("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(src.join("ok.tar.gz"), g.path("tmp/ok.tar.gz")).unwrap();
    let v = summary(&g.call(&doc("/tmp/ok.tar.gz")));
    assert!(
        v["resources"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not in a place only root can change"),
        "{v}"
    );
}

/// Under `--root` the daemon's runner is the effect sandbox: account tools acting on the tree
/// (`useradd -R`) run, a `run` script (it could act on the machine) only when
/// `[sandbox] allow_effects` lists `script`; otherwise it is reported skipped, not changed.
#[test]
fn under_the_root_sandbox_a_script_runs_only_when_its_effect_is_allowed() {
    use guestd_core::{Effect, SandboxRunner};
    let g = Guest::new();
    let doc = json!({"resources": [
        {"name": "user", "kind": "user", "user": "svc", "uid": 2001},
        {"name": "setup", "kind": "run", "script": "setup.sh", "params": {"PORT": 80}},
        {"name": "after-setup", "kind": "file", "path": "/etc/after.conf", "content": "x\n",
         "after": ["setup"]},
    ]});
    let call = |allowed: &[Effect]| {
        let env = Env {
            runner: Arc::new(SandboxRunner::new(
                g.runner.clone(),
                allowed.iter().copied().collect(),
            )),
            ..g.env.clone()
        };
        g.call_in(env, &config(), Channel::new("test"), &doc)
    };
    // A dry run says which effect decides.
    let mut dry = doc.clone();
    dry["dry_run"] = json!(true);
    let env = Env {
        runner: Arc::new(SandboxRunner::new(g.runner.clone(), Default::default())),
        ..g.env.clone()
    };
    let v = summary(&g.call_in(env, &config(), Channel::new("test"), &dry));
    assert_eq!(v["resources"][1]["status"], "changed", "{v:#}");
    assert_eq!(
        v["resources"][1]["notes"][0],
        "under --root, 'chroot' runs only if [sandbox] allow_effects lists 'script'"
    );
    assert!(g.runner.lines().is_empty());

    let reply = call(&[]);
    assert_eq!(reply.returncode, "500", "{}", reply.message);
    let v = summary(&reply);
    assert_eq!(
        statuses(&v),
        pairs(&[
            ("user", "changed"),
            ("setup", "skipped"),
            ("after-setup", "skipped")
        ])
    );
    let reason = v["resources"][1]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("script 'setup.sh' not run (the --root sandbox")
            && reason.ends_with("allow_effects): chroot (script)"),
        "{reason}"
    );
    assert!(v["resources"][1].get("output").is_none(), "{v:#}");
    let ran = g.runner.lines();
    assert!(ran.iter().any(|l| l.starts_with("useradd -R ")), "{ran:?}");
    assert!(!ran.iter().any(|l| l.contains("setup.sh")), "{ran:?}");
    assert!(!g.path("etc/after.conf").exists());

    let reply = call(&[Effect::Script]);
    assert_eq!(reply.returncode, "0", "{}", reply.message);
    assert_eq!(
        statuses(&summary(&reply)),
        pairs(&[
            ("user", "changed"),
            ("setup", "changed"),
            ("after-setup", "changed")
        ])
    );
    assert!(g.runner.lines().iter().any(|l| l.contains("setup.sh")));
}
