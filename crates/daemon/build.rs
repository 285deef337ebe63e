//! The static musl link (`scripts/link-musl`) lays out guestd's functions in the order of
//! `packaging/link-order/guestd.txt`, which cargo does not see as an input: relink when the
//! list changes (`bench/profile-order` rewrites it).
fn main() {
    println!("cargo:rerun-if-changed=../../packaging/link-order/guestd.txt");
}
