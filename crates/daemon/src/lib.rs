//! The parts of the guestd daemon other crates need too: the configuration model and parser
//! (the fuzz targets parse configuration exactly as the daemon does). The daemon itself is
//! `main.rs`.

pub mod config;
