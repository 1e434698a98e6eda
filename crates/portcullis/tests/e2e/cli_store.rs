//! The CLI never creates a store: run where there is none it fails naming the absolute path
//! it looked at (and creates nothing); pointed at the gateway's store it says which one it
//! uses on stderr.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `portcullis ARGS` in `cwd`, with `env` set and proxy/config variables cleared.
fn run_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.current_dir(cwd).args(args).stdin(Stdio::null());
    for k in [
        "PORTCULLIS_CONFIG",
        "PORTCULLIS_CREDENTIALS_KEY",
        "HTTP_PROXY",
        "HTTPS_PROXY",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run portcullis")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every directory entry under `dir`, for "nothing was created" checks.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every store-backed command, with the arguments it needs.
fn store_commands(input: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["agent", "list"],
        vec!["agent", "create", "billing_bot", "--tenant", "acme"],
        vec!["agent", "show", "billing_bot"],
        vec!["agent", "rotate", "billing_bot"],
        vec!["agent", "suspend", "billing_bot"],
        vec!["agent", "set", "billing_bot", "--mode", "shadow"],
        vec!["token", "--agent", "billing_bot"],
        vec!["apikey", "create", "--tenant", "acme", "--role", "admin"],
        vec!["apikey", "list"],
        vec!["credential", "list"],
        vec![
            "credential",
            "set",
            "openai_prod",
            "--hosts",
            "api.openai.com",
        ],
        vec!["audit", "query"],
        vec!["audit", "tail", "-n", "0"],
        vec!["policy", "eval", "--input", input, "--agent", "billing_bot"],
    ]
}

#[test]
fn store_commands_in_an_empty_directory_fail_naming_the_path_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.json", br#"{"kind":"http"}"#);
    let input = input.display().to_string();
    let before = entries(dir.path());
    let expected = dir
        .path()
        .canonicalize()
        .expect("canonical")
        .join("data/portcullis.db");
    for args in store_commands(&input) {
        let out = run_in(dir.path(), &args, &[]);
        let err = text(&out.stderr);
        // `policy eval` exits 1 for a denial, so it reports errors with 2.
        let want = if args[0] == "policy" { 2 } else { 1 };
        assert_eq!(out.status.code(), Some(want), "{args:?}: {err}");
        assert!(
            err.contains(&format!("no store at {}", expected.display())),
            "{args:?} does not name {}: {err}",
            expected.display()
        );
        for hint in ["--config", "PORTCULLIS_CONFIG", "portcullis serve"] {
            assert!(err.contains(hint), "{args:?}: no hint {hint}: {err}");
        }
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert_eq!(entries(dir.path()), before, "{args:?} created something");
    }
}

#[test]
fn a_config_naming_a_missing_absolute_store_is_refused_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("elsewhere/p.db");
    let cfg = write_file(
        dir.path(),
        "c.toml",
        format!("[store]\nurl = \"sqlite://{}\"\n", db.display()).as_bytes(),
    );
    let cfg = cfg.display().to_string();
    for out in [
        run_in(dir.path(), &["agent", "list", "--config", &cfg], &[]),
        run_in(
            dir.path(),
            &["agent", "list"],
            &[("PORTCULLIS_CONFIG", &cfg)],
        ),
    ] {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&db.display().to_string()), "{err}");
        assert!(!dir.path().join("elsewhere").exists());
    }
}

#[test]
fn with_the_gateways_store_commands_work_and_say_which_store() {
    let origin = Origin::start();
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[origin.port()]),
        ..GatewayOpts::default()
    });
    let store_line = format!(
        "store: sqlite://{}",
        gw.dir()
            .canonicalize()
            .expect("canonical")
            .join("data/portcullis.db")
            .display()
    );
    // From the gateway's directory (its relative store.url resolves there).
    let out = gw.cli(&["agent", "create", "billing_bot", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), store_line);
    let secret = text(&out.stdout)
        .lines()
        .nth(1)
        .expect("secret")
        .trim()
        .to_owned();
    // The agent the CLI created is the gateway's: it authenticates through the proxy.
    gw.eventually(
        "the CLI's agent is known to the gateway",
        || {
            proxy_send(
                gw.proxy,
                "GET",
                &origin.url("/echo"),
                Some(&basic("billing_bot", &secret)),
                &[],
            )
            .status
        },
        |s| *s != 407,
    );
    for args in [
        &["agent", "list"][..],
        &["apikey", "list"][..],
        &["credential", "list"][..],
        &["audit", "query"][..],
        &["token", "--agent", "billing_bot"][..],
    ] {
        let out = gw.cli(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr).trim(), store_line, "{args:?}");
    }

    // From anywhere else, with a config naming the store by absolute path.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let cfg = write_file(
        elsewhere.path(),
        "c.toml",
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[identity]\nsigning_key = \"{}\"\n",
            gw.dir().join("data/portcullis.db").display(),
            gw.dir().join("data/signing.key").display()
        )
        .as_bytes(),
    );
    let cfg = cfg.display().to_string();
    let out = run_in(
        elsewhere.path(),
        &["agent", "show", "billing_bot"],
        &[("PORTCULLIS_CONFIG", &cfg)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"billing_bot\""));
    let out = run_in(
        elsewhere.path(),
        &["token", "--agent", "billing_bot", "--config", &cfg],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(entries(elsewhere.path()), vec!["c.toml".to_owned()]);
}

#[test]
fn token_and_credential_set_never_generate_the_gateways_keys() {
    // A store that exists (made by the library, as a gateway would) but no keys beside it.
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = portcullis_store::Store::connect(&format!(
            "sqlite://{}/data/portcullis.db",
            dir.path().display()
        ))
        .await
        .expect("store");
        let mut a = portcullis_core::Agent::new("billing_bot", "acme", 1);
        a.allowed_scopes = vec!["openai:chat:create".into()];
        s.create_agent(&a).await.expect("agent");
        s.close().await;
    });
    let out = run_in(dir.path(), &["token", "--agent", "billing_bot"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no token signing key at"), "{err}");
    assert!(err.contains("data/signing.key"), "{err}");
    assert!(!dir.path().join("data/signing.key").exists());

    let key_file = dir.path().join("secret.txt");
    std::fs::write(&key_file, "sk-test-0123456789").expect("write");
    let out = run_in(
        dir.path(),
        &[
            "credential",
            "set",
            "openai_prod",
            "--hosts",
            "api.openai.com",
            "--secret-file",
            &key_file.display().to_string(),
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no credentials sealing key at"), "{err}");
    assert!(!dir.path().join("data/credentials.key").exists());
}
