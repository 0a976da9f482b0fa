//! uniffi's binding generator, built from the version this crate's scaffolding
//! uses (the two must match): `cargo run -p push-client-ffi --bin uniffi-bindgen
//! -- generate --library target/debug/libpush_client.so --language kotlin …`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
