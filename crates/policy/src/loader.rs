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
