//! Test helper for the fault-injection tests: replaces one file again and again through
//! `Root::write_atomic` (the writer every handler uses) until it is killed.
//!
//! `fault-writer ROOT GUEST_PATH SIZE` writes generation 1, 2, … of SIZE bytes, each filled with
//! one byte value, and prints `wrote N` after each, so the test knows writes are under way when
//! it sends SIGKILL.

use std::io::Write;

use guestd_core::{Root, WriteOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, path, size] = args.as_slice() else {
        eprintln!("usage: fault-writer ROOT GUEST_PATH SIZE");
        std::process::exit(2);
    };
    let root = Root::sandbox(root).expect("sandbox root");
    let size: usize = size.parse().expect("SIZE is a number");
    let mut out = std::io::stdout().lock();
    for generation in 1u64.. {
        let fill = (generation % 251) as u8 + 1;
        let contents = vec![fill; size];
        root.write_atomic(path, &contents, WriteOptions::default())
            .expect("write");
        writeln!(out, "wrote {generation}").expect("stdout");
        out.flush().expect("stdout");
    }
}
