//! The OS-specific sources behind [`crate::facts::Platform`], one module per OS; everything
//! they feed is platform-neutral. Linux is tested here; FreeBSD is type-checked; Windows is
//! built, linted, and its sources are smoke-tested under Wine.

#[cfg(target_os = "freebsd")]
pub mod freebsd;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(windows)]
pub mod windows;

/// This OS's sources.
#[cfg(target_os = "linux")]
pub type System = linux::Linux;
#[cfg(target_os = "freebsd")]
pub type System = freebsd::FreeBsd;
#[cfg(windows)]
pub type System = windows::Windows;

/// Open this OS's sources (and read the current interfaces). Needs a tokio runtime.
#[cfg(any(target_os = "linux", target_os = "freebsd", windows))]
pub async fn system() -> std::io::Result<System> {
    System::new().await
}
