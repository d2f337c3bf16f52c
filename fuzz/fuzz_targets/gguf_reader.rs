//! Arbitrary bytes into the GGUF reader: it must return an error or a file, never panic,
//! abort or read out of bounds. A file that opens must also survive every accessor and
//! write back to bytes that read again to the same file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_engine::gguf::{GgufFile, GgufWriter};

/// The writer's image of a file that reads: its metadata and tensors in order.
fn rewrite(f: &GgufFile) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set_version(f.version())
        .expect("the reader accepted this version");
    w.add_metadata(f.metadata())
        .expect("the reader accepted this metadata");
    for t in f.tensors() {
        let data = f
            .tensor_data(t)
            .expect("only called when all data is present");
        w.add_tensor(&t.name, t.ty, &t.dims, data.to_vec())
            .expect("the reader accepted this tensor");
    }
    w.to_bytes()
}

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for (k, v) in f.metadata().iter() {
        let _ = (k.len(), v.to_string(), f.metadata().get(k));
    }
    for t in f.tensors() {
        assert_eq!(f.tensor(&t.name), Some(t));
        match f.tensor_data(t) {
            Ok(d) => assert_eq!(d.len() as u64, t.n_bytes),
            Err(_) => assert!(!f.has_data(t)),
        }
    }
    if f.require_all_data().is_ok() {
        let bytes = rewrite(&f);
        let again = GgufFile::from_bytes(bytes.clone()).expect("written files read back");
        assert_eq!(rewrite(&again), bytes);
    }
});
