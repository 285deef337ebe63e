//! guestd-network-model: the network configuration a host asks for, typed and validated, and
//! the host formats parsed into it. Platform-neutral and without I/O: the readers (XenStore,
//! the config drive's device and mount) are the transports' and the OS backends', the
//! renderers (netplan, ifupdown, `rc.conf`, `netsh`, …) guestd-distro's.
//!
//! - the model ([`NetworkSpec`] of [`InterfaceSpec`]s as the host describes them, [`Network`] of
//!   [`Interface`]s once matched to the guest's devices) and its validating types ([`Mac`],
//!   [`IpNet`], [`Route`], [`Hostname`]);
//! - [`nova`]: nova's interface objects (spec §8.2), as the inline `resetnetwork` value and as
//!   XenStore `vm-data/` carry them;
//! - [`config_drive`]: an OpenStack config drive's `network_data.json` and `meta_data.json`.
//!
//! Every host value is hostile: anything that is not typed here (the network label) is checked
//! and written by the renderers only through their escaping; errors quote host text through
//! [`shown`]. Adding a host format: a module here that parses it into a [`NetworkSpec`], with
//! its tests and a line in the fuzz target `network_value`.

pub mod config_drive;
mod model;
pub mod nova;

pub use model::*;
