//! `guest-file-open`, `-close`, `-read`, `-write`, `-seek`, `-flush`, as qemu-ga answers
//! them, under the path prefixes `[qga] file_allow` names (off by default: see
//! `disabled_by_config`).
//!
//! Files are opened through `Root::open_file`: reached by directory handle, links followed
//! only in directories no unprivileged user controls, only regular files (a FIFO or device is
//! refused without blocking), and `file_allow` judged on the path as reached, before anything
//! is created or truncated. Handles are integers, as qemu-ga's, never reused while guestd runs
//! (the first one depends on the start time, so a handle from before a restart is unlikely to
//! name a new file); at most `file_max_handles` are open at once. A read returns at most
//! `file_read_max` bytes (`count` defaults to 4096 and above qemu-ga's 48 MiB is refused).
//! Handles are shared by every qga channel, as qemu-ga's single channel has them.

// Files open only where `Root::open_file` exists (Unix); elsewhere guest-file-open refuses and
// the table's bookkeeping is unused.
#![cfg_attr(not(unix), allow(dead_code))]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use guestd_core::{Context, DispatchError, DispatcherBuilder, HandlerError};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;
use zeroize::Zeroizing;

use super::{FILE_READ_COUNT_MAX, QgaConfig, StatefulCommand, args, decode_base64, os_reason};

pub const OPEN: &str = "guest-file-open";
pub const CLOSE: &str = "guest-file-close";
pub const READ: &str = "guest-file-read";
pub const WRITE: &str = "guest-file-write";
pub const SEEK: &str = "guest-file-seek";
pub const FLUSH: &str = "guest-file-flush";
pub const COMMANDS: [&str; 6] = [OPEN, CLOSE, READ, WRITE, SEEK, FLUSH];

/// qemu-ga's `QGA_READ_COUNT_DEFAULT`.
const READ_COUNT_DEFAULT: i64 = 4096;

/// Whether `entry` can be a `file_allow` prefix (for the configuration check).
pub(super) fn check_prefix(entry: &str) -> Result<(), &'static str> {
    let path = Path::new(entry);
    if !path.is_absolute() {
        return Err("is not an absolute path");
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("contains '..'");
    }
    Ok(())
}

