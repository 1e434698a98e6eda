//! How fast a change made through one replica reaches another replica's data plane, on
//! PostgreSQL (needs `PORTCULLIS_TEST_POSTGRES_URL`: `source scripts/services/postgres.sh`
//! starts a throwaway server).
//!
//! Two replicas (a control plane with its watcher, an agent registry; A also serves the admin
//! API) on one database. Each round suspends an agent with `POST /v1/agents/bot/suspend` on
//! A, then activates it again, and measures from sending the request to A until B's
//! registry (what B's proxy authenticates against) holds the new status. B is watched by a
//! thread polling every 50 µs, so a figure is at most that much late. Prints p50/p90/p99/max
//! over `PROPAGATION_ROUNDS` (default 100) suspensions and as many activations.

use portcullis_admin::{serve, Admin, ControlPlane};
use portcullis_core::{Agent, AgentStatus, SystemClock};
use portcullis_identity::Registry;
use portcullis_store::testing::TestDatabase;
use portcullis_store::{Role, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Longest wait for one change to arrive before the run is declared broken.
const GIVE_UP: Duration = Duration::from_secs(10);
/// How often the observer thread looks at B's registry.
const POLL: Duration = Duration::from_micros(50);

struct Replica {
    registry: Arc<Registry>,
    control: Arc<ControlPlane>,
}

impl Replica {
    async fn start(url: &str, shutdown: &watch::Receiver<bool>) -> Replica {
        let store = match Store::connect(url).await {
            Ok(s) => s,
            Err(e) => panic!("connect: {e}"),
        };
        let registry = Arc::new(Registry::new());
        let control = ControlPlane::new(store, registry.clone(), Arc::new(SystemClock));
        if let Err(e) = control.reload_registry().await {
            panic!("registry load: {e}");
        }
        tokio::spawn({
            let (cp, rx) = (control.clone(), shutdown.clone());
            async move { cp.watch(rx).await }
        });
        Replica { registry, control }
    }
}

/// `POST path` on the admin listener at `addr`; the status code.
async fn post(addr: SocketAddr, path: &str, key: &str) -> u16 {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\
         Authorization: Bearer {key}\r\nContent-Length: 0\r\n\r\n"
    );
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect to admin: {e}"),
    };
    if let Err(e) = s.write_all(request.as_bytes()).await {
        panic!("send: {e}");
    }
    let mut buf = Vec::new();
    match tokio::time::timeout(GIVE_UP, s.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("read: {e}"),
        Err(_) => panic!("no answer from the admin API"),
    }
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"))
}

/// Starts a thread that returns when `registry` holds `status` for `bot`, with the time.
fn observe(registry: Arc<Registry>, status: AgentStatus) -> std::thread::JoinHandle<Instant> {
    std::thread::spawn(move || {
        let start = Instant::now();
        loop {
            if registry.get("bot").is_some_and(|a| a.status == status) {
                return Instant::now();
            }
            if start.elapsed() > GIVE_UP {
                panic!("replica B never saw {status:?}");
            }
            std::thread::sleep(POLL);
        }
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what:<28} n={:<4} p50={:7.2} ms  p90={:7.2} ms  p99={:7.2} ms  max={:7.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or_default()),
    );
}

async fn run(rounds: usize) {
    let db = TestDatabase::create().await;
    let (tx, rx) = watch::channel(false);
    let a = Replica::start(db.url(), &rx).await;
    let b = Replica::start(db.url(), &rx).await;
    let store = a.control.store().clone();
    let key = match store
        .create_api_key("default", Role::Admin, "bench", 1)
        .await
    {
        Ok((_, key)) => key,
        Err(e) => panic!("api key: {e}"),
    };
    let mut bot = Agent::new("bot", "default", 1);
    bot.allowed_scopes = vec!["openai:*:*".into()];
    if let Err(e) = store.create_agent(&bot).await {
        panic!("agent: {e}");
    }
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local_addr: {e}"),
    };
    let admin = Admin::with_control_plane(
        prometheus::Registry::new(),
        Vec::new(),
        rx.clone(),
        a.control.clone(),
    );
    tokio::spawn(serve(listener, admin, rx.clone()));
    let seen = observe(b.registry.clone(), AgentStatus::Active);
    if tokio::task::spawn_blocking(move || seen.join())
        .await
        .is_err()
    {
        panic!("replica B never loaded the agent");
    }

    let (mut suspend, mut activate, mut api) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (action, status, out) in [
            ("suspend", AgentStatus::Suspended, &mut suspend),
            ("activate", AgentStatus::Active, &mut activate),
        ] {
            let seen = observe(b.registry.clone(), status);
            let start = Instant::now();
            let code = post(addr, &format!("/v1/agents/bot/{action}"), &key).await;
            assert_eq!(code, 200, "{action} through A");
            api.push(start.elapsed());
            let at = match tokio::task::spawn_blocking(move || seen.join()).await {
                Ok(Ok(at)) => at,
                _ => panic!("observer failed"),
            };
            out.push(at.saturating_duration_since(start));
        }
    }
    println!("PostgreSQL store, two replicas, {rounds} rounds:");
    report("suspension (A write -> B)", suspend);
    report("activation (A write -> B)", activate);
    report("admin API answer on A", api);
    let _ = tx.send(true);
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    let rounds = std::env::var("PROPAGATION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build a tokio runtime: {e}"),
    };
    rt.block_on(run(rounds));
}
