//! The fuzz regression corpus (`fuzz/corpus/<target>/`), replayed through the same entry points
//! the cargo-fuzz targets call, so CI on stable exercises every input fuzzing found interesting.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{target}: corpus nearly empty");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
}

#[test]
fn config_corpus() {
    replay("config", levee::fuzzing::config);
}

#[test]
fn router_corpus() {
    replay("router", levee::fuzzing::router);
}

#[test]
fn headers_corpus() {
    replay("headers", levee::fuzzing::headers);
}

#[test]
fn h1_response_corpus() {
    replay("h1_response", levee::fuzzing::h1_response);
}

#[test]
fn h1_chunked_corpus() {
    replay("h1_chunked", levee::fuzzing::h1_chunked);
}
