//! The sinks' blocking and async write primitives; retry bookkeeping lives in the writer.

use portcullis_store::{AuditRow, Store};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest wait for one batch insert into the store. A connection that went silent (a
/// network partition) fails the batch after this instead of stalling the writer; the batch
/// is then retried (or spooled), and the store skips any record it did store.
const STORE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one sink writes.
pub(crate) enum Target {
    Store(Store),
    /// `None` only while a blocking write owns the file state (or after that write panicked).
    Jsonl(Option<JsonlFile>),
    Stdout,
}

impl Target {
    /// Writes `rows` (one batch) to the target.
    pub(crate) async fn write(
        &mut self,
        rows: &[AuditRow],
        jsonl: &JsonlConfig,
    ) -> Result<(), String> {
        match self {
            Target::Store(store) => {
                match tokio::time::timeout(STORE_WRITE_TIMEOUT, store.insert_audit_batch(rows))
                    .await
                {
                    Ok(res) => res.map(|_| ()).map_err(|e| e.to_string()),
                    Err(_) => Err(format!(
                        "the store did not answer within {}s",
                        STORE_WRITE_TIMEOUT.as_secs()
                    )),
                }
            }
            Target::Jsonl(slot) => {
                let mut file = slot.take().unwrap_or_else(|| JsonlFile::new(jsonl.clone()));
                let buf = lines(rows);
                let (file, res) = blocking(move || {
                    let res = file.write_batch(&buf);
                    (file, res)
                })
                .await?;
                *slot = Some(file);
                res.map_err(|e| e.to_string())
            }
            Target::Stdout => {
                let buf = lines(rows);
                blocking(move || {
                    let mut out = io::stdout().lock();
                    out.write_all(&buf).and_then(|()| out.flush())
                })
                .await?
                .map_err(|e| e.to_string())
            }
        }
    }
}

/// Runs `f` on the blocking pool so the runtime's workers never wait on disk.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("sink write task failed: {e}"))
}

/// The records of a batch as JSON Lines, one buffer so the file sees one write.
fn lines(rows: &[AuditRow]) -> Vec<u8> {
    let len = rows.iter().map(|r| r.record_json.len() + 1).sum();
    let mut buf = Vec::with_capacity(len);
    for r in rows {
        buf.extend_from_slice(r.record_json.as_bytes());
        buf.push(b'\n');
    }
    buf
}

/// JSON Lines file settings.
#[derive(Debug, Clone)]
pub(crate) struct JsonlConfig {
    pub(crate) path: PathBuf,
    pub(crate) max_bytes: u64,
    pub(crate) keep: u32,
    pub(crate) fsync: bool,
}

/// An append-only JSON Lines file with size-based rotation, reopened when it is removed
/// or replaced behind our back.
pub(crate) struct JsonlFile {
    cfg: JsonlConfig,
    open: Option<Open>,
}

struct Open {
    file: File,
    size: u64,
    identity: Identity,
}

/// What tells "the same file" apart from a new one at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl JsonlFile {
    pub(crate) fn new(cfg: JsonlConfig) -> Self {
        Self { cfg, open: None }
    }

    /// Opens (creating parent directories) so a bad path is reported at start.
    pub(crate) fn open_now(&mut self) -> io::Result<()> {
        self.ensure_open().map(|_| ())
    }

    /// Appends `buf` (whole lines). On failure the file is cut back to its previous
    /// length when possible, so a retried batch leaves no partial line behind.
    pub(crate) fn write_batch(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let size = self.ensure_open()?.size;
        if self.cfg.max_bytes > 0 && size > 0 && size.saturating_add(len) > self.cfg.max_bytes {
            self.rotate()?;
        }
        let fsync = self.cfg.fsync;
        let open = self.ensure_open()?;
        let res =
            open.file
                .write_all(buf)
                .and_then(|()| if fsync { open.file.sync_data() } else { Ok(()) });
        match res {
            Ok(()) => {
                open.size = open.size.saturating_add(len);
                Ok(())
            }
            Err(e) => {
                let _ = open.file.set_len(open.size);
                self.open = None;
                Err(e)
            }
        }
    }

    /// The open file, reopened when the path no longer names it.
    fn ensure_open(&mut self) -> io::Result<&mut Open> {
        let current = std::fs::metadata(&self.cfg.path).ok().map(|m| identity(&m));
        let stale = match (&self.open, current) {
            (Some(open), Some(id)) => open.identity != id,
            _ => true,
        };
        if stale {
            self.open = None;
            if let Some(parent) = self.cfg.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let file = open_append(&self.cfg.path)?;
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::other(format!(
                    "{} is not a regular file",
                    self.cfg.path.display()
                )));
            }
            self.open = Some(Open {
                size: meta.len(),
                identity: identity(&meta),
                file,
            });
        }
        self.open
            .as_mut()
            .ok_or_else(|| io::Error::other("audit file not open"))
    }

    /// `path` → `path.1` → … → `path.N` (the oldest is deleted); `keep = 0` deletes it.
    fn rotate(&mut self) -> io::Result<()> {
        self.open = None;
        let path = &self.cfg.path;
        if self.cfg.keep == 0 {
            return ignore_missing(std::fs::remove_file(path));
        }
        ignore_missing(std::fs::remove_file(rotated(path, self.cfg.keep)))?;
        for i in (1..self.cfg.keep).rev() {
            ignore_missing(std::fs::rename(rotated(path, i), rotated(path, i + 1)))?;
        }
        ignore_missing(std::fs::rename(path, rotated(path, 1)))
    }
}

/// `path.N`.
pub(crate) fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn ignore_missing(res: io::Result<()>) -> io::Result<()> {
    match res {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(unix)]
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(not(unix))]
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> Identity {
    use std::os::unix::fs::MetadataExt;
    Identity {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

#[cfg(not(unix))]
fn identity(meta: &std::fs::Metadata) -> Identity {
    // No inode numbers: only a vanished file is detected.
    let _ = meta;
    Identity { dev: 0, ino: 0 }
}
