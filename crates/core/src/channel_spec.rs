//! One grammar for naming a channel, `[qga+]KIND[:ADDRESS]`, parsed and displayed only here:
//! `guestd --listen`, the configuration's `transports.listen` and `guestctl --connect` all use
//! [`ChannelSpec`].
//!
//! | form | guestd (`--listen`) | guestctl (`--connect`) |
//! | --- | --- | --- |
//! | `unix:PATH` | serve a unix socket | connect to it |
//! | `serial:` | the configured virtio-serial port | — |
//! | `serial:NAME` / `serial:PATH` | the guest's port by name or device | the host end (QEMU's chardev socket) |
//! | `tcp:HOST:PORT` | listen (mutual TLS) | connect |
//! | `vsock:PORT` | listen on every local CID | — |
//! | `vsock:CID:PORT` | — | connect to guest CID |
//! | `pipe:NAME` / `pipe:\\.\pipe\NAME` | serve a Windows named pipe | connect to it (on the guest) |
//! | `xenstore` / `xenstore:PATH` | serve XenStore (detected device, or this one) | — |
//! | `xenstore:DOMID` | — | the guest's XenStore area, from dom0 |
//! | `qga+KIND:...` | the same channel speaking the qemu-guest-agent dialect | — |
//!
//! Adding a transport: a [`ChannelKind`] variant, its arm in `ChannelKind::parse` and in
//! `Display`, and the side rule in [`ChannelSpec::unsupported_by`] when one side lacks it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::dispatch::Dialect;

/// The local Windows pipe namespace.
pub const PIPE_PREFIX: &str = r"\\.\pipe\";

/// The prefix that selects the qemu-guest-agent dialect.
const QGA_PREFIX: &str = "qga+";

/// A channel: which protocol, over what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    pub dialect: Dialect,
    pub kind: ChannelKind,
}

/// What carries a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// `unix:PATH`
    Unix(PathBuf),
    /// `serial:` (empty: the configured port), `serial:NAME` or `serial:PATH`.
    Serial(String),
    /// `tcp:HOST:PORT` (`HOST` may be a bracketed IPv6 address).
    Tcp(String),
    /// `vsock:PORT` (guestd) or `vsock:CID:PORT` (guestctl).
    Vsock { cid: Option<u32>, port: u32 },
    /// `pipe:NAME` or `pipe:\\.\pipe\NAME`; holds the full `\\.\pipe\NAME`.
    Pipe(String),
    /// `xenstore`, `xenstore:PATH` (guestd) or `xenstore:DOMID` (guestctl).
    Xenstore(XenstoreTarget),
}

/// What `xenstore[:...]` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XenstoreTarget {
    /// `xenstore`: the detected xenbus device (Windows: the xeniface device).
    Detect,
    /// `xenstore:PATH`: a xenbus device or a xenstored socket (Windows: a xeniface path).
    Path(PathBuf),
    /// `xenstore:DOMID`: a guest's area, seen from dom0.
    Domain(u32),
}

/// Which program reads the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// guestd: `--listen`, `transports.listen`.
    Listen,
    /// guestctl: `--connect`.
    Connect,
}

impl ChannelSpec {
    /// A native channel of `kind`.
    pub fn native(kind: ChannelKind) -> Self {
        Self {
            dialect: Dialect::Native,
            kind,
        }
    }

    /// A spec guestd can serve (`--listen`, `transports.listen`).
    pub fn listen(spec: &str) -> Result<Self, String> {
        Self::for_side(spec, Side::Listen)
    }

    /// A spec guestctl can connect to (`--connect`).
    pub fn connect(spec: &str) -> Result<Self, String> {
        Self::for_side(spec, Side::Connect)
    }

    fn for_side(spec: &str, side: Side) -> Result<Self, String> {
        let parsed: Self = spec.parse()?;
        match parsed.unsupported_by(side) {
            Some(why) => Err(format!("'{spec}': {why}")),
            None => Ok(parsed),
        }
    }

    /// Why `side` cannot use this spec (`None`: it can).
    pub fn unsupported_by(&self, side: Side) -> Option<&'static str> {
        use ChannelKind::{Serial, Vsock, Xenstore};
        match side {
            Side::Connect if self.dialect == Dialect::Qga => Some(
                "guestctl speaks guestd's native protocol; qga+ channels are for qemu-ga \
                 clients (virsh qemu-agent-command, qemu.qmp)",
            ),
            Side::Connect => match &self.kind {
                Serial(target) if target.is_empty() => {
                    Some("guestctl needs the path of the port's host end (serial:PATH)")
                }
                Vsock { cid: None, .. } => {
                    Some("guestctl needs the guest's CID: vsock:CID:PORT (vsock:3:5000)")
                }
                Xenstore(XenstoreTarget::Detect | XenstoreTarget::Path(_)) => Some(
                    "guestctl reaches XenStore from dom0 by domain id: xenstore:DOMID (xenstore:5)",
                ),
                _ => None,
            },
            Side::Listen => match &self.kind {
                Vsock { cid: Some(_), .. } => {
                    Some("guestd listens on every local CID: vsock:PORT (vsock:5000)")
                }
                Xenstore(XenstoreTarget::Domain(_)) => Some(
                    "xenstore:DOMID names a guest from dom0 (guestctl); guestd serves xenstore \
                     or xenstore:PATH",
                ),
                Xenstore(_) if self.dialect == Dialect::Qga => {
                    Some("XenStore carries the native protocol only")
                }
                _ => None,
            },
        }
    }
}

