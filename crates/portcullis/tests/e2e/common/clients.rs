//! Real clients as child processes: `curl` and the Python interpreter with `requests`,
//! `websocket-client` and the provider SDKs, with proxy variables cleared.

use super::util::PROXY_ENV;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Runs `curl -sS --max-time 60 ARGS` with proxy variables cleared.
pub fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60"]).args(args);
    for k in PROXY_ENV {
        cmd.env_remove(k);
    }
    cmd.output()
        .expect("run curl (is curl installed? run scripts/test.sh)")
}

/// The Python interpreter for client tests: `PORTCULLIS_TEST_PYTHON`
/// (set by `scripts/test.sh`) or `python3`. Panics when it lacks the clients.
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let py = std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let ok = Command::new(&py)
            .args(["-c", "import requests, websocket"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{py} cannot import `requests` and `websocket` (websocket-client); run the suite \
             through scripts/test.sh, which prepares a venv and sets PORTCULLIS_TEST_PYTHON"
        );
        py
    })
}

/// Runs a Python script with `args`; panics (with its output) unless it exits 0.
/// Returns stdout.
pub fn run_python(script: &str, args: &[String]) -> String {
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).args(args);
    for k in PROXY_ENV {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "python failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}
