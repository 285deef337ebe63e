//! With the `libxenstore` feature: generate bindings to the system libxenstore (Debian's
//! `libxen-dev`: `/usr/include/xenstore.h`) with bindgen and link it. Without it: nothing.

fn main() {
    #[cfg(feature = "libxenstore")]
    libxenstore::generate();
}

#[cfg(feature = "libxenstore")]
mod libxenstore {
    use std::path::PathBuf;

    pub fn generate() {
        println!("cargo:rerun-if-changed=src/libxs/wrapper.h");
        println!("cargo:rustc-link-lib=xenstore");
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
        bindgen::Builder::default()
            .header("src/libxs/wrapper.h")
            .allowlist_function("xs_(open|close|read|write|mkdir|rm|directory|watch|unwatch|read_watch|get_domain_path|transaction_start|transaction_end)")
            .allowlist_var("XBT_NULL")
            .generate()
            .expect(
                "generating libxenstore bindings failed: install libxen-dev (xenstore.h) and \
                 libclang-dev",
            )
            .write_to_file(out.join("xenstore_bindings.rs"))
            .expect("writing the bindings");
    }
}
