//! The checked-in header `include/convgemm.h` is what cbindgen generates
//! from `src/` now: this test fails while they differ.
//! `CONVGEMM_WRITE_HEADER=1 cargo test -p convgemm-capi --test header`
//! rewrites it.

use std::path::Path;

#[test]
fn checked_in_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("capi/cbindgen.toml");
    let bindings =
        cbindgen::Builder::new().with_crate(dir).with_config(config).generate().expect("cbindgen generates the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = dir.join("include/convgemm.h");
    if std::env::var_os("CONVGEMM_WRITE_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("write include/convgemm.h");
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "capi/include/convgemm.h differs from what cbindgen generates from capi/src: \
         run `CONVGEMM_WRITE_HEADER=1 cargo test -p convgemm-capi --test header` and commit it"
    );
}
