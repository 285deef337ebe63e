//! What a command answers where this OS (or this guest) cannot do it, worded as qemu-ga words it.

use guestd_core::HandlerError;
use guestd_core::wire::code;

/// qemu-ga's `QERR_UNSUPPORTED` text (a `GenericError`): the command exists but this guest
/// lacks what it needs (no hwclock, no RTC, …).
pub(crate) const UNSUPPORTED: &str = "this feature or command is not currently supported";

/// `GenericError` with [`UNSUPPORTED`] and the reason.
pub(crate) fn unsupported(why: &str) -> HandlerError {
    HandlerError::failed(format!("{UNSUPPORTED}: {why}"))
}

/// A command guestd has no implementation of on this OS. qemu-ga blocks such commands at
/// start-up, so a call gets `CommandNotFound` ("has been disabled"); the log names the OS.
pub(crate) fn not_on_this_os(name: &str) -> HandlerError {
    HandlerError::Reply {
        returncode: code::FORBIDDEN.into(),
        message: format!(
            "{name} is not available on {} ({UNSUPPORTED})",
            std::env::consts::OS
        ),
    }
}

/// `Err(not_on_this_os(name))` unless this is Linux (for commands built on /proc and /sys).
pub(crate) fn linux_only(name: &str) -> Result<(), HandlerError> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err(not_on_this_os(name))
    }
}
