//! Opening the store: files and directories, URL forms, persistence, two handles on one file.

use portcullis_core::Agent;
use portcullis_store::{Role, Store, StoreError};

fn url_for(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

#[tokio::test]
async fn creates_missing_directories_and_file_in_wal_mode() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("does/not/exist/yet/portcullis.db");
    assert!(!db.parent().is_some_and(|p| p.exists()));
    let s = Store::connect(&url_for(&db)).await?;
    assert!(db.is_file());
    assert_eq!(s.describe(), url_for(&db));
    s.create_agent(&Agent::new("wal_bot", "t", 1)).await?;
    // WAL journal: the write-ahead log sits beside the database while it is open.
    let wal = db.with_file_name("portcullis.db-wal");
    assert!(wal.exists(), "no WAL file at {}", wal.display());
    s.close().await;
    Ok(())
}

#[tokio::test]
async fn data_survives_reopening_and_migrations_run_once() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let url = url_for(&dir.path().join("p.db"));
    let s = Store::connect(&url).await?;
    s.create_agent(&Agent::new("keep_me", "t", 1)).await?;
    s.create_api_key("t", Role::Admin, "k", 1).await?;
    assert_eq!(s.revision().await?, 2);
    s.close().await;

    let s = Store::connect(&url).await?;
    assert!(s.get_agent("keep_me").await?.is_some());
    assert_eq!(s.list_api_keys(None).await?.len(), 1);
    assert_eq!(s.revision().await?, 2);
    Ok(())
}

#[tokio::test]
async fn two_handles_on_one_file_see_each_others_writes() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let url = url_for(&dir.path().join("shared.db"));
    let gateway = Store::connect(&url).await?;
    let cli = Store::connect(&url).await?;

    let seen = gateway.revision().await?;
    cli.create_agent(&Agent::new("from_cli", "t", 1)).await?;
    let now = gateway.revision().await?;
    assert!(now > seen, "gateway did not see the CLI write");
    assert!(gateway.get_agent("from_cli").await?.is_some());

    // A write through the gateway is seen by the CLI handle too.
    let mut a = Agent::new("from_cli", "t", 1);
    a.generation = 2;
    gateway.update_agent(&a, 5).await?;
    assert_eq!(cli.revision().await?, now + 1);
    assert_eq!(
        cli.get_agent("from_cli").await?.map(|a| a.generation),
        Some(2)
    );

    // No write, no change.
    let _ = cli.get_agent("from_cli").await?;
    let _ = cli.list_agents(None).await?;
    assert_eq!(gateway.revision().await?, now + 1);
    Ok(())
}

#[tokio::test]
async fn concurrent_writers_on_two_handles_all_succeed() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = url_for(&dir.path().join("busy.db"));
    let a = Store::connect(&url).await?;
    let b = Store::connect(&url).await?;
    let start = a.revision().await?;
    let mut tasks = Vec::new();
    for (h, s) in [a.clone(), b.clone()].into_iter().enumerate() {
        for i in 0..25 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.create_agent(&Agent::new(format!("w{h}_{i}"), "t", 1))
                    .await?;
                s.create_api_key("t", Role::Viewer, "k", 1)
                    .await
                    .map(|_| ())
            }));
        }
    }
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => panic!("task: {e}"),
        }
    }
    assert_eq!(b.list_agents(None).await?.len(), 50);
    assert_eq!(a.list_api_keys(None).await?.len(), 50);
    assert_eq!(b.revision().await?, start + 100);
    Ok(())
}

#[tokio::test]
async fn memory_store_keeps_data_across_calls_and_is_private(
) -> Result<(), Box<dyn std::error::Error>> {
    let s = Store::connect("sqlite::memory:").await?;
    s.create_agent(&Agent::new("mem_bot", "t", 1)).await?;
    for _ in 0..3 {
        assert!(s.get_agent("mem_bot").await?.is_some());
    }
    let other = Store::connect("sqlite::memory:").await?;
    assert_eq!(other.get_agent("mem_bot").await?, None);
    Ok(())
}

