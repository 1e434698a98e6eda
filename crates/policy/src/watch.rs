//! Watching the policy directory: filesystem events are debounced, then the engine
//! reloads (compile first, swap atomically; a broken edit keeps the last good set).

use crate::engine::PolicyEngine;
use crate::error::EngineError;
use notify::{RecursiveMode, Watcher};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running watch. Dropping it stops the watch and joins its thread.
pub struct WatchHandle {
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

impl WatchHandle {
    /// Stops watching.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the watcher drops the event sender, which ends the thread's loop.
        self.watcher.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Watches `engine.config().dir` recursively and calls [`PolicyEngine::reload_from_dir`]
/// once changes have been quiet for `debounce`.
pub fn watch(engine: Arc<PolicyEngine>, debounce: Duration) -> Result<WatchHandle, EngineError> {
    let dir = engine
        .config()
        .dir
        .clone()
        .ok_or(EngineError::NoDirectory)?;
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            let relevant = event.paths.iter().any(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                // `..data` is the symlink a Kubernetes ConfigMap volume swaps to publish an
                // update: the files were written (into a hidden directory) before, possibly
                // longer than the debounce ago, so the swap itself must trigger a reload.
                name == "..data"
                    || !name.starts_with('.')
                        && (name.ends_with(".rego") || p.extension().is_none())
            });
            if relevant && !event.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| EngineError::Watch(e.to_string()))?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| EngineError::Watch(e.to_string()))?;
    let thread = std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Debounce: wait until no event arrives for `debounce`.
                loop {
                    match rx.recv_timeout(debounce) {
                        Ok(()) => continue,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                // Errors are recorded in the reload status and logged by the engine.
                let _ = engine.reload_from_dir();
            }
        })
        .map_err(|e| EngineError::Watch(e.to_string()))?;
    Ok(WatchHandle {
        watcher: Some(watcher),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use portcullis_core::SystemClock;
    use std::time::Instant;

    #[test]
    fn edits_are_picked_up_and_broken_edits_keep_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.rego");
        std::fs::write(
            &file,
            "package portcullis.policy.p\nimport rego.v1\nallow := true\n",
        )
        .unwrap();
        let cfg = EngineConfig {
            dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let engine = Arc::new(PolicyEngine::open(cfg, Arc::new(SystemClock)).unwrap());
        let handle = watch(engine.clone(), Duration::from_millis(50)).unwrap();
        let v1 = engine.version();
        std::fs::write(
            &file,
            "package portcullis.policy.p\nimport rego.v1\nallow := false\n",
        )
        .unwrap();
        let wait = |cond: &dyn Fn() -> bool| {
            let start = Instant::now();
            while !cond() && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            cond()
        };
        assert!(wait(&|| engine.version() > v1), "reload after an edit");
        let v2 = engine.version();
        std::fs::write(&file, "package portcullis.policy.p\nallow if {\n").unwrap();
        assert!(wait(&|| !engine.reload_status().ok), "broken edit recorded");
        assert_eq!(engine.version(), v2, "last good set kept");
        handle.stop();
    }

    /// A ConfigMap volume update: new files in a hidden directory, then (here: well after
    /// the debounce) the `..data` symlink swap that publishes them.
    #[cfg(unix)]
    #[test]
    fn a_configmap_symlink_swap_long_after_the_new_files_is_picked_up() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let v = |allow: bool| {
            format!("package portcullis.policy.p\nimport rego.v1\nallow := {allow}\n")
        };
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/p.rego"), v(true)).unwrap();
        symlink("..v1", d.join("..data")).unwrap();
        symlink("..data/p.rego", d.join("p.rego")).unwrap();
        let cfg = EngineConfig {
            dir: Some(d.to_path_buf()),
            ..Default::default()
        };
        let engine = Arc::new(PolicyEngine::open(cfg, Arc::new(SystemClock)).unwrap());
        let handle = watch(engine.clone(), Duration::from_millis(50)).unwrap();
        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/p.rego"), v(false)).unwrap();
        // Any reload the new files trigger (inotify may miss files in a brand-new directory)
        // still reads the old set through `..data`. Real time: the swap must come well after
        // the watcher thread's 50 ms debounce (shorter would let that reload pass as the swap's).
        std::thread::sleep(Duration::from_millis(400));
        let v1 = engine.version();
        symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        let start = Instant::now();
        while engine.version() == v1 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(engine.version() > v1, "the swap published the new set");
        handle.stop();
    }
}
