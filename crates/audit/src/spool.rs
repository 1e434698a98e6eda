//! The spool: store records that could not be written yet (the store is down) wait here,
//! on disk, and are written when the store is back.
//!
//! One append-only file of JSON lines (each an [`AuditRow`]: columns and record JSON,
//! exactly what will be stored) and a cursor file beside it (`PATH.offset`) holding how
//! many bytes have been written to the store. Appends are fsynced: a record the writer
//! took from the queue survives a crash of the process. Reading resumes at the cursor;
//! once everything is consumed both files are emptied.
//!
//! Exactly once: a chunk is written to the store first and the cursor moved afterwards. A
//! crash in between writes the chunk again at the next start, and the store skips records
//! whose id it already holds, so none is duplicated. A line cut short by a crash during an
//! append is removed when the spool is opened: that append never completed, so its records
//! were still only in memory (the SIGKILL bound of the pipeline).
//!
//! The size bound is on the file (consumed prefix included): appends that would pass it
//! are refused, and the caller decides (count and drop, or hold and push back).

use portcullis_store::AuditRow;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Most rows one [`Spool::read`] returns.
pub(crate) const READ_ROWS: usize = 5_000;
/// Most bytes one [`Spool::read`] reads (a chunk is held in memory).
const READ_BYTES: u64 = 16 * 1024 * 1024;

/// An open spool; see the module docs. All methods block on the file system: call them on
/// the blocking pool.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    cursor: PathBuf,
    max_bytes: u64,
    file: File,
    size: u64,
    offset: u64,
}

/// Rows read from the spool, and where reading stopped.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    /// The rows, oldest first.
    pub(crate) rows: Vec<AuditRow>,
    /// The offset after the last line read (pass it to [`Spool::consume`]).
    pub(crate) end: u64,
    /// Lines that were not a record (a damaged file): skipped.
    pub(crate) corrupt: u64,
}

impl Spool {
    /// Opens (creating it and its directory) the spool at `path`, bounded by `max_bytes`.
    /// A partial last line is cut; the cursor is read (a missing or unreadable cursor
    /// means "from the start": rewritten records are skipped by the store).
    pub(crate) fn open(path: &Path, max_bytes: u64) -> io::Result<Spool> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = open_private(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let mut spool = Spool {
            path: path.to_path_buf(),
            cursor: cursor_path(path),
            max_bytes,
            file,
            size: meta.len(),
            offset: 0,
        };
        spool.cut_partial_line()?;
        spool.offset = read_cursor(&spool.cursor)
            .filter(|&o| o <= spool.size)
            .unwrap_or(0);
        if spool.offset == spool.size {
            spool.reset()?;
        }
        Ok(spool)
    }

    /// Bytes not yet written to the store.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.size.saturating_sub(self.offset)
    }

    /// The spool file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends as many of `rows` as fit under the bound, in order, and syncs the file;
    /// returns how many were appended. On a write error the file is cut back to its size
    /// before the call (no partial line) and nothing counts as appended.
    pub(crate) fn append(&mut self, rows: &[AuditRow]) -> io::Result<usize> {
        let mut buf = Vec::new();
        let mut taken = 0;
        for row in rows {
            let mut line = serde_json::to_vec(row).map_err(io::Error::other)?;
            line.push(b'\n');
            let len = u64::try_from(buf.len() + line.len()).unwrap_or(u64::MAX);
            if self.size.saturating_add(len) > self.max_bytes {
                break;
            }
            buf.extend_from_slice(&line);
            taken += 1;
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let res = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        match res {
            Ok(()) => {
                self.size += u64::try_from(buf.len()).unwrap_or(u64::MAX);
                Ok(taken)
            }
            Err(e) => {
                let _ = self.file.set_len(self.size);
                Err(e)
            }
        }
    }

    /// Reads up to [`READ_ROWS`] rows (and about [`READ_BYTES`]) from the cursor on.
    pub(crate) fn read(&mut self) -> io::Result<Chunk> {
        let mut chunk = Chunk {
            end: self.offset,
            ..Chunk::default()
        };
        if self.pending_bytes() == 0 {
            return Ok(chunk);
        }
        (&self.file).seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new((&self.file).take(self.pending_bytes()));
        let mut line = Vec::new();
        while chunk.rows.len() < READ_ROWS && chunk.end - self.offset < READ_BYTES {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                // A line without its end (appends are whole lines, so only a file changed
                // behind our back): skip it rather than stall on it.
                chunk.end += u64::try_from(n).unwrap_or(u64::MAX);
                chunk.corrupt += 1;
                break;
            }
            chunk.end += u64::try_from(n).unwrap_or(u64::MAX);
            match serde_json::from_slice::<AuditRow>(&line) {
                Ok(row) => chunk.rows.push(row),
                Err(_) => chunk.corrupt += 1,
            }
        }
        Ok(chunk)
    }

    /// Marks everything before `end` as written to the store. When that is everything,
    /// the spool is emptied.
    pub(crate) fn consume(&mut self, end: u64) -> io::Result<()> {
        if end >= self.size {
            return self.reset();
        }
        write_cursor(&self.cursor, end)?;
        self.offset = end;
        Ok(())
    }

    /// Empties the spool and removes the cursor.
    fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.size = 0;
        self.offset = 0;
        match std::fs::remove_file(&self.cursor) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Cuts the file after its last newline (a crash may have left half a line).
    fn cut_partial_line(&mut self) -> io::Result<()> {
        if self.size == 0 {
            return Ok(());
        }
        let mut pos = self.size;
        let mut buf = vec![0u8; 64 * 1024];
        while pos > 0 {
            let step = pos.min(u64::try_from(buf.len()).unwrap_or(u64::MAX));
            let start = pos - step;
            let len = usize::try_from(step).unwrap_or(buf.len());
            let part = buf.get_mut(..len).unwrap_or_default();
            (&self.file).seek(SeekFrom::Start(start))?;
            (&self.file).read_exact(part)?;
            if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
                let keep = start + u64::try_from(i).unwrap_or(0) + 1;
                if keep < self.size {
                    self.file.set_len(keep)?;
                    self.size = keep;
                }
                return Ok(());
            }
            pos = start;
        }
        self.file.set_len(0)?;
        self.size = 0;
        Ok(())
    }
}

