//! End-to-end: three gateway processes sharing one PostgreSQL store, as the egress-gateway
//! overlay runs them. An agent created on one replica works on all; a suspension through
//! one is enforced by the others within the 1 s contract (checked as "eventually, within
//! 5 s", and the figure printed; benches measure it properly); a policy promoted through
//! one is enforced by all and survives their restart; `/v1/decisions` on any replica shows
//! every replica's records; PostgreSQL away for 10 s under load loses no record and
//! duplicates none; SIGTERM during an outage loses nothing.
//!
//! Needs `PORTCULLIS_TEST_POSTGRES_URL` (`scripts/test.sh` provides it).

use crate::common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Lets agents reach the local origin.
const ALLOW: &str = r#"package portcullis.policy.local_origin

import rego.v1

allow if input.request.host == "127.0.0.1"
"#;

/// Declared shadow: would refuse `/echo/blocked...` once promoted.
const GATE: &str = r#"package portcullis.policy.gate

import rego.v1

mode := "shadow"

deny contains "path /echo/blocked is closed" if startswith(input.request.path, "/echo/blocked")
"#;

/// The contract is 1 s; the tests wait at most this long (a slow CI machine) and print
/// what they saw.
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);

fn start(replicas: usize, origin: &Origin) -> Shared {
    Shared::start(SharedOpts {
        replicas,
        proxy_lines: format!(
            "allow_unauthenticated = false\n{}",
            loopback_proxy_section(&[origin.port()])
        ),
        rest: "\n[policy]\ndir = \"{DIR}/policies\"\n".to_owned(),
        files: vec![
            (
                "policies/local_origin.rego".into(),
                ALLOW.as_bytes().to_vec(),
            ),
            ("policies/gate.rego".into(), GATE.as_bytes().to_vec()),
        ],
        ..SharedOpts::default()
    })
}

/// Polls `f` every 5 ms until `pred` holds; returns how long it took. Panics after `bound`.
fn within(
    bound: Duration,
    what: &str,
    f: impl Fn() -> u16,
    pred: impl Fn(u16) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let v = f();
        if pred(v) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "{what}: still {v} after {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every record of `agent` as replica `i` lists them (all pages), by path.
fn records_by_path(s: &Shared, i: usize, agent: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let r = s.admin(
            i,
            "GET",
            &format!("/v1/decisions?agent_id={agent}&limit=200&offset={offset}"),
            None,
        );
        assert_eq!(r.status, 200, "{r:?}");
        let v = r.json();
        let page = v["decisions"].as_array().cloned().unwrap_or_default();
        for rec in &page {
            let path = rec["path"].as_str().unwrap_or_default().to_owned();
            let id = rec["id"].as_str().unwrap_or_default().to_owned();
            by_path.entry(path).or_default().push(id);
        }
        offset += page.len();
        if page.is_empty() || offset as u64 >= v["total"].as_u64().unwrap_or(0) {
            return by_path;
        }
    }
}

/// Waits until replica `i` lists a record for every path in `made`, then checks each path
/// has exactly one record, no record id repeats, and nothing else was recorded (the
/// `/echo/warmup` requests, polled until the agent is known, are left out).
fn every_request_recorded_once(s: &Shared, i: usize, agent: &str, made: &[String]) {
    let wanted: BTreeSet<&String> = made.iter().collect();
    assert_eq!(wanted.len(), made.len(), "test paths are unique");
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let mut found = records_by_path(s, i, agent);
        found.retain(|p, _| !p.starts_with("/echo/warmup"));
        if wanted.iter().all(|p| found.contains_key(*p)) || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let missing: Vec<_> = wanted.iter().filter(|p| !found.contains_key(**p)).collect();
    assert!(
        missing.is_empty(),
        "{} records missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let twice: Vec<_> = found.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "recorded twice: {twice:?}");
    let extra: Vec<_> = found.keys().filter(|p| !wanted.contains(p)).collect();
    assert!(
        extra.is_empty(),
        "records of requests never made: {extra:?}"
    );
    let ids: BTreeSet<&String> = found.values().flatten().collect();
    assert_eq!(ids.len(), made.len());
}

#[test]
fn an_agent_created_on_one_replica_works_everywhere_and_a_suspension_reaches_all() {
    let origin = Origin::start();
    let s = start(3, &origin);
    assert!(
        s.gateways[0].banner.contains("store=postgres://"),
        "{}",
        s.gateways[0].banner
    );
    assert!(
        !s.gateways[0].banner.contains(&s.store_url),
        "no password in the banner"
    );

    let secret = s.create_agent(0, "roamer");
    let url = origin.url("/echo/hello");
    for i in [1, 2] {
        let took = within(
            PROPAGATION_BOUND,
            "the new agent on another replica",
            || s.get(i, &url, "roamer", &secret).status,
            |st| st == 200,
        );
        println!("agent created on A usable on replica {i} after {took:?}");
    }

    // Suspended through B: A and C refuse it (407) within the contract.
    let r = s.admin(1, "POST", "/v1/agents/roamer/suspend", None);
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("suspended")),
        "{r:?}"
    );
    for i in [0, 2] {
        let took = within(
            PROPAGATION_BOUND,
            "the suspension on another replica",
            || s.get(i, &url, "roamer", &secret).status,
            |st| st == 407,
        );
        println!("suspension through B enforced by replica {i} after {took:?}");
    }
    let refused = s.get(2, &url, "roamer", &secret);
    assert_eq!(refused.status, 407);
    assert!(refused.header("proxy-authenticate").is_some());
    assert_eq!(
        s.get(1, &url, "roamer", &secret).status,
        407,
        "at once on B itself"
    );

    // Activated through C: usable again everywhere; a rotation through A kills the old
    // secret on B and C.
    assert_eq!(
        s.admin(2, "POST", "/v1/agents/roamer/activate", None)
            .status,
        200
    );
    let r = s.admin(0, "POST", "/v1/agents/roamer/rotate", None);
    assert_eq!(r.status, 200, "{r:?}");
    let fresh = r.json()["secret"].as_str().unwrap_or_default().to_owned();
    for i in [1, 2] {
        within(
            PROPAGATION_BOUND,
            "the rotation",
            || s.get(i, &url, "roamer", &secret).status,
            |st| st == 407,
        );
        within(
            PROPAGATION_BOUND,
            "the new secret",
            || s.get(i, &url, "roamer", &fresh).status,
            |st| st == 200,
        );
    }
    // Any replica lists the agent with the same generation.
    let gens: Vec<Value> = (0..3)
        .map(|i| s.admin(i, "GET", "/v1/agents/roamer", None).json()["generation"].clone())
        .collect();
    assert!(gens.iter().all(|g| g == &gens[0]), "{gens:?}");
}

