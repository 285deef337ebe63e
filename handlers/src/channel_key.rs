//! The key a channel agreed on with `keyinit` or `keyinit2`, kept in the channel's state until
//! `password` uses it. Its own module because both sides use it: the exchanges write it, the
//! password reads and forgets it.

use guestd_crypto::strong::SessionKeys;
use zeroize::Zeroizing;

/// The key a channel agreed on, waiting for `password`. Wiped on drop.
#[derive(Default)]
pub(crate) enum ChannelKey {
    #[default]
    None,
    /// nova's exchange: the shared secret as the decimal passphrase OpenSSL used.
    Legacy(Zeroizing<String>),
    /// `keyinit2`: the derived AES-256 and HMAC keys.
    Strong(SessionKeys),
}

impl ChannelKey {
    pub(crate) fn forget(&mut self) {
        *self = ChannelKey::None;
    }
}
