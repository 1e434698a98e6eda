//! Test support (feature `testing`): a fresh PostgreSQL database per test.
//!
//! Tests that need PostgreSQL read a superuser URL from [`TEST_POSTGRES_ENV`]
//! (`scripts/test.sh` starts a throwaway server and sets it). When it is missing they fail,
//! naming the script: a PostgreSQL test never passes by not running.

use sqlx::{Connection, PgConnection};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Environment variable holding a PostgreSQL superuser URL for tests.
pub const TEST_POSTGRES_ENV: &str = "PORTCULLIS_TEST_POSTGRES_URL";

/// The server URL from [`TEST_POSTGRES_ENV`]; panics with how to get one when unset.
pub fn postgres_url() -> String {
    match std::env::var(TEST_POSTGRES_ENV) {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "{TEST_POSTGRES_ENV} is not set: this test needs PostgreSQL. Run it through \
             scripts/test.sh (it starts a throwaway PostgreSQL), or `source \
             scripts/services/postgres.sh` first, or set {TEST_POSTGRES_ENV} to a superuser \
             URL such as postgres://postgres:secret@127.0.0.1:5432/postgres"
        ),
    }
}

/// `url` with its database replaced by `database` (parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[start..].find('/') {
        Some(i) => &base[..start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{database}?{q}"),
        None => format!("{root}/{database}"),
    }
}

/// `url` with its `host:port` replaced by `addr` (user, password, database and parameters
/// kept): the URL of the same database seen through a [`Relay`].
pub fn with_address(url: &str, addr: SocketAddr) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!(
        "{}{}{addr}{}",
        &url[..start],
        userinfo.unwrap_or_default(),
        &rest[end..]
    )
}

/// The `host:port` of a PostgreSQL URL, resolved.
pub fn server_address(url: &str) -> SocketAddr {
    use std::net::ToSocketAddrs;
    let opts: sqlx::postgres::PgConnectOptions = match url.parse() {
        Ok(o) => o,
        Err(e) => panic!("not a PostgreSQL URL: {e}"),
    };
    match (opts.get_host(), opts.get_port()).to_socket_addrs() {
        Ok(mut it) => match it.next() {
            Some(a) => a,
            None => panic!("{} resolves to nothing", opts.get_host()),
        },
        Err(e) => panic!("cannot resolve {}: {e}", opts.get_host()),
    }
}

/// A TCP relay on a loopback port in front of a server, which a test can cut and restore:
/// while cut, the port refuses connections and every relayed connection is closed, which
/// is what its clients see when the server goes down (and comes back on the same address).
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<RelayState>,
}

#[derive(Debug, Default)]
struct RelayState {
    /// Set while cut; the accept loop of the current listener exits when it sees it.
    cut: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    generation: Mutex<u64>,
}

impl Relay {
    /// Starts relaying `127.0.0.1:<free port>` to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let relay = Relay {
            addr,
            upstream,
            state: Arc::default(),
        };
        relay.serve(listener)?;
        Ok(relay)
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting (connections are refused) and closes every relayed connection.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        if let Ok(mut g) = self.state.generation.lock() {
            *g += 1;
        }
        let conns = std::mem::take(
            &mut *self
                .state
                .conns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Let the accept loop see the flag and drop its listener.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Accepts connections again, on the same port.
    pub fn restore(&self) -> io::Result<()> {
        let listener = TcpListener::bind(self.addr)?;
        self.state.cut.store(false, Ordering::SeqCst);
        self.serve(listener)
    }

    fn serve(&self, listener: TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let state = self.state.clone();
        let upstream = self.upstream;
        let generation = *state
            .generation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::thread::spawn(move || loop {
            let current = *state
                .generation
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.cut.load(Ordering::SeqCst) || current != generation {
                return;
            }
            match listener.accept() {
                Ok((client, _)) => {
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    relay_pair(&state, client, server);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        });
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies both ways on two threads; registers both sockets so [`Relay::cut`] closes them.
fn relay_pair(state: &RelayState, client: TcpStream, server: TcpStream) {
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    if let Ok(mut conns) = state.conns.lock() {
        conns.push(c3);
        conns.push(s3);
    }
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    };
    pump(client, s2);
    pump(server, c2);
}

/// A database created for one test and dropped (connections terminated) when this value
/// is dropped, even when the test panics.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a database with a random name on the server of [`TEST_POSTGRES_ENV`].
    pub async fn create() -> TestDatabase {
        let server = postgres_url();
        let name = format!("portcullis_test_{:016x}", rand::random::<u64>());
        let mut conn = match PgConnection::connect(&server).await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to {TEST_POSTGRES_ENV}: {e}"),
        };
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
        {
            panic!("cannot create test database {name}: {e}");
        }
        let _ = conn.close().await;
        let url = with_database(&server, &name);
        TestDatabase { server, name, url }
    }

    /// The URL of the test database (with the server's credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // A runtime of its own on a thread of its own: this may run inside a test's runtime
        // (which cannot block on another future) or outside any.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("test database {} not dropped: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_and_parameters_kept() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "t1"),
            "postgres://u:p@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h:5432/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }

    #[test]
    fn address_is_replaced_and_the_rest_kept() {
        let a = std::net::SocketAddr::from(([127, 0, 0, 1], 6000));
        assert_eq!(
            super::with_address("postgres://u:p@db:5432/x?sslmode=disable", a),
            "postgres://u:p@127.0.0.1:6000/x?sslmode=disable"
        );
        assert_eq!(
            super::with_address("postgres://db/x", a),
            "postgres://127.0.0.1:6000/x"
        );
    }
}