#[test]
fn a_policy_promoted_through_one_replica_is_enforced_by_all_and_survives_a_restart() {
    let origin = Origin::start();
    let mut s = start(3, &origin);
    let secret = s.create_agent(0, "gated");
    let blocked = origin.url("/echo/blocked/x");
    for i in 0..3 {
        within(
            PROPAGATION_BOUND,
            "the agent",
            || s.get(i, &blocked, "gated", &secret).status,
            |st| st == 200,
        );
    }
    // Shadow: allowed, recorded as would_deny.
    let r = s.admin(
        2,
        "PUT",
        "/v1/policies/gate/mode",
        Some(&json!({"mode": "active"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["mode_override"], "active");
    for i in 0..3 {
        let took = within(
            PROPAGATION_BOUND,
            "the promotion",
            || s.get(i, &blocked, "gated", &secret).status,
            |st| st == 403,
        );
        println!("policy promoted through C enforced by replica {i} after {took:?}");
    }
    let denied = s.get(0, &blocked, "gated", &secret);
    let body = denied.assert_error(403, "policy_denied");
    assert_eq!(body["policy"], "gate");
    assert_eq!(
        s.get(1, &origin.url("/echo/open"), "gated", &secret).status,
        200
    );

    s.restart_all();
    for i in 0..3 {
        assert_eq!(
            s.get(i, &blocked, "gated", &secret).status,
            403,
            "replica {i} after restart"
        );
        let list = s.admin(i, "GET", "/v1/policies", None).json();
        let gate = list["policies"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "gate").cloned())
            .unwrap_or(Value::Null);
        assert_eq!(
            (gate["mode"].as_str(), gate["mode_override"].as_str()),
            (Some("active"), Some("active"))
        );
    }
}

#[test]
fn decisions_on_any_replica_list_the_records_of_all_three() {
    let origin = Origin::start();
    let s = start(3, &origin);
    let secret = s.create_agent(0, "counted");
    let mut made = Vec::new();
    for i in 0..3 {
        within(
            PROPAGATION_BOUND,
            "the agent",
            || {
                s.get(i, &origin.url("/echo/warmup"), "counted", &secret)
                    .status
            },
            |st| st == 200,
        );
    }
    for k in 0..10 {
        for i in 0..3 {
            let path = format!("/echo/r{i}-{k}");
            assert_eq!(s.get(i, &origin.url(&path), "counted", &secret).status, 200);
            made.push(path);
        }
    }
    for i in 0..3 {
        let found = {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let f = records_by_path(&s, i, "counted");
                if made.iter().all(|p| f.contains_key(p)) || Instant::now() > deadline {
                    break f;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        for p in &made {
            assert_eq!(
                found.get(p).map(Vec::len),
                Some(1),
                "replica {i} lists {p} once"
            );
        }
    }

    // The CLI on the same PostgreSQL (PORTCULLIS_STORE_URL): it reads the records of all
    // three replicas, and an agent suspended with it is refused by every replica.
    let out = s.gateways[2].cli_ok(&[
        "audit",
        "query",
        "--agent-id",
        "counted",
        "--limit",
        "200",
        "--format",
        "json",
    ]);
    let q: Value = serde_json::from_str(out.trim()).expect("audit query json");
    let paths: Vec<&str> = q["decisions"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["path"].as_str()).collect())
        .unwrap_or_default();
    for p in &made {
        assert_eq!(
            paths.iter().filter(|x| *x == p).count(),
            1,
            "the CLI lists {p} once: {out}"
        );
    }
    assert!(
        !out.contains(&s.store_url),
        "no store password in CLI output"
    );
    s.gateways[2].cli_ok(&["agent", "suspend", "counted"]);
    for i in 0..3 {
        within(
            PROPAGATION_BOUND,
            "the suspension made with the CLI",
            || {
                s.get(i, &origin.url("/echo/after"), "counted", &secret)
                    .status
            },
            |st| st == 407,
        );
    }
}

#[test]
fn postgres_away_for_ten_seconds_under_load_loses_no_record_and_duplicates_none() {
    let origin = Origin::start();
    let s = start(3, &origin);
    let secret = s.create_agent(0, "steady");
    for i in 0..3 {
        within(
            PROPAGATION_BOUND,
            "the agent",
            || {
                s.get(i, &origin.url("/echo/warmup"), "steady", &secret)
                    .status
            },
            |st| st == 200,
        );
    }
    let mut made: Vec<String> = Vec::new();
    let mut n = 0usize;
    let mut round = |s: &Shared, made: &mut Vec<String>, tag: &str| {
        for i in 0..3 {
            let path = format!("/echo/{tag}-{n}-r{i}");
            n += 1;
            let r = s.get(i, &origin.url(&path), "steady", &secret);
            assert_eq!(r.status, 200, "{tag}: {r:?}");
            made.push(path);
        }
        std::thread::sleep(Duration::from_millis(15));
    };
    for _ in 0..20 {
        round(&s, &mut made, "before");
    }
    // PostgreSQL goes away for 10 s; the gateways keep deciding on what they loaded.
    s.relay.cut();
    let outage = Instant::now();
    let mut degraded = BTreeSet::new();
    while outage.elapsed() < Duration::from_secs(10) && made.len() < 3_000 {
        round(&s, &mut made, "during");
        for i in 0..3 {
            if degraded.contains(&i) {
                continue;
            }
            let r = s.gateways[i].admin_get("/readyz");
            assert_eq!(r.status, 200, "ready (degraded) during the outage: {r:?}");
            if r.json()["status"] == "degraded" {
                degraded.insert(i);
            }
        }
    }
    assert_eq!(degraded.len(), 3, "every replica reported degraded");
    s.relay.restore().expect("restore");
    for _ in 0..20 {
        round(&s, &mut made, "after");
    }
    let during = made.iter().filter(|p| p.contains("during")).count();
    println!(
        "{} requests, {during} of them while PostgreSQL was away",
        made.len()
    );
    every_request_recorded_once(&s, 1, "steady", &made);
    let spooled: f64 = (0..3)
        .map(|i| {
            s.gateways[i].metrics().value(
                "portcullis_audit_spool_records_total",
                &[("result", "spooled")],
            )
        })
        .sum();
    assert!(spooled > 0.0, "the outage's records went through the spool");
    for i in 0..3 {
        let m = s.gateways[i].metrics_until("the spool is empty", |m| {
            m.value("portcullis_audit_spool_bytes", &[]) == 0.0
        });
        assert_eq!(
            m.value(
                "portcullis_audit_records_total",
                &[("sink", "store"), ("result", "dropped")]
            ),
            0.0
        );
        assert_eq!(
            m.value(
                "portcullis_audit_spool_records_total",
                &[("result", "refused")]
            ),
            0.0
        );
    }
}

#[test]
fn sigterm_during_an_outage_loses_nothing() {
    let origin = Origin::start();
    let mut s = start(2, &origin);
    let secret = s.create_agent(0, "leaver");
    within(
        PROPAGATION_BOUND,
        "the agent",
        || {
            s.get(1, &origin.url("/echo/warmup"), "leaver", &secret)
                .status
        },
        |st| st == 200,
    );
    let mut made = Vec::new();
    s.relay.cut();
    for k in 0..40 {
        let path = format!("/echo/leaving-{k}");
        assert_eq!(s.get(1, &origin.url(&path), "leaver", &secret).status, 200);
        made.push(path);
    }
    // SIGTERM with the store away: the queue drains into the spool and the process exits.
    let gw = &mut s.gateways[1];
    gw.sigterm();
    let st = gw.wait_exit(TIMEOUT * 2);
    assert!(st.success(), "exit {st}");
    let spool = gw.dir().join("data/audit-spool.jsonl");
    assert!(
        std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0) > 0,
        "records wait in the spool"
    );
    s.relay.restore().expect("restore");
    // The next start writes them.
    s.gateways[1].start_again();
    every_request_recorded_once(&s, 0, "leaver", &made);
}
