//! `guest-ssh-get-authorized-keys`, `guest-ssh-add-authorized-keys`,
//! `guest-ssh-remove-authorized-keys`: the user's `~/.ssh/authorized_keys`, written atomically
//! with mode 0600 and the user as owner (`~/.ssh` 0700). A symlinked `~/.ssh` or key file is
//! refused, so a user cannot point the root-run agent at another file; `Root` reads the key
//! file only if it is a regular file of that user with one link (a FIFO, a device or a hard
//! link to another file is refused), and creates `~/.ssh` by handle.

use guestd_core::{HandlerError, WriteOptions};
use serde::Deserialize;
use serde_json::json;

use super::{QgaCommand, User, args, lookup_user};
use guestd_core::Context;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    username: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeArgs {
    username: String,
    keys: Vec<String>,
    #[serde(default)]
    reset: Option<bool>,
}

pub const GET: QgaCommand = QgaCommand {
    name: "guest-ssh-get-authorized-keys",
    blocking: true,
    query: true,
    run: |ctx, value| {
        let a: GetArgs = args(value)?;
        let user = lookup_user(&ctx.env.root, &a.username)?;
        let path = key_file(&user);
        let text = ctx.env.root.read_to_string(&path)?;
        let keys: Vec<&str> = current_keys(&text);
        Ok(json!({ "keys": keys }))
    },
};

pub const ADD: QgaCommand = QgaCommand {
    name: "guest-ssh-add-authorized-keys",
    blocking: true,
    query: false,
    run: |ctx, value| {
        let a: ChangeArgs = args(value)?;
        check_keys(&a.keys)?;
        change(ctx, &a.username, |lines| {
            if a.reset == Some(true) {
                lines.clear();
            }
            for key in &a.keys {
                if !lines.iter().any(|l| l == key) {
                    lines.push(key.clone());
                }
            }
        })
    },
};

pub const REMOVE: QgaCommand = QgaCommand {
    name: "guest-ssh-remove-authorized-keys",
    blocking: true,
    query: false,
    run: |ctx, value| {
        let a: ChangeArgs = args(value)?;
        if a.reset.is_some() {
            return Err(HandlerError::BadRequest(
                "Parameter 'reset' is unexpected".into(),
            ));
        }
        check_keys(&a.keys)?;
        change(ctx, &a.username, |lines| {
            lines.retain(|l| !a.keys.contains(l))
        })
    },
};

fn key_file(user: &User) -> String {
    format!("{}/.ssh/authorized_keys", user.home.trim_end_matches('/'))
}

/// The key lines (comments and blank lines left out).
fn current_keys(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// One key per entry: `type base64 [comment]`, on one line.
fn check_keys(keys: &[String]) -> Result<(), HandlerError> {
    for key in keys {
        let mut parts = key.split_whitespace();
        let ok = !key.contains(['\n', '\r', '\0'])
            && parts.next().is_some_and(|t| !t.starts_with('#'))
            && parts.next().is_some();
        if !ok {
            return Err(HandlerError::BadRequest(format!(
                "invalid OpenSSH public key: '{}'",
                key.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// Read the file (missing: empty), let `edit` change its lines (comments kept), write it back.
fn change(
    ctx: &Context<'_>,
    username: &str,
    edit: impl FnOnce(&mut Vec<String>),
) -> Result<serde_json::Value, HandlerError> {
    let root = &ctx.env.root;
    let user = lookup_user(root, username)?;
    let dir = format!("{}/.ssh", user.home.trim_end_matches('/'));
    let path = key_file(&user);
    if root.is_symlink(&dir) || root.is_symlink(&path) {
        return Err(HandlerError::failed(format!(
            "{dir} or its authorized_keys is a symbolic link; refusing to write through it"
        )));
    }
    let text = match root.read_optional(&path)? {
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|_| HandlerError::failed(format!("{path} is not UTF-8")))?,
        None => String::new(),
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    edit(&mut lines);
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    // Created (when missing) and handed to the user through its own handle; a link swapped in
    // is refused here and by the write below, which never follows one in a user's directory.
    root.create_dir_owned(&dir, 0o700, user.uid, user.gid)?;
    root.write_atomic(
        &path,
        out.as_bytes(),
        WriteOptions::mode(0o600).owner(user.uid, user.gid).exact(),
    )?;
    Ok(json!({}))
}
