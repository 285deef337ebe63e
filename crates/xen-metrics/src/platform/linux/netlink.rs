//! rtnetlink, by hand: the few messages guestd needs (links and addresses: dumps and the
//! `RTM_NEWLINK`/`RTM_DELLINK`/`RTM_NEWADDR`/`RTM_DELADDR` notifications) on a
//! `NETLINK_ROUTE` socket subscribed to `RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR` and
//! `RTMGRP_IPV6_IFADDR`, registered with tokio: guestd wakes when the kernel says something
//! changed, and never otherwise.
//!
//! Why not a crate: the `netlink-*`/`rtnetlink` family is a dozen crates and futures
//! machinery for what is a 16-byte header, two fixed structs and three attributes. The parser
//! ([`parse`]) and the state it feeds ([`State`]) are pure and tested (property tests: any
//! bytes parse without panicking, and what is built parses back).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// Multicast groups: links, IPv4 and IPv6 addresses.
pub const GROUPS: u32 = 0x1 | 0x10 | 0x100;

const HEADER: usize = 16;
const IFINFOMSG: usize = 16;
const IFADDRMSG: usize = 8;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFF_LOOPBACK: u32 = 0x8;
const IFA_F_SECONDARY: u32 = 0x01;
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `RT_SCOPE_LINK`: link-local addresses, published after the global ones.
const SCOPE_LINK: u8 = 253;
/// `RT_SCOPE_HOST`: `127.0.0.1`, `::1`.
const SCOPE_HOST: u8 = 254;

/// A link (interface) as a message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub flags: u32,
    pub name: Option<String>,
    pub mac: Option<[u8; 6]>,
}

/// An address as a message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub prefix: u8,
    pub scope: u8,
    /// `IFA_FLAGS` when present (32 bits), else the 8-bit header flags.
    pub flags: u32,
    pub addr: IpAddr,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    NewLink(Link),
    DelLink(Link),
    NewAddr(Addr),
    DelAddr(Addr),
    /// The end of a dump (`seq` of the request).
    Done {
        seq: u32,
    },
    /// An error (or acknowledgement, `errno` 0) for request `seq`.
    Error {
        seq: u32,
        errno: i32,
    },
    /// The kernel dropped messages: the state must be read again.
    Overrun,
    /// A type guestd does not use, or a message too short for its type.
    Ignored,
}

