//! guestd's XenStore transport: how an unmodified OpenStack nova host on XenServer talks to
//! its guests (spec §1–3, §2.5).
//!
//! - [`wire`]: the wire protocol (`xs_wire.h`) — header, message types, errno names, the
//!   4096-byte payload limit checked before anything is allocated.
//! - [`client`]: an async pure-Rust client ([`XsClient`]) over the xenbus device
//!   (`/dev/xen/xenbus`, `/proc/xen/xenbus`) or a xenstored unix socket, multiplexing replies
//!   by `req_id` and watch events by token.
//! - [`XenstoreTransport`]: the guest side of the request lifecycle (`data/host/<id>` in,
//!   `data/guest/<id>` out), watch-driven, reconnecting, pruning its own old replies; its
//!   channel offers `vm-data/` to handlers through [`XenstoreHostData`].
//! - [`HostClient`]: the dom0 side guestctl uses (`guestctl --connect xenstore:DOMID`).
//! - With the `libxenstore` feature, a second backend over the system libxenstore (bindgen
//!   bindings to Debian's `libxen-dev`) runs the same lifecycle.
//! - [`xeniface`]: the Windows backend over the Xen PV drivers' xeniface IOCTLs
//!   ([`XenifaceStore`]), generic over the device so that its logic runs against
//!   `test-xenstored` through an emulated device on any OS.
//!
//! - [`Store::transact`]: several writes and removals in one XenStore transaction (native and
//!   libxenstore; xeniface has none and applies them in order), each refusal reported on its
//!   own, a conflicting commit as `EAGAIN` — what the Xen guest metrics publisher uses.
//!   [`with_configured_store`] runs any code generic over [`Store`] on the configured backend.
//!
//! Adding an operation: a method on [`XsClient`] (and on the [`Store`] trait if the lifecycle
//! needs it, implemented by every backend). Adding a backend: a [`Store`] implementation and a
//! [`BackendKind`] that [`XenstoreTransport::open`] maps to it.

pub mod client;
mod config;
#[cfg(unix)]
mod device;
mod host;
mod hostdata;
#[cfg(feature = "libxenstore")]
pub mod libxs;
mod lifecycle;
mod store;
mod transport;
pub mod wire;
pub mod xeniface;

pub use client::{WatchEvent, WatchStream, XsClient, XsError};
pub use config::{BackendKind, XenstoreConfig};
pub use host::{DEFAULT_SOCKET, HostClient, HostError, default_socket};
pub use hostdata::XenstoreHostData;
pub use lifecycle::fit_reply;
pub use store::{Change, Outcomes, Store};
pub use transport::{
    DEVICE_PATHS, StoreUser, XenstoreTransport, detect, detect_among, with_configured_store,
};
pub use xeniface::XenifaceStore;