impl FromStr for ChannelSpec {
    type Err = String;

    /// The whole grammar, either side's forms (see [`ChannelSpec::listen`] and
    /// [`ChannelSpec::connect`] for one side's).
    fn from_str(spec: &str) -> Result<Self, String> {
        let (dialect, rest) = match spec.strip_prefix(QGA_PREFIX) {
            Some(rest) => (Dialect::Qga, rest),
            None => (Dialect::Native, spec),
        };
        let (kind, address) = rest.split_once(':').unwrap_or((rest, ""));
        let kind = ChannelKind::parse(kind, address, rest.contains(':'))
            .map_err(|why| format!("'{spec}': {why}"))?;
        Ok(Self { dialect, kind })
    }
}

impl fmt::Display for ChannelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dialect == Dialect::Qga {
            f.write_str(QGA_PREFIX)?;
        }
        write!(f, "{}", self.kind)
    }
}

impl ChannelKind {
    /// `KIND` and the `ADDRESS` after its colon (`has_colon`: whether there was one).
    fn parse(kind: &str, address: &str, has_colon: bool) -> Result<Self, String> {
        match kind {
            "unix" if !address.is_empty() => Ok(Self::Unix(PathBuf::from(address))),
            "unix" => Err("unix needs a path (unix:/run/guestd/guestd.sock)".into()),
            "serial" if has_colon => Ok(Self::Serial(address.to_owned())),
            "serial" => Err("serial needs a colon: serial:, serial:NAME or serial:PATH".into()),
            "tcp" => parse_tcp(address).map(|()| Self::Tcp(address.to_owned())),
            "vsock" => parse_vsock(address),
            "pipe" => pipe_path(address).map(Self::Pipe),
            "xenstore" if !has_colon => Ok(Self::Xenstore(XenstoreTarget::Detect)),
            "xenstore" if address.is_empty() => {
                Err("xenstore needs a path or a domain id after the colon".into())
            }
            "xenstore" => Ok(Self::Xenstore(match address.parse::<u32>() {
                Ok(domid) => XenstoreTarget::Domain(domid),
                Err(_) => XenstoreTarget::Path(PathBuf::from(address)),
            })),
            _ => Err(format!(
                "unknown transport '{kind}' (expected unix:PATH, serial:[NAME|PATH], \
                 tcp:HOST:PORT, vsock:[CID:]PORT, pipe:NAME, xenstore[:PATH|:DOMID], each \
                 optionally prefixed with qga+)"
            )),
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Serial(target) => write!(f, "serial:{target}"),
            Self::Tcp(target) => write!(f, "tcp:{target}"),
            Self::Vsock { cid: None, port } => write!(f, "vsock:{port}"),
            Self::Vsock {
                cid: Some(cid),
                port,
            } => write!(f, "vsock:{cid}:{port}"),
            Self::Pipe(name) => write!(f, "pipe:{name}"),
            Self::Xenstore(XenstoreTarget::Detect) => f.write_str("xenstore"),
            Self::Xenstore(XenstoreTarget::Path(path)) => write!(f, "xenstore:{}", path.display()),
            Self::Xenstore(XenstoreTarget::Domain(domid)) => write!(f, "xenstore:{domid}"),
        }
    }
}

/// `HOST:PORT` with a non-empty host and a numeric port.
fn parse_tcp(address: &str) -> Result<(), String> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err("tcp needs HOST:PORT (tcp:127.0.0.1:7000)".into()),
    }
}

/// `PORT` or `CID:PORT`.
fn parse_vsock(address: &str) -> Result<ChannelKind, String> {
    let bad = || {
        format!(
            "invalid vsock address '{address}'; expected vsock:PORT (guestd) or vsock:CID:PORT (guestctl)"
        )
    };
    let number = |s: &str| s.parse::<u32>().ok().filter(|n| *n != u32::MAX);
    let (cid, port) = match address.split_once(':') {
        Some((cid, port)) => (Some(number(cid).ok_or_else(bad)?), port),
        None => (None, address),
    };
    let port = number(port).ok_or_else(bad)?;
    Ok(ChannelKind::Vsock { cid, port })
}

