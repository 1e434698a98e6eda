//! OPA-compatible policy bundles: a gzipped tarball holding `.manifest` (`revision`, `roots`),
//! `*.rego` files and `data.json` documents. Read with bounds (unpacked size, entry count),
//! refusing entries that leave the bundle (absolute paths, `..`) and links; validated like a
//! policy directory when the engine loads it.

use crate::compile::{sources_revision, SourceFile};
use flate2::read::GzDecoder;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::Read;

/// Bounds on what a bundle may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// Largest total of unpacked bytes (tar headers and file contents).
    pub max_unpacked_bytes: u64,
    /// Most entries (files and directories).
    pub max_entries: usize,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 64 << 20,
            max_entries: 10_000,
        }
    }
}

/// A bundle's contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// `.manifest` `revision`, or `sha256:…` of the contents when the manifest names none.
    pub revision: String,
    /// `.manifest` `roots` (paths under `data` the bundle owns; `[""]`: everything).
    pub roots: Vec<String>,
    /// The `.rego` files, by path inside the bundle.
    pub sources: Vec<SourceFile>,
    /// The merged `data.json` documents (`None` when there are none).
    pub data: Option<Value>,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a gzipped tarball, or a truncated one.
    #[error("not a readable .tar.gz bundle: {0}")]
    Archive(String),
    /// It unpacks to more than the limit.
    #[error("bundle unpacks to more than {0} bytes")]
    TooLarge(u64),
    /// It has more entries than the limit.
    #[error("bundle has more than {0} entries")]
    TooManyEntries(usize),
    /// An entry's path is absolute after its leading `/`, climbs out with `..`, or is not UTF-8.
    #[error("bundle entry {0:?} has an unsafe path")]
    UnsafePath(String),
    /// A link, device or other special entry.
    #[error("bundle entry {0:?} is not a regular file or directory")]
    NotAFile(String),
    /// `.manifest` is missing or not the expected JSON.
    #[error(".manifest: {0}")]
    Manifest(String),
    /// A data document is not a JSON object, or two documents set the same path.
    #[error("{path}: {reason}")]
    Data {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file that must be text is not UTF-8.
    #[error("{0}: not UTF-8")]
    Utf8(String),
    /// A policy or data document outside the manifest's roots.
    #[error("{path} is outside the bundle's roots {roots:?}")]
    OutsideRoots {
        /// The file.
        path: String,
        /// The manifest's roots.
        roots: Vec<String>,
    },
    /// A format this gateway does not read (e.g. `data.yaml`).
    #[error("{0}: not supported (use .rego files and data.json)")]
    Unsupported(String),
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    revision: String,
    #[serde(default)]
    roots: Option<Vec<String>>,
}

/// Counts what is read through it and fails past `limit`.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!("unpacks to more than {} bytes", self.limit))
        })?;
        Ok(n)
    }
}

/// The path of an entry inside the bundle: a leading `/` or `./` (as `opa build` writes) is
/// dropped; empty, `.` and `..` components, backslashes and NUL are refused.
fn clean_path(raw: &[u8]) -> Result<String, BundleError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let s = std::str::from_utf8(raw).map_err(|_| BundleError::UnsafePath(shown.clone()))?;
    let s = s.strip_prefix('/').unwrap_or(s);
    let s = s.strip_prefix("./").unwrap_or(s);
    let s = s.strip_suffix('/').unwrap_or(s);
    if s.is_empty() || s.contains('\\') || s.contains('\0') {
        return Err(BundleError::UnsafePath(shown));
    }
    if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(BundleError::UnsafePath(shown));
    }
    Ok(s.to_owned())
}

/// `package a.b.c` of a Rego source as `a/b/c` (the first `package` line), for the roots check.
fn package_path(src: &str) -> Option<String> {
    src.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("package "))
        .map(|p| p.split_whitespace().next().unwrap_or("").replace('.', "/"))
}

fn under_roots(path: &str, roots: &[String]) -> bool {
    roots.iter().any(|r| {
        let r = r.trim_matches('/');
        r.is_empty() || path == r || path.starts_with(&format!("{r}/"))
    })
}

