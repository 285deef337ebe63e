//! The guestd daemon as a library: the configuration model and parser (the fuzz targets parse
//! configuration exactly as the daemon does), the command line (man pages and completions are
//! generated from it by `guestd-docs` at packaging time) and the daemon itself ([`main`]),
//! which the thin binaries `guestd`, `guestd-tls` and `guestd.exe` call.

pub mod cli;
mod commands;
pub mod config;
mod daemon;
mod listen;
mod notify;
#[cfg(windows)]
mod service;
mod trim;

pub use daemon::main;