/// The full local pipe path for a spec's address: `\\.\pipe\NAME` as given (the prefix in any
/// case), or a bare `NAME`. Remote pipes (`\\server\pipe\NAME`) and names with a backslash are
/// refused.
pub fn pipe_path(address: &str) -> Result<String, String> {
    let name = match address.get(..PIPE_PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(PIPE_PREFIX) => &address[PIPE_PREFIX.len()..],
        _ if address.starts_with(r"\\") || address.starts_with("//") => {
            return Err(format!(
                "'{address}' is not a local pipe; expected \\\\.\\pipe\\NAME"
            ));
        }
        _ => address,
    };
    if name.is_empty() {
        return Err("a pipe needs a name (pipe:\\\\.\\pipe\\guestd)".into());
    }
    if name.contains('\\') {
        return Err(format!(
            "pipe name '{name}' contains '\\'; expected \\\\.\\pipe\\NAME"
        ));
    }
    let full = format!("{PIPE_PREFIX}{name}");
    // Windows limits the whole pipe name to 256 characters.
    if full.encode_utf16().count() > 256 {
        return Err(format!("pipe name '{full}' is longer than 256 characters"));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form, canonical (display gives it back), and which side takes it.
    const FORMS: &[(&str, bool, bool)] = &[
        // (spec, guestd --listen, guestctl --connect)
        ("unix:/run/guestd/guestd.sock", true, true),
        ("qga+unix:/run/guestd/qga.sock", true, false),
        ("serial:", true, false),
        ("qga+serial:", true, false),
        ("serial:org.openstack.guest_agent.0", true, true),
        ("serial:/dev/vport0p1", true, true),
        ("serial:/var/lib/libvirt/qemu/guest.agent", true, true),
        ("qga+serial:/dev/vport1p1", true, false),
        ("tcp:127.0.0.1:7000", true, true),
        ("tcp:[::1]:7000", true, true),
        ("tcp:guest.example:7000", true, true),
        ("qga+tcp:127.0.0.1:7001", true, false),
        ("vsock:5000", true, false),
        ("qga+vsock:5001", true, false),
        ("vsock:3:5000", false, true),
        (r"pipe:\\.\pipe\guestd", true, true),
        (r"qga+pipe:\\.\pipe\qga", true, false),
        ("xenstore", true, false),
        ("xenstore:/dev/xen/xenbus", true, false),
        ("xenstore:/var/run/xenstored/socket", true, false),
        ("xenstore:5", false, true),
        ("qga+xenstore", false, false),
        ("qga+xenstore:5", false, false),
    ];

    #[test]
    fn every_form_round_trips_and_each_side_takes_its_own() {
        for &(spec, listen, connect) in FORMS {
            let parsed: ChannelSpec = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(parsed.to_string(), spec, "display of {spec}");
            assert_eq!(
                parsed.to_string().parse::<ChannelSpec>(),
                Ok(parsed.clone())
            );
            assert_eq!(ChannelSpec::listen(spec).is_ok(), listen, "guestd {spec}");
            assert_eq!(
                ChannelSpec::connect(spec).is_ok(),
                connect,
                "guestctl {spec}"
            );
        }
    }

    #[test]
    fn shorthands_normalise() {
        for (short, canonical) in [
            ("pipe:guestd", r"pipe:\\.\pipe\guestd"),
            (r"pipe:\\.\PIPE\guestd", r"pipe:\\.\pipe\guestd"),
        ] {
            assert_eq!(short.parse::<ChannelSpec>().unwrap().to_string(), canonical);
        }
        assert_eq!(
            "qga+serial:".parse::<ChannelSpec>().unwrap(),
            ChannelSpec {
                dialect: Dialect::Qga,
                kind: ChannelKind::Serial(String::new()),
            }
        );
    }

    #[test]
    fn errors_say_what_was_expected() {
        for (bad, why) in [
            ("unix:", "needs a path"),
            ("qga+unix:", "needs a path"),
            ("serial", "needs a colon"),
            ("tcp:7000", "HOST:PORT"),
            ("tcp:", "HOST:PORT"),
            ("tcp:host:http", "HOST:PORT"),
            ("vsock:x", "invalid vsock address"),
            ("vsock:", "invalid vsock address"),
            ("vsock:4294967295", "invalid vsock address"),
            ("vsock:1:2:3", "invalid vsock address"),
            ("pipe:", "needs a name"),
            (r"pipe:\\host\pipe\x", "not a local pipe"),
            (r"pipe:\\.\pipe\a\b", "contains '\\'"),
            ("xenstore:", "path or a domain id"),
            ("carrier-pigeon:1", "unknown transport"),
        ] {
            let err = bad.parse::<ChannelSpec>().unwrap_err();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
        assert!(pipe_path(&"x".repeat(300)).unwrap_err().contains("256"));
        let err = ChannelSpec::connect("vsock:5000").unwrap_err();
        assert!(err.contains("vsock:CID:PORT"), "{err}");
        let err = ChannelSpec::listen("xenstore:5").unwrap_err();
        assert!(err.contains("guestctl"), "{err}");
        let err = ChannelSpec::connect("qga+unix:/x").unwrap_err();
        assert!(err.contains("native protocol"), "{err}");
    }
}