/// Puts `doc` at `dir` (`a/b`: `data.a.b`) in `data`; two documents may not set one key.
fn merge_data(
    data: &mut Map<String, Value>,
    dir: &str,
    doc: Value,
    file: &str,
) -> Result<(), BundleError> {
    let conflict = |what: &str| BundleError::Data {
        path: file.to_owned(),
        reason: format!("{what} is already set by another data document"),
    };
    let Value::Object(doc) = doc else {
        return Err(BundleError::Data {
            path: file.to_owned(),
            reason: "must be a JSON object".to_owned(),
        });
    };
    let mut node = data;
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        let next = node
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        node = match next {
            Value::Object(m) => m,
            _ => return Err(conflict(part)),
        };
    }
    for (k, v) in doc {
        if node.contains_key(&k) {
            return Err(conflict(&k));
        }
        node.insert(k, v);
    }
    Ok(())
}

/// Reads a gzipped bundle, within `limits`.
pub fn read_bundle(gz: &[u8], limits: &BundleLimits) -> Result<Bundle, BundleError> {
    let reader = Bounded {
        inner: GzDecoder::new(gz),
        left: limits.max_unpacked_bytes,
        limit: limits.max_unpacked_bytes,
    };
    let mut archive = tar::Archive::new(reader);
    let archive_err = |e: std::io::Error| {
        if e.to_string().contains("unpacks to more than") {
            BundleError::TooLarge(limits.max_unpacked_bytes)
        } else {
            BundleError::Archive(e.to_string())
        }
    };
    let mut manifest: Option<Manifest> = None;
    let mut sources = Vec::new();
    let mut data_files: Vec<(String, Value)> = Vec::new();
    let mut count = 0usize;
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        count += 1;
        if count > limits.max_entries {
            return Err(BundleError::TooManyEntries(limits.max_entries));
        }
        let path = clean_path(&entry.path_bytes());
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            path?;
            continue;
        }
        let path = path?;
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(BundleError::NotAFile(path));
        }
        if entry.size() > limits.max_unpacked_bytes {
            return Err(BundleError::TooLarge(limits.max_unpacked_bytes));
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(archive_err)?;
        let name = path.rsplit('/').next().unwrap_or(&path);
        let text = || String::from_utf8(bytes.clone()).map_err(|_| BundleError::Utf8(path.clone()));
        if path == ".manifest" {
            let m: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| BundleError::Manifest(e.to_string()))?;
            manifest = Some(m);
        } else if name.ends_with(".rego") {
            sources.push(SourceFile::new(path.clone(), text()?));
        } else if name == "data.json" {
            let doc: Value = serde_json::from_slice(&bytes).map_err(|e| BundleError::Data {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            data_files.push((path.clone(), doc));
        } else if name == "data.yaml" || name == "data.yml" {
            return Err(BundleError::Unsupported(path));
        }
        // Anything else (.signatures.json, policy.wasm, READMEs) is not read.
    }
    // A bundle without a manifest cannot say which roots it owns or which revision it is:
    // refused rather than guessed.
    let manifest = manifest.ok_or_else(|| {
        BundleError::Manifest("missing (a bundle needs a .manifest with revision and roots)".into())
    })?;
    let roots = manifest.roots.unwrap_or_else(|| vec![String::new()]);
    for s in &sources {
        if let Some(pkg) = package_path(&s.contents) {
            if !under_roots(&pkg, &roots) {
                return Err(BundleError::OutsideRoots {
                    path: s.path.clone(),
                    roots,
                });
            }
        }
    }
    let data = if data_files.is_empty() {
        None
    } else {
        let mut merged = Map::new();
        data_files.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, doc) in data_files {
            let dir = path
                .strip_suffix("data.json")
                .unwrap_or("")
                .trim_end_matches('/');
            let keys: Vec<String> = match &doc {
                Value::Object(m) => m.keys().map(|k| format!("{dir}/{k}")).collect(),
                _ => Vec::new(),
            };
            if let Some(k) = keys
                .iter()
                .map(|k| k.trim_start_matches('/'))
                .find(|k| !under_roots(k, &roots))
            {
                return Err(BundleError::OutsideRoots {
                    path: format!("{path} ({k})"),
                    roots,
                });
            }
            merge_data(&mut merged, dir, doc, &path)?;
        }
        Some(Value::Object(merged))
    };
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    let revision = if manifest.revision.is_empty() {
        sources_revision(&sources, data.as_ref())
    } else {
        manifest.revision
    };
    Ok(Bundle {
        revision,
        roots,
        sources,
        data,
    })
}