/// Decode every message in one datagram. Stops at the first header that does not fit.
pub fn parse(mut buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while buf.len() >= HEADER {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < HEADER || len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let body = &buf[HEADER..len];
        out.push(match ty {
            RTM_NEWLINK | RTM_DELLINK => match link(body) {
                Some(l) if ty == RTM_NEWLINK => Message::NewLink(l),
                Some(l) => Message::DelLink(l),
                None => Message::Ignored,
            },
            RTM_NEWADDR | RTM_DELADDR => match addr(body) {
                Some(a) if ty == RTM_NEWADDR => Message::NewAddr(a),
                Some(a) => Message::DelAddr(a),
                None => Message::Ignored,
            },
            NLMSG_DONE => Message::Done { seq },
            NLMSG_ERROR => match body.first_chunk::<4>() {
                Some(e) => Message::Error {
                    seq,
                    errno: -i32::from_ne_bytes(*e),
                },
                None => Message::Ignored,
            },
            NLMSG_OVERRUN => Message::Overrun,
            _ => Message::Ignored,
        });
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// `(type, payload)` of each attribute.
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        if len < 4 || len > buf.len() {
            break;
        }
        // The top bits are NLA_F_NESTED and NLA_F_NET_BYTEORDER.
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        out.push((ty, &buf[4..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

fn link(body: &[u8]) -> Option<Link> {
    let head = body.get(..IFINFOMSG)?;
    let index = i32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
    let flags = u32::from_ne_bytes([head[8], head[9], head[10], head[11]]);
    let mut link = Link {
        index,
        flags,
        name: None,
        mac: None,
    };
    for (ty, value) in attributes(&body[IFINFOMSG..]) {
        match ty {
            IFLA_IFNAME => {
                let name = value.split(|b| *b == 0).next().unwrap_or_default();
                link.name = std::str::from_utf8(name)
                    .ok()
                    .filter(|n| !n.is_empty())
                    .map(str::to_string);
            }
            IFLA_ADDRESS => link.mac = value.try_into().ok(),
            _ => {}
        }
    }
    Some(link)
}

fn addr(body: &[u8]) -> Option<Addr> {
    let head = body.get(..IFADDRMSG)?;
    let (family, prefix, flags8, scope) = (head[0], head[1], head[2], head[3]);
    let index = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
    let (mut address, mut local, mut flags) = (None, None, u32::from(flags8));
    for (ty, value) in attributes(&body[IFADDRMSG..]) {
        match ty {
            IFA_ADDRESS => address = ip(family, value),
            IFA_LOCAL => local = ip(family, value),
            IFA_FLAGS => {
                if let Some(f) = value.first_chunk::<4>() {
                    flags = u32::from_ne_bytes(*f);
                }
            }
            _ => {}
        }
    }
    // IPv4: IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on a
    // point-to-point link); IPv6 only has IFA_ADDRESS (IFA_LOCAL, when present, is ours).
    let addr = local.or(address)?;
    Some(Addr {
        index,
        prefix,
        scope,
        flags,
        addr,
    })
}

fn ip(family: u8, value: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => <[u8; 4]>::try_from(value)
            .ok()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        AF_INET6 => <[u8; 16]>::try_from(value)
            .ok()
            .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

/// A dump request for `RTM_GETLINK` or `RTM_GETADDR` (every family).
pub fn dump_request(ty: u16, seq: u32) -> Vec<u8> {
    let body = if ty == RTM_GETLINK {
        IFINFOMSG
    } else {
        IFADDRMSG
    };
    let len = HEADER + body;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.resize(len, 0);
    out
}

/// What is known of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LinkState {
    name: String,
    mac: Option<[u8; 6]>,
    loopback: bool,
}

/// One address, with what orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AddrState {
    addr: IpAddr,
    prefix: u8,
    scope: u8,
    flags: u32,
    /// Arrival order (the kernel lists an interface's primary address first).
    order: u64,
}

impl AddrState {
    /// Tentative (duplicate address detection still running) and failed addresses are not
    /// usable yet; host-scope ones (`::1`) never are from outside.
    fn usable(&self) -> bool {
        self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0 && self.scope != SCOPE_HOST
    }

    /// Primary before secondary, global before link-local, then arrival.
    fn rank(&self) -> (bool, bool, u64) {
        (
            self.flags & IFA_F_SECONDARY != 0,
            self.scope == SCOPE_LINK,
            self.order,
        )
    }
}

/// Links and addresses as the kernel reported them.
#[derive(Debug, Default)]
pub struct State {
    links: BTreeMap<i32, LinkState>,
    addrs: BTreeMap<u32, Vec<AddrState>>,
    next: u64,
}

/// One interface with its usable addresses in publishing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub addresses: Vec<IpAddr>,
}

impl State {
    pub fn clear(&mut self) {
        self.links.clear();
        self.addrs.clear();
    }

    /// Apply one message; whether what [`interfaces`](Self::interfaces) returns may have
    /// changed.
    pub fn apply(&mut self, message: &Message) -> bool {
        match message {
            Message::NewLink(l) => {
                let entry = self.links.entry(l.index).or_default();
                let before = entry.clone();
                if let Some(name) = &l.name {
                    entry.name = name.clone();
                }
                if l.mac.is_some() {
                    entry.mac = l.mac;
                }
                entry.loopback = l.flags & IFF_LOOPBACK != 0;
                *entry != before
            }
            Message::DelLink(l) => {
                let had = self.links.remove(&l.index).is_some();
                let addrs = u32::try_from(l.index)
                    .ok()
                    .and_then(|i| self.addrs.remove(&i))
                    .is_some();
                had || addrs
            }
            Message::NewAddr(a) => {
                let list = self.addrs.entry(a.index).or_default();
                match list
                    .iter_mut()
                    .find(|s| s.addr == a.addr && s.prefix == a.prefix)
                {
                    Some(existing) => {
                        let was = existing.usable();
                        existing.flags = a.flags;
                        existing.scope = a.scope;
                        was != existing.usable()
                    }
                    None => {
                        self.next += 1;
                        let new = AddrState {
                            addr: a.addr,
                            prefix: a.prefix,
                            scope: a.scope,
                            flags: a.flags,
                            order: self.next,
                        };
                        let usable = new.usable();
                        list.push(new);
                        usable
                    }
                }
            }
            Message::DelAddr(a) => {
                let Some(list) = self.addrs.get_mut(&a.index) else {
                    return false;
                };
                let before = list.len();
                list.retain(|s| !(s.addr == a.addr && s.prefix == a.prefix));
                list.len() != before
            }
            _ => false,
        }
    }

    /// Every interface but loopback, with its usable addresses, primary and global first.
    pub fn interfaces(&self) -> Vec<Interface> {
        self.links
            .iter()
            .filter(|(_, l)| !l.loopback && !l.name.is_empty())
            .map(|(index, l)| {
                let mut list: Vec<&AddrState> = u32::try_from(*index)
                    .ok()
                    .and_then(|i| self.addrs.get(&i))
                    .map(|v| v.iter().filter(|a| a.usable()).collect())
                    .unwrap_or_default();
                list.sort_by_key(|a| a.rank());
                Interface {
                    name: l.name.clone(),
                    mac: l.mac,
                    addresses: list.iter().map(|a| a.addr).collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
pub mod build {
    //! Messages as the kernel sends them, for tests.
    use super::*;

    fn message(ty: u16, seq: u32, body: Vec<u8>) -> Vec<u8> {
        let len = HEADER + body.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&body);
        out.resize(align(out.len()), 0);
        out
    }

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align(out.len()), 0);
        out
    }

    pub fn link(ty: u16, index: i32, flags: u32, name: &str, mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG];
        body[4..8].copy_from_slice(&index.to_ne_bytes());
        body[8..12].copy_from_slice(&flags.to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        body.extend(attr(IFLA_IFNAME, &n));
        if let Some(mac) = mac {
            body.extend(attr(IFLA_ADDRESS, &mac));
        }
        message(ty, 0, body)
    }

    pub fn addr(ty: u16, index: u32, addr: IpAddr, prefix: u8, scope: u8, flags: u32) -> Vec<u8> {
        let (family, bytes) = match addr {
            IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
            IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
        };
        let mut body = vec![family, prefix, flags as u8, scope];
        body.extend_from_slice(&index.to_ne_bytes());
        body.extend(attr(IFA_ADDRESS, &bytes));
        if family == AF_INET {
            body.extend(attr(IFA_LOCAL, &bytes));
        }
        body.extend(attr(IFA_FLAGS, &flags.to_ne_bytes()));
        message(ty, 0, body)
    }

    pub fn done(seq: u32) -> Vec<u8> {
        message(NLMSG_DONE, seq, 0u32.to_ne_bytes().to_vec())
    }

    pub fn error(seq: u32, errno: i32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; HEADER]);
        message(NLMSG_ERROR, seq, body)
    }
}

#[cfg(test)]
mod tests {
    use super::build::{addr, done, error, link};
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0, 0x16, 0x3e, 1, 2, 3];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn links_addresses_and_their_order() {
        let mut state = State::default();
        let mut stream = Vec::new();
        stream.extend(link(RTM_NEWLINK, 1, IFF_LOOPBACK, "lo", None));
        stream.extend(link(RTM_NEWLINK, 2, 0, "eth0", Some(MAC)));
        stream.extend(addr(RTM_NEWADDR, 1, ip("127.0.0.1"), 8, SCOPE_HOST, 0));
        stream.extend(addr(RTM_NEWADDR, 2, ip("fe80::1"), 64, SCOPE_LINK, 0x80));
        stream.extend(addr(RTM_NEWADDR, 2, ip("192.0.2.10"), 24, 0, 0x80));
        stream.extend(addr(
            RTM_NEWADDR,
            2,
            ip("192.0.2.11"),
            24,
            0,
            IFA_F_SECONDARY,
        ));
        stream.extend(addr(
            RTM_NEWADDR,
            2,
            ip("2001:db8::1"),
            64,
            0,
            IFA_F_TENTATIVE,
        ));
        stream.extend(done(7));
        let messages = parse(&stream);
        assert_eq!(messages.len(), 8);
        assert_eq!(messages[7], Message::Done { seq: 7 });
        for m in &messages {
            state.apply(m);
        }
        let ifs = state.interfaces();
        assert_eq!(ifs.len(), 1, "loopback is left out");
        assert_eq!(ifs[0].name, "eth0");
        assert_eq!(ifs[0].mac, Some(MAC));
        assert_eq!(
            ifs[0].addresses,
            [ip("192.0.2.10"), ip("fe80::1"), ip("192.0.2.11")],
            "primary and global first; the tentative address not yet"
        );
        // Duplicate address detection completes: the same address without TENTATIVE.
        let dad = parse(&addr(RTM_NEWADDR, 2, ip("2001:db8::1"), 64, 0, 0x80));
        assert!(state.apply(&dad[0]));
        assert_eq!(state.interfaces()[0].addresses[1], ip("2001:db8::1"));
        // Removal, and a repeated removal changes nothing.
        let del = parse(&addr(RTM_DELADDR, 2, ip("192.0.2.10"), 24, 0, 0));
        assert!(state.apply(&del[0]));
        assert!(!state.apply(&del[0]));
        assert!(!state.interfaces()[0].addresses.contains(&ip("192.0.2.10")));
        // The link goes, with its addresses.
        let gone = parse(&link(RTM_DELLINK, 2, 0, "eth0", None));
        assert!(state.apply(&gone[0]));
        assert!(state.interfaces().is_empty());
    }

    #[test]
    fn renames_and_errors() {
        let mut state = State::default();
        for m in parse(&link(RTM_NEWLINK, 3, 0, "eth0", Some(MAC))) {
            state.apply(&m);
        }
        let rename = parse(&link(RTM_NEWLINK, 3, 0, "enX0", None));
        assert!(state.apply(&rename[0]));
        assert_eq!(state.interfaces()[0].name, "enX0");
        assert_eq!(state.interfaces()[0].mac, Some(MAC), "the MAC is kept");
        assert_eq!(parse(&error(9, 16)), [Message::Error { seq: 9, errno: 16 }]);
        let request = dump_request(RTM_GETADDR, 5);
        assert_eq!(request.len(), HEADER + IFADDRMSG);
        assert_eq!(u16::from_ne_bytes([request[4], request[5]]), RTM_GETADDR);
    }

    #[test]
    fn truncated_input_stops_cleanly() {
        let full = link(RTM_NEWLINK, 2, 0, "eth0", Some(MAC));
        for cut in 0..full.len() {
            let got = parse(&full[..cut]);
            assert!(got.len() <= 1);
        }
        // A header whose length is shorter than a header, or longer than the datagram.
        let mut bad = full.clone();
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(parse(&bad).is_empty());
        bad[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(parse(&bad).is_empty());
        // A body too short for its type.
        let mut short = Vec::new();
        short.extend_from_slice(&(HEADER as u32 + 4).to_ne_bytes());
        short.extend_from_slice(&RTM_NEWADDR.to_ne_bytes());
        short.extend_from_slice(&[0u8; 10]);
        short.extend_from_slice(&[0u8; 4]);
        assert_eq!(parse(&short), [Message::Ignored]);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut state = State::default();
            for m in parse(&bytes) {
                state.apply(&m);
            }
            let _ = state.interfaces();
        }

        #[test]
        fn built_messages_parse_back(
            index in 1u32..1000,
            v4 in any::<[u8; 4]>(),
            v6 in any::<[u8; 16]>(),
            prefix in 0u8..=128,
            scope in any::<u8>(),
            flags in any::<u32>(),
            name in "[a-z][a-z0-9]{0,14}",
            mac in any::<[u8; 6]>(),
        ) {
            let mut stream = link(RTM_NEWLINK, index as i32, 0, &name, Some(mac));
            stream.extend(addr(RTM_NEWADDR, index, IpAddr::from(v4), prefix.min(32), scope, flags));
            stream.extend(addr(RTM_DELADDR, index, IpAddr::from(v6), prefix, scope, flags));
            let got = parse(&stream);
            prop_assert_eq!(got.len(), 3);
            prop_assert_eq!(&got[0], &Message::NewLink(Link { index: index as i32, flags: 0, name: Some(name), mac: Some(mac) }));
            prop_assert_eq!(&got[1], &Message::NewAddr(Addr { index, prefix: prefix.min(32), scope, flags, addr: IpAddr::from(v4) }));
            prop_assert_eq!(&got[2], &Message::DelAddr(Addr { index, prefix, scope, flags, addr: IpAddr::from(v6) }));
        }
    }
}
