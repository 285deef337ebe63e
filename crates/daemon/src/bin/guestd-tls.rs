//! `guestd-tls`: guestd with mutual TLS for `tcp:` listeners (rustls). `guestd` continues as
//! this binary when its configuration has such a listener; started directly it is guestd.

fn main() -> std::process::ExitCode {
    guestd_daemon::main(Some(&guestd_transport_tls::RustlsServer))
}