/// Register the six commands with one shared handle table.
pub(super) fn register(
    builder: DispatcherBuilder,
    config: &QgaConfig,
) -> Result<DispatcherBuilder, DispatchError> {
    let files = Arc::new(Files::new(config));
    // Reading and seeking write nothing and run while this agent holds the filesystems frozen;
    // opening (it may create or truncate), writing, flushing and closing (the last close of a
    // written file may allocate its blocks) could block until the thaw and are refused then.
    let commands: [(&'static str, bool, Run); 6] = [
        (OPEN, false, |f, ctx, v| f.open(ctx, v)),
        (CLOSE, false, |f, _, v| f.close(v)),
        (READ, true, |f, _, v| f.read(v)),
        (WRITE, false, |f, _, v| f.write(v)),
        (SEEK, true, |f, _, v| f.seek(v)),
        (FLUSH, false, |f, _, v| f.flush(v)),
    ];
    let mut builder = builder;
    for (name, while_frozen, run) in commands {
        builder = builder.register(StatefulCommand {
            name,
            state: Arc::clone(&files),
            while_frozen,
            query: false,
            run,
        })?;
    }
    Ok(builder)
}

type Run = fn(&Files, &Context<'_>, &Value) -> Result<Value, HandlerError>;

/// The open files, shared by the six commands.
#[derive(Debug)]
pub(crate) struct Files {
    /// Absolute prefixes (whole components).
    allow: Vec<PathBuf>,
    max_handles: usize,
    read_max: usize,
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    next: i64,
    open: BTreeMap<i64, Arc<Mutex<OpenFile>>>,
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    /// As reached, for logs.
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenArgs {
    path: String,
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandleArgs {
    handle: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    handle: i64,
    count: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    handle: i64,
    #[serde(rename = "buf-b64")]
    buf_b64: String,
    count: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeekArgs {
    handle: i64,
    offset: i64,
    /// `GuestFileWhence`: an integer (0, 1, 2) or `"set"`, `"cur"`, `"end"`.
    whence: Value,
}

impl Files {
    pub(crate) fn new(config: &QgaConfig) -> Self {
        // The first handle: qemu-ga's 1000, offset by the start time, so that a host still
        // holding a handle from before a restart does not reach a file opened since.
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            allow: config.file_allow.iter().map(PathBuf::from).collect(),
            max_handles: config.file_max_handles.max(1),
            read_max: config.file_read_max.clamp(1, FILE_READ_COUNT_MAX),
            table: Mutex::new(Table {
                next: 1000 + (since_epoch % 1_000_000) as i64 * 1000,
                open: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn permits(&self, reached: &Path) -> bool {
        self.allow.iter().any(|prefix| reached.starts_with(prefix))
    }

    /// The open file behind `handle`, or qemu-ga's error.
    fn get(&self, handle: i64) -> Result<Arc<Mutex<OpenFile>>, HandlerError> {
        self.lock().open.get(&handle).cloned().ok_or_else(|| {
            HandlerError::BadRequest(format!("handle '{handle}' has not been found"))
        })
    }

    #[cfg(not(unix))]
    fn open(&self, _ctx: &Context<'_>, value: &Value) -> Result<Value, HandlerError> {
        let _: OpenArgs = args(value)?;
        Err(super::platform::not_on_this_os(OPEN))
    }

    #[cfg(unix)]
    fn open(&self, ctx: &Context<'_>, value: &Value) -> Result<Value, HandlerError> {
        let a: OpenArgs = args(value)?;
        let mode_text = a.mode.as_deref().unwrap_or("r");
        let mode = guestd_core::root::OpenMode::from_fopen(mode_text).ok_or_else(|| {
            HandlerError::BadRequest(format!("invalid file open mode '{mode_text}'"))
        })?;
        if self.lock().open.len() >= self.max_handles {
            return Err(HandlerError::failed(format!(
                "{OPEN}: {} files are open already; that is the limit ([qga] file_max_handles): \
                 close one first",
                self.max_handles
            )));
        }
        let opened = ctx
            .env
            .root
            .open_file(&a.path, mode, |reached| self.permits(reached))
            .map_err(|e| open_failed(&a.path, mode_text, e))?;
        let mut table = self.lock();
        // Checked again: another channel may have opened one in between.
        if table.open.len() >= self.max_handles {
            return Err(HandlerError::failed(format!(
                "{OPEN}: {} files are open already; that is the limit ([qga] file_max_handles): \
                 close one first",
                self.max_handles
            )));
        }
        let handle = table.next;
        table.next += 1;
        info!(handle, path = %opened.path.display(), mode = mode_text,
            created = opened.created, "guest-file-open");
        table.open.insert(
            handle,
            Arc::new(Mutex::new(OpenFile {
                file: opened.file,
                path: opened.path,
            })),
        );
        Ok(json!(handle))
    }

    fn close(&self, value: &Value) -> Result<Value, HandlerError> {
        let a: HandleArgs = args(value)?;
        let removed = self.lock().open.remove(&a.handle);
        let Some(file) = removed else {
            return Err(HandlerError::BadRequest(format!(
                "handle '{}' has not been found",
                a.handle
            )));
        };
        let path = lock(&file).path.clone();
        info!(handle = a.handle, path = %path.display(), "guest-file-close");
        Ok(json!({}))
    }

    fn read(&self, value: &Value) -> Result<Value, HandlerError> {
        let a: ReadArgs = args(value)?;
        let file = self.get(a.handle)?;
        let count = a.count.unwrap_or(READ_COUNT_DEFAULT);
        if count < 0 || count as u64 > FILE_READ_COUNT_MAX as u64 {
            return Err(HandlerError::BadRequest(format!(
                "value '{count}' is invalid for argument count"
            )));
        }
        let want = (count as usize).min(self.read_max);
        let mut buf = Zeroizing::new(vec![0u8; want]);
        let mut got = 0;
        let mut eof = false;
        let mut f = lock(&file);
        // Like fread: until `want` bytes or the end.
        while got < want {
            match f.file.read(&mut buf[got..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(HandlerError::failed(format!(
                        "failed to read file: {}",
                        os_reason(&e)
                    )));
                }
            }
        }
        drop(f);
        let encoded = Zeroizing::new(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            &buf[..got],
        ));
        Ok(json!({ "count": got, "buf-b64": encoded.as_str(), "eof": eof }))
    }

    fn write(&self, value: &Value) -> Result<Value, HandlerError> {
        let a: WriteArgs = args(value)?;
        let file = self.get(a.handle)?;
        let buf = decode_base64(&a.buf_b64)?;
        let count = match a.count {
            None => buf.len(),
            Some(n) if n >= 0 && n as u64 <= buf.len() as u64 => n as usize,
            Some(n) => {
                return Err(HandlerError::BadRequest(format!(
                    "value '{n}' is invalid for argument count"
                )));
            }
        };
        lock(&file).file.write_all(&buf[..count]).map_err(|e| {
            HandlerError::failed(format!("failed to write to file: {}", os_reason(&e)))
        })?;
        Ok(json!({ "count": count, "eof": false }))
    }

    fn seek(&self, value: &Value) -> Result<Value, HandlerError> {
        let a: SeekArgs = args(value)?;
        let file = self.get(a.handle)?;
        let invalid = || HandlerError::failed("failed to seek file: Invalid argument");
        let to = match whence(&a.whence)? {
            0 => SeekFrom::Start(u64::try_from(a.offset).map_err(|_| invalid())?),
            1 => SeekFrom::Current(a.offset),
            _ => SeekFrom::End(a.offset),
        };
        let position = lock(&file)
            .file
            .seek(to)
            .map_err(|e| HandlerError::failed(format!("failed to seek file: {}", os_reason(&e))))?;
        Ok(json!({ "position": position, "eof": false }))
    }

    fn flush(&self, value: &Value) -> Result<Value, HandlerError> {
        let a: HandleArgs = args(value)?;
        let file = self.get(a.handle)?;
        // Nothing is buffered in guestd: the kernel's buffers go to the disk.
        lock(&file).file.sync_data().map_err(|e| {
            HandlerError::failed(format!("failed to flush file: {}", os_reason(&e)))
        })?;
        Ok(json!({}))
    }
}

fn lock(file: &Mutex<OpenFile>) -> std::sync::MutexGuard<'_, OpenFile> {
    file.lock().unwrap_or_else(|e| e.into_inner())
}

/// `GuestFileWhence` as qemu-ga reads it: 0 (set), 1 (cur), 2 (end), or their names.
fn whence(value: &Value) -> Result<u8, HandlerError> {
    match value {
        Value::String(name) => match name.as_str() {
            "set" => Ok(0),
            "cur" => Ok(1),
            "end" => Ok(2),
            other => Err(HandlerError::BadRequest(format!(
                "Parameter 'whence' does not accept value '{other}'"
            ))),
        },
        Value::Number(n) => match n.as_i64() {
            Some(code @ 0..=2) => Ok(code as u8),
            Some(code) => Err(HandlerError::BadRequest(format!(
                "invalid whence code {code}"
            ))),
            None => Err(HandlerError::BadRequest(
                "Invalid parameter type for 'whence', expected: integer".into(),
            )),
        },
        _ => Err(HandlerError::BadRequest(
            "Invalid parameter type for 'whence', expected: GuestFileWhence".into(),
        )),
    }
}

/// qemu-ga's words for a failed open (`failed to open file '…' (mode: '…'): reason`), with
/// guestd's own reasons (outside `file_allow`, a link in a user's directory, not a regular
/// file) said plainly.
fn open_failed(path: &str, mode: &str, e: guestd_core::RootError) -> HandlerError {
    use guestd_core::RootError;
    let reason = match &e {
        RootError::NotAllowed { reached, .. } => {
            let via = if reached != path {
                format!(" (reached as '{reached}')")
            } else {
                String::new()
            };
            tracing::warn!(path, reached = %reached, "guest-file-open refused: outside [qga] file_allow");
            return HandlerError::failed(format!(
                "{OPEN}: '{path}'{via} is not under a path this guest allows ([qga] file_allow)"
            ));
        }
        RootError::Io { source, .. } => os_reason(source),
        other => other.to_string(),
    };
    HandlerError::failed(format!(
        "failed to open file '{path}' (mode: '{mode}'): {reason}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)] // guest-file-open is refused elsewhere; prefixes are Unix paths
    fn prefixes_are_whole_components() {
        let files = Files::new(&QgaConfig {
            file_allow: vec!["/var/lib/vmtest/".into(), "/srv/a".into()],
            ..QgaConfig::default()
        });
        assert!(files.permits(Path::new("/var/lib/vmtest/f")));
        assert!(files.permits(Path::new("/srv/a/b/c")));
        assert!(!files.permits(Path::new("/srv/ab")));
        assert!(!files.permits(Path::new("/var/lib/vmtest2/f")));
        assert!(!files.permits(Path::new("/etc/shadow")));
        assert!(check_prefix("relative").is_err());
        assert!(check_prefix("/a/../b").is_err());
        assert!(check_prefix("/").is_ok());
    }

    #[test]
    fn whence_takes_codes_and_names() {
        assert_eq!(whence(&json!("end")).unwrap(), 2);
        assert_eq!(whence(&json!(1)).unwrap(), 1);
        assert_eq!(
            whence(&json!(7)).unwrap_err().to_string(),
            "invalid whence code 7"
        );
        assert_eq!(
            whence(&json!("bogus")).unwrap_err().to_string(),
            "Parameter 'whence' does not accept value 'bogus'"
        );
        assert!(whence(&json!(1.5)).is_err());
        assert!(whence(&json!([])).is_err());
    }
}
