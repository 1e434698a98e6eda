//! Sidecar mode end to end: `[sidecar] agent` attributes loopback clients that send
//! no credentials to one agent, still governed by policy and agent lifecycle.
//! (The non-loopback branch is unit-tested in `src/identity.rs`: this machine's
//! tests may only use loopback addresses.)

use crate::common::*;

const POLICY: &str = r#"package portcullis.policy.sidecar_test

import rego.v1

allow if {
	input.agent.id == "pod_agent"
	input.request.host == "127.0.0.1"
}

deny contains "the pod agent may not call /echo/forbidden" if {
	input.request.path == "/echo/forbidden"
}
"#;

/// The agent's secret; the config holds only its SHA-256.
const SECRET: &str = "pod-agent-secret-0123456789";

fn gateway(port: u16) -> Gateway {
    let hash = sha256_hex(SECRET.as_bytes());
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[port]),
        rest: format!(
            "\n[policy]\ndir = \"{{DIR}}/policies\"\n[sidecar]\nagent = \"pod_agent\"\n\
             [[agents]]\nid = \"pod_agent\"\nsecret_sha256 = \"{hash}\"\n"
        ),
        files: vec![(
            "policies/sidecar.rego".to_owned(),
            POLICY.as_bytes().to_vec(),
        )],
    });
    assert!(gw.banner.contains("sidecar=pod_agent"), "{}", gw.banner);
    gw
}

fn status(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn loopback_client_without_credentials_is_the_sidecar_agent() {
    let origin = Origin::start();
    let gw = gateway(origin.port());
    let proxy = format!("http://{}", gw.proxy);
    let code = |url: &str, extra: &[&str]| {
        let mut args = vec![
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            proxy.as_str(),
        ];
        args.extend_from_slice(extra);
        args.push(url);
        status(&curl(&args))
    };

    // No credentials from 127.0.0.1: attributed to pod_agent and allowed by its policy.
    assert_eq!(code(&origin.url("/echo/ok"), &[]), "200");
    assert_eq!(origin.requests(), 1);
    // Policy still applies to the sidecar identity.
    assert_eq!(code(&origin.url("/echo/forbidden"), &[]), "403");
    assert_eq!(
        origin.requests(),
        1,
        "a denied request never reaches the origin"
    );
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_requests_total",
            &[("agent", "pod_agent"), ("verdict", "allow")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "portcullis_requests_total",
            &[("agent", "pod_agent"), ("verdict", "deny")]
        ),
        1.0
    );

    // Credentials that are sent are checked as usual: a wrong secret is 407, not the sidecar.
    assert_eq!(
        code(
            &origin.url("/echo/ok"),
            &["--proxy-user", "pod_agent:wrong-secret-000000"]
        ),
        "407"
    );
    // The agent's lifecycle applies to the sidecar identity: suspended → 407 (the CLI
    // writes to the store; the gateway picks it up within about a second).
    gw.cli_ok(&["agent", "suspend", "pod_agent"]);
    gw.eventually(
        "suspension applies to the sidecar identity",
        || code(&origin.url("/echo/ok"), &[]),
        |c| c == "407",
    );
    let seen = origin.requests();
    assert_eq!(code(&origin.url("/echo/ok"), &[]), "407");
    assert_eq!(
        origin.requests(),
        seen,
        "a suspended sidecar agent reaches nothing"
    );
}
