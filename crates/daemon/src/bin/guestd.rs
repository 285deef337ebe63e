//! `guestd`, the in-guest agent daemon (the daemon itself is the library's `daemon` module).
//!
//! On Linux and FreeBSD this binary links no TLS: a `tcp:` listener with mutual TLS makes it
//! continue as `guestd-tls` (installed beside it), so that the resident daemon of every guest
//! without a TCP channel carries no TLS code. `guestd.exe` serves TLS itself.

fn main() -> std::process::ExitCode {
    #[cfg(windows)]
    let tls: Option<&'static dyn guestd_transport_socket::tcp::TlsServer> =
        Some(&guestd_transport_tls::RustlsServer);
    #[cfg(not(windows))]
    let tls = None;
    guestd_daemon::main(tls)
}
