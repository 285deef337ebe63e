//! placeholder
mod accept;
pub mod tcp;
#[cfg(target_os = "linux")]
pub mod vsock;
