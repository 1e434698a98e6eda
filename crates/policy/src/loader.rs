//! Reading `.rego` files from a policy directory (recursively, `lib/` included).

use crate::compile::SourceFile;
use crate::error::EngineError;
use std::path::Path;

/// Largest policy file accepted.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads every `.rego` file under `dir`, sorted by path. Hidden files and directories
/// (editor swap files, `.git`) are skipped. Paths in errors are relative to `dir`.
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, EngineError> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out, 0)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Vec<SourceFile>,
    depth: usize,
) -> Result<(), EngineError> {
    let io = |source| EngineError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if depth > 16 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|source| EngineError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(root, &path, out, depth + 1)?;
        } else if meta.is_file() && name.ends_with(".rego") {
            if meta.len() > MAX_FILE_BYTES {
                return Err(EngineError::Io {
                    path,
                    source: std::io::Error::other("policy file larger than 1 MiB"),
                });
            }
            let contents = std::fs::read_to_string(&path).map_err(|source| EngineError::Io {
                path: path.clone(),
                source,
            })?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push(SourceFile::new(rel, contents));
        }
    }
    Ok(())
}

/// The example policy set shipped in `config/policies` (used by `serve` on embedded
/// defaults when no policy directory exists).
pub fn example_sources() -> Vec<SourceFile> {
    vec![
        SourceFile::new(
            "baseline.rego",
            include_str!("../../../config/policies/baseline.rego"),
        ),
        SourceFile::new(
            "high_risk_llm.rego",
            include_str!("../../../config/policies/high_risk_llm.rego"),
        ),
        SourceFile::new(
            "lib/catalog.rego",
            include_str!("../../../config/policies/lib/catalog.rego"),
        ),
        SourceFile::new(
            "lib/catalog_test.rego",
            include_str!("../../../config/policies/lib/catalog_test.rego"),
        ),
        SourceFile::new(
            "mcp_tools.rego",
            include_str!("../../../config/policies/mcp_tools.rego"),
        ),
        SourceFile::new(
            "model_allowlist.rego",
            include_str!("../../../config/policies/model_allowlist.rego"),
        ),
        SourceFile::new(
            "stripe_readonly.rego",
            include_str!("../../../config/policies/stripe_readonly.rego"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_examples_match_the_directory_and_compile() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/policies");
        assert_eq!(read_dir(&dir).unwrap(), example_sources());
        let set = crate::compile(example_sources()).unwrap();
        let names: Vec<&str> = set.policies().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "baseline",
                "high_risk_llm",
                "mcp_tools",
                "model_allowlist",
                "stripe_readonly"
            ]
        );
        assert!(set.policies().iter().all(|p| p.cacheable));
    }

    #[test]
    fn hidden_files_are_skipped_and_paths_are_relative() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib/.git")).unwrap();
        std::fs::write(dir.path().join("lib/a.rego"), "package a").unwrap();
        std::fs::write(dir.path().join(".#p.rego"), "garbage").unwrap();
        std::fs::write(dir.path().join("lib/.git/x.rego"), "garbage").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let s = read_dir(dir.path()).unwrap();
        assert_eq!(s, vec![SourceFile::new("lib/a.rego", "package a")]);
        assert!(read_dir(&dir.path().join("missing")).is_err());
    }
}