/// Builds a bundle (`.manifest` with `revision` and `roots`, then `files`), gzipped: for tests,
/// examples and tools that serve bundles.
pub fn build_bundle(revision: &str, roots: &[&str], files: &[(&str, &[u8])]) -> Vec<u8> {
    let manifest = serde_json::json!({ "revision": revision, "roots": roots }).to_string();
    let mut all: Vec<(&str, &[u8])> = vec![("/.manifest", manifest.as_bytes())];
    all.extend_from_slice(files);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in all {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // `set_path` refuses `..` and absolute paths; tests of hostile bundles write raw names.
        let name = header.as_old_mut().name.as_mut();
        let bytes = path.as_bytes();
        let n = bytes.len().min(name.len());
        name[..n].copy_from_slice(&bytes[..n]);
        header.set_cksum();
        // Writing into a Vec cannot fail.
        let _ = tar.append(&header, data);
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: &[u8] = b"package portcullis.policy.p\nimport rego.v1\nallow := true\n";

    fn read(b: &[u8]) -> Result<Bundle, BundleError> {
        read_bundle(b, &BundleLimits::default())
    }

    #[test]
    fn a_bundle_has_a_revision_sources_and_data() {
        let b = build_bundle(
            "v42",
            &["portcullis", "acme"],
            &[
                ("/portcullis/p.rego", ALLOW),
                ("/acme/data.json", br#"{"models": ["gpt-4o"]}"#),
                ("/acme/teams/data.json", br#"{"a": 1}"#),
                ("/.signatures.json", b"{}"),
            ],
        );
        let bundle = read(&b).unwrap();
        assert_eq!(bundle.revision, "v42");
        assert_eq!(bundle.roots, ["portcullis", "acme"]);
        assert_eq!(bundle.sources.len(), 1);
        assert_eq!(bundle.sources[0].path, "portcullis/p.rego");
        assert_eq!(
            bundle.data,
            Some(serde_json::json!({"acme": {"models": ["gpt-4o"], "teams": {"a": 1}}}))
        );
    }

    #[test]
    fn without_a_manifest_revision_the_contents_are_hashed() {
        let a = read(&build_bundle("", &[""], &[("p.rego", ALLOW)])).unwrap();
        let b = read(&build_bundle("", &[""], &[("p.rego", ALLOW)])).unwrap();
        assert!(a.revision.starts_with("sha256:"), "{}", a.revision);
        assert_eq!(a.revision, b.revision);
        let c = read(&build_bundle("", &[""], &[("q.rego", ALLOW)])).unwrap();
        assert_ne!(a.revision, c.revision);
    }

    #[test]
    fn hostile_bundles_are_refused() {
        for path in [
            "../escape.rego",
            "a/../../b.rego",
            "a//b.rego",
            "a\\b.rego",
            "./../x.rego",
        ] {
            let b = build_bundle("r", &[""], &[(path, ALLOW)]);
            assert!(
                matches!(read(&b), Err(BundleError::UnsafePath(_))),
                "{path}: {:?}",
                read(&b)
            );
        }
        // Not gzip, truncated.
        assert!(matches!(
            read(b"not a bundle"),
            Err(BundleError::Archive(_))
        ));
        let b = build_bundle("r", &[""], &[("p.rego", ALLOW)]);
        assert!(read(&b[..b.len() / 2]).is_err());
        // Too large, too many entries.
        let big = vec![b'#'; 4096];
        let b = build_bundle("r", &[""], &[("p.rego", &big)]);
        let small = BundleLimits {
            max_unpacked_bytes: 2048,
            ..BundleLimits::default()
        };
        assert_eq!(read_bundle(&b, &small), Err(BundleError::TooLarge(2048)));
        let files: Vec<(String, &[u8])> = (0..5)
            .map(|i| (format!("f{i}.txt"), b"x" as &[u8]))
            .collect();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), *d)).collect();
        let few = BundleLimits {
            max_entries: 3,
            ..BundleLimits::default()
        };
        assert_eq!(
            read_bundle(&build_bundle("r", &[""], &refs), &few),
            Err(BundleError::TooManyEntries(3))
        );
        // Bad manifest, bad data, unsupported data.yaml, outside the roots.
        let bad_manifest = {
            let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let mut t = tar::Builder::new(gz);
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_path(".manifest").unwrap();
            h.set_cksum();
            t.append(&h, &b"{x}"[..]).unwrap();
            t.into_inner().unwrap().finish().unwrap()
        };
        assert!(matches!(read(&bad_manifest), Err(BundleError::Manifest(_))));
        let no_manifest = {
            let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let mut t = tar::Builder::new(gz);
            let mut h = tar::Header::new_gnu();
            h.set_size(ALLOW.len() as u64);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_path("p.rego").unwrap();
            h.set_cksum();
            t.append(&h, ALLOW).unwrap();
            t.into_inner().unwrap().finish().unwrap()
        };
        assert!(
            matches!(read(&no_manifest), Err(BundleError::Manifest(ref m)) if m.contains("missing")),
            "{:?}",
            read(&no_manifest)
        );
        let b = build_bundle("r", &[""], &[("data.json", b"[1]")]);
        assert!(matches!(read(&b), Err(BundleError::Data { .. })));
        let b = build_bundle(
            "r",
            &[""],
            &[
                ("a/data.json", b"{\"x\":1}"),
                ("data.json", b"{\"a\":{\"x\":2}}"),
            ],
        );
        assert!(
            matches!(read(&b), Err(BundleError::Data { .. })),
            "{:?}",
            read(&b)
        );
        let b = build_bundle("r", &[""], &[("data.yaml", b"a: 1")]);
        assert!(matches!(read(&b), Err(BundleError::Unsupported(_))));
        let b = build_bundle("r", &["other"], &[("p.rego", ALLOW)]);
        assert!(matches!(read(&b), Err(BundleError::OutsideRoots { .. })));
        let b = build_bundle(
            "r",
            &["portcullis"],
            &[("p.rego", ALLOW), ("data.json", b"{\"acme\":1}")],
        );
        assert!(matches!(read(&b), Err(BundleError::OutsideRoots { .. })));
    }

    /// A small download that inflates to a 64 MiB entry: refused at the bound, not inflated.
    #[test]
    fn a_gzip_bomb_stops_at_the_bound() {
        use std::io::Write;
        let declared: u64 = 64 << 20;
        let mut header = tar::Header::new_gnu();
        header.set_size(declared);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_path("p.rego").unwrap();
        header.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(header.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(declared >> 20) {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let limits = BundleLimits {
            max_unpacked_bytes: 1 << 20,
            ..BundleLimits::default()
        };
        assert_eq!(
            read_bundle(&bomb, &limits),
            Err(BundleError::TooLarge(1 << 20))
        );
        // The same when the header lies low and the bytes run on: the reader is bounded.
        let big = vec![b'#'; 2 << 20];
        let b = build_bundle("r", &[""], &[("p.rego", &big)]);
        assert_eq!(
            read_bundle(&b, &limits),
            Err(BundleError::TooLarge(1 << 20))
        );
    }

    #[test]
    fn links_are_refused() {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_path("p.rego").unwrap();
        h.set_link_name("/etc/passwd").unwrap();
        h.set_cksum();
        t.append(&h, std::io::empty()).unwrap();
        let b = t.into_inner().unwrap().finish().unwrap();
        assert_eq!(read(&b), Err(BundleError::NotAFile("p.rego".into())));
    }
}
