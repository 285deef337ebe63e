//! The transport conformance suite over serial framing: the guest end of a socket pair stands
//! in for the virtio port (non-blocking fd, private edge-triggered epoll, write drop).
#![cfg(target_os = "linux")]

use std::os::fd::OwnedFd;
use std::time::Duration;

use guestd_transport_conformance::{Conn, Connector, Kit, conformance_suite};
use guestd_transport_serial::{PortStream, SerialTransport};

fn serial_pair(kit: &mut Kit) -> Connector {
    kit.reconnects = false;
    let (guest, host) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let port = PortStream::from_file(OwnedFd::from(guest).into(), Duration::from_millis(500))
        .expect("port");
    let transport =
        SerialTransport::from_port(port, "socketpair".into(), &kit.retry(), kit.limits());
    kit.spawn(Box::new(transport));
    host.set_nonblocking(true).expect("nonblocking");
    let mut host = Some(tokio::net::UnixStream::from_std(host).expect("tokio stream"));
    Box::new(move || {
        let conn = host.take();
        Box::pin(async move {
            conn.map(|c| Box::new(c) as Conn)
                .ok_or_else(|| std::io::Error::other("a serial port has one host end"))
        })
    })
}

conformance_suite!(serial_pair);
