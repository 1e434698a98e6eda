//! Every config file shipped under `config/` parses and validates, and the
//! documented reference file states exactly the built-in defaults.

use portcullis_config::Config;
use std::path::{Path, PathBuf};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_config_loads() {
    let mut files = Vec::new();
    toml_files(&config_dir(), &mut files);
    assert!(files.len() >= 2, "expected config files, found {files:?}");
    for f in files {
        Config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn reference_file_documents_the_defaults() {
    let c = Config::load(&config_dir().join("portcullis.toml")).unwrap();
    assert_eq!(c, Config::default());
}