#[tokio::test]
async fn unreachable_postgres_and_garbage_urls_are_refused_clearly() {
    // Nothing listens on port 1: the error names the server, never the password.
    match Store::connect("postgres://portcullis:pw@127.0.0.1:1/portcullis?sslmode=disable").await {
        Err(e @ StoreError::Open { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("postgres://portcullis@127.0.0.1:1/portcullis"),
                "{msg}"
            );
            assert!(!msg.contains("pw"), "{msg}");
        }
        r => panic!("expected an open error, got {r:?}"),
    }
    for bad in [
        "",
        "mysql://x/y",
        "sqlite://",
        "file.db",
        "sqlite://dir/",
        "postgres://u:pw@db:5432",
        "postgresql://u:pw@db:port/p",
    ] {
        assert!(
            matches!(
                Store::connect(bad).await,
                Err(StoreError::InvalidUrl { .. })
            ),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn unusable_directory_is_reported_with_its_path() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // A regular file where a directory is needed.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"x")?;
    match Store::connect(&url_for(&blocker.join("sub/p.db"))).await {
        Err(e @ StoreError::CreateDir { .. }) => {
            assert!(e.to_string().contains("blocker"), "{e}")
        }
        r => panic!("expected CreateDir, got {r:?}"),
    }
    Ok(())
}

/// Many handles opening one fresh file at the same instant: each must get through setting
/// WAL, creating the schema and applying migrations exactly once, whoever wins the race.
/// A multi-threaded runtime and a barrier make the opens truly simultaneous.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_starts_on_a_fresh_file_all_succeed(
) -> Result<(), Box<dyn std::error::Error>> {
    const ROUNDS: usize = 25;
    const HANDLES: usize = 12;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir()?;
        let url = url_for(&dir.path().join(format!("fresh{round}.db")));
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(HANDLES));
        let tasks: Vec<_> = (0..HANDLES)
            .map(|_| {
                let url = url.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let s = Store::connect(&url).await?;
                    // A first write right away, as `serve` and the CLI do.
                    let rev = s.revision().await?;
                    s.close().await;
                    Ok::<u64, StoreError>(rev)
                })
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await? {
                panic!("round {round}: {e}");
            }
        }
        let s = Store::connect(&url).await?;
        assert_eq!(s.revision().await?, 0);
        s.create_agent(&Agent::new("after_race", "t", 1)).await?;
        assert_eq!(s.revision().await?, 1);
        s.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_reported_with_its_url(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a_u8; 8192])?;
    match Store::connect(&url_for(&path)).await {
        Err(e @ (StoreError::Open { .. } | StoreError::MigrateAt { .. })) => {
            assert!(e.to_string().contains("garbage.db"), "{e}")
        }
        r => panic!("expected an open error, got {r:?}"),
    }
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_file_is_private_to_its_owner() -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("private.db");
    let s = Store::connect(&url_for(&path)).await?;
    s.create_agent(&Agent::new("perm_bot", "t", 1)).await?;
    for file in ["private.db", "private.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(file))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    Ok(())
}

#[tokio::test]
async fn connect_existing_refuses_a_missing_file_and_creates_nothing(
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("data/portcullis.db");
    match Store::connect_existing(&url_for(&db)).await {
        Err(e @ StoreError::Missing { .. }) => {
            assert!(e.to_string().contains(&db.display().to_string()), "{e}");
        }
        r => panic!("expected Missing, got {r:?}"),
    }
    assert!(!db.exists());
    assert!(!dir.path().join("data").exists(), "directory created");

    // Once a gateway created it, the same URL opens and sees its data.
    let gw = Store::connect(&url_for(&db)).await?;
    gw.create_agent(&Agent::new("seen_bot", "t", 1)).await?;
    let cli = Store::connect_existing(&url_for(&db)).await?;
    assert!(cli.get_agent("seen_bot").await?.is_some());
    // A directory where the file should be is not a store either.
    let as_dir = dir.path().join("a_dir.db");
    std::fs::create_dir(&as_dir)?;
    assert!(matches!(
        Store::connect_existing(&url_for(&as_dir)).await,
        Err(StoreError::Missing { .. })
    ));
    // The in-memory store has no file to miss.
    assert!(Store::connect_existing("sqlite::memory:").await.is_ok());
    Ok(())
}

#[test]
fn file_path_is_absolute_for_relative_urls() -> Result<(), Box<dyn std::error::Error>> {
    let p = Store::file_path("sqlite://data/portcullis.db")?.ok_or("no path")?;
    assert!(p.is_absolute(), "{}", p.display());
    assert_eq!(p, std::env::current_dir()?.join("data/portcullis.db"));
    assert_eq!(
        Store::file_path("sqlite:///var/lib/p.db")?,
        Some(std::path::PathBuf::from("/var/lib/p.db"))
    );
    assert_eq!(Store::file_path("sqlite::memory:")?, None);
    assert!(Store::file_path("mysql://x").is_err());
    Ok(())
}