/// `PATH.offset`.
fn cursor_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".offset");
    PathBuf::from(s)
}

fn read_cursor(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Replaces the cursor file atomically (write, sync, rename).
fn write_cursor(path: &Path, offset: u64) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = open_private_truncated(&tmp)?;
    f.write_all(offset.to_string().as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(unix)]
fn open_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

#[cfg(unix)]
fn open_private_truncated(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private_truncated(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> AuditRow {
        AuditRow {
            id: format!("r{i:05}"),
            ts_ms: 1_700_000_000_000 + i64::try_from(i).unwrap_or(0),
            tenant: "acme".to_owned(),
            agent_id: "bot".to_owned(),
            subagent: None,
            verdict: "allow".to_owned(),
            policy: Some("baseline".to_owned()),
            policy_revision: None,
            provider: None,
            model: None,
            kind: "http".to_owned(),
            status: Some(200),
            cost_usd_micros: None,
            rollup: None,
            record_json: format!(r#"{{"id":"r{i:05}","note":"line\nbreak"}}"#),
        }
    }

    fn ids(rows: &[AuditRow]) -> Vec<String> {
        rows.iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn rows_round_trip_in_order_and_the_cursor_survives_reopening() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool/audit.jsonl");
        let mut s = Spool::open(&path, 1 << 20)?;
        let rows: Vec<AuditRow> = (0..10).map(row).collect();
        assert_eq!(s.append(&rows[..6])?, 6);
        assert_eq!(s.append(&rows[6..])?, 4);
        let c = s.read()?;
        assert_eq!(c.rows, rows);
        assert_eq!(c.corrupt, 0);
        // Consume the first four only (as if the rest were not written yet).
        let mut s2 = Spool::open(&path, 1 << 20)?;
        let first: u64 = {
            let text = std::fs::read(&path)?;
            let mut nl = text.iter().enumerate().filter(|(_, b)| **b == b'\n');
            nl.nth(3)
                .map(|(i, _)| u64::try_from(i + 1).unwrap_or(0))
                .unwrap_or(0)
        };
        s2.consume(first)?;
        drop((s, s2));
        let mut s = Spool::open(&path, 1 << 20)?;
        assert_eq!(ids(&s.read()?.rows), ids(&rows[4..]));
        let end = s.read()?.end;
        s.consume(end)?;
        assert_eq!(s.pending_bytes(), 0);
        assert_eq!(std::fs::metadata(&path)?.len(), 0, "emptied once consumed");
        assert!(!cursor_path(&path).exists());
        Ok(())
    }

    #[test]
    fn the_bound_refuses_what_does_not_fit() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.jsonl");
        let one = serde_json::to_vec(&row(0)).map_err(io::Error::other)?.len() as u64 + 1;
        let mut s = Spool::open(&path, one * 3 + one / 2)?;
        let rows: Vec<AuditRow> = (0..5).map(row).collect();
        assert_eq!(s.append(&rows)?, 3);
        assert_eq!(s.append(&rows[3..])?, 0);
        assert_eq!(ids(&s.read()?.rows), ids(&rows[..3]));
        Ok(())
    }

    #[test]
    fn a_torn_last_line_is_cut_and_damaged_lines_are_skipped() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.jsonl");
        let mut s = Spool::open(&path, 1 << 20)?;
        s.append(&[row(0)])?;
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(b"not json\n")?;
        f.write_all(&serde_json::to_vec(&row(1)).map_err(io::Error::other)?)?;
        f.write_all(b"\n{\"id\":\"torn")?;
        drop(f);
        write_cursor(&cursor_path(&path), 999_999)?;
        // The cursor past the end is ignored (read from the start again).
        let mut s = Spool::open(&path, 1 << 20)?;
        let c = s.read()?;
        assert_eq!(ids(&c.rows), ["r00000", "r00001"]);
        assert_eq!(c.corrupt, 1);
        assert!(!std::fs::read_to_string(&path)?.contains("torn"));
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn the_files_are_private() -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.jsonl");
        let mut s = Spool::open(&path, 1 << 20)?;
        s.append(&[row(0), row(1)])?;
        let c = s.read()?;
        s.consume(c.end - 1)?;
        for p in [path.clone(), cursor_path(&path)] {
            assert_eq!(std::fs::metadata(&p)?.permissions().mode() & 0o777, 0o600);
        }
        Ok(())
    }
}
