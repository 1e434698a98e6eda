//! What only the PostgreSQL backend does: migrations under an advisory lock, the schema
//! check of `connect_existing`, the change feed (NOTIFY, resync after a reconnect), writers
//! on several replicas, day partitions and whole-partition retention.

use crate::{ok, postgres};
use portcullis_core::{Agent, AgentSource};
use portcullis_store::testing::TestDatabase;
use portcullis_store::{AuditQuery, AuditRow, Backend, FeedEvent, Store, StoreError};
use sqlx::{Connection, PgConnection};
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
/// Bound of every wait on a notification (nothing asserts how fast it came).
const WAIT: Duration = Duration::from_secs(10);

async fn raw(db: &TestDatabase) -> PgConnection {
    match PgConnection::connect(db.url()).await {
        Ok(c) => c,
        Err(e) => panic!("raw connection: {e}"),
    }
}

fn row(id: &str, ts_ms: i64) -> AuditRow {
    AuditRow {
        id: id.to_owned(),
        ts_ms,
        tenant: "acme".to_owned(),
        agent_id: "bot".to_owned(),
        subagent: Some("helper".to_owned()),
        verdict: "deny".to_owned(),
        policy: Some("baseline".to_owned()),
        policy_revision: None,
        provider: Some("openai".to_owned()),
        model: Some("gpt-4o".to_owned()),
        kind: "http".to_owned(),
        status: Some(403),
        cost_usd_micros: None,
        rollup: None,
        record_json: format!(r#"{{"id":"{id}","ts":{ts_ms}}}"#),
    }
}

#[tokio::test]
async fn replicas_starting_together_apply_each_migration_once() {
    let db = TestDatabase::create().await;
    let opens = (0..6).map(|_| {
        let url = db.url().to_owned();
        tokio::spawn(async move { Store::connect(&url).await })
    });
    let mut stores = Vec::new();
    for h in opens {
        match h.await {
            Ok(Ok(s)) => stores.push(s),
            other => panic!("a replica failed to open the store: {other:?}"),
        }
    }
    assert!(stores.iter().all(|s| s.backend() == Backend::Postgres));
    let mut c = raw(&db).await;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY 1")
            .fetch_all(&mut c)
            .await
            .unwrap_or_default();
    assert_eq!(applied, [1, 2, 3, 4, 5, 6, 7, 8]);
    // They share one database: a write through one is read through another.
    ok(stores[0]
        .create_agent(&Agent::new("shared_bot", "t", 1))
        .await);
    assert!(ok(stores[5].get_agent("shared_bot").await).is_some());
    for s in stores {
        s.close().await;
    }
    let _ = c.close().await;
}

#[tokio::test]
async fn connect_existing_refuses_a_database_without_the_schema() {
    let db = TestDatabase::create().await;
    match Store::connect_existing(db.url()).await {
        Err(e @ StoreError::NoSchema { .. }) => {
            let msg = e.to_string();
            let url = msg.strip_prefix("no Portcullis schema in postgres://");
            let user = url.and_then(|u| u.split_once('@')).map(|(user, _)| user);
            assert!(user.is_some_and(|u| !u.contains(':')), "no password: {msg}");
            assert!(msg.ends_with(&format!("/{}", db.name())), "{msg}");
        }
        r => panic!("expected NoSchema, got {r:?}"),
    }
    // Nothing was created by the refused attempt.
    let mut c = raw(&db).await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap_or(-1);
    assert_eq!(tables, 0);
    let gw = ok(Store::connect(db.url()).await);
    let cli = ok(Store::connect_existing(db.url()).await);
    assert!(cli.describe().starts_with("postgres://"));
    assert!(!cli.describe().contains('?'));
    gw.close().await;
    cli.close().await;
    let _ = c.close().await;
}

#[tokio::test]
async fn the_feed_wakes_a_replica_and_resyncs_after_a_reconnect() {
    let (db, a) = postgres().await;
    let b = ok(Store::connect(db.url()).await);
    let Some(feed) = a.change_feed() else {
        panic!("a PostgreSQL store has a change feed");
    };
    let next = |what: &'static str| {
        let feed = &feed;
        async move {
            match tokio::time::timeout(WAIT, feed.next()).await {
                Ok(ev) => ev,
                Err(_) => panic!("no feed event: {what}"),
            }
        }
    };
    assert_eq!(next("first connect").await, FeedEvent::Resync);
    assert!(feed.is_listening());

    let before = ok(a.revision().await);
    ok(b.create_agent(&Agent::new("from_b", "t", 1)).await);
    assert_eq!(next("a write on replica b").await, FeedEvent::Changed);
    assert_eq!(ok(a.revision().await), before + 1);
    assert!(ok(a.get_agent("from_b").await).is_some());

    // An API-key write and a policy-mode write announce themselves the same way.
    ok(
        b.create_api_key("t", portcullis_store::Role::Viewer, "k", 2)
            .await,
    );
    assert_eq!(next("api key").await, FeedEvent::Changed);
    ok(b.set_policy_mode("baseline", Some("shadow"), 3).await);
    assert_eq!(next("policy mode").await, FeedEvent::Changed);

    // The server drops the feed's connection: the feed reconnects and says "resync".
    let mut c = raw(&db).await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    assert_eq!(killed, [true], "one listening session");
    assert_eq!(next("reconnect").await, FeedEvent::Resync);
    assert!(feed.is_listening());
    ok(b.create_agent(&Agent::new("after_reconnect", "t", 1)).await);
    assert_eq!(
        next("a write after the reconnect").await,
        FeedEvent::Changed
    );

    // An audit insert changes no decision: no wake-up.
    ok(b.insert_audit_batch(&[row("r1", 1)]).await);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), feed.next())
            .await
            .is_err(),
        "audit writes do not wake replicas"
    );
    drop(feed);
    a.close().await;
    b.close().await;
    let _ = c.close().await;
}

#[tokio::test]
async fn writers_on_several_replicas_never_conflict() {
    let (db, a) = postgres().await;
    let b = ok(Store::connect(db.url()).await);
    ok(a.create_agent(&Agent::new("parent", "t", 1)).await);
    // Both replicas upsert the same config agent and register the same sub-agents at once
    // (as replicas starting together and serving the same agent do).
    let mut tasks = Vec::new();
    for (i, s) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut cfg = Agent::new("config_bot", "t", 1);
            cfg.source = AgentSource::Config;
            cfg.groups = vec![format!("g{}", i % 2)];
            s.upsert_agent(&cfg, 10).await?;
            for n in 0..5 {
                s.register_subagent("parent", &format!("sub{n}"), 10)
                    .await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            other => panic!("a concurrent writer failed: {other:?}"),
        }
    }
    let all = ok(a.list_agents(None).await);
    assert_eq!(all.len(), 1 + 5 + 1, "{all:?}");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn records_land_in_day_partitions_and_a_retried_batch_writes_once() {
    let (db, s) = postgres().await;
    let now = 20_000 * DAY_MS + 1_000;
    let up = ok(s.maintain_audit(now, None).await);
    assert_eq!(
        up.partitions_created, 5,
        "yesterday, today and three days ahead"
    );
    assert_eq!(ok(s.maintain_audit(now, None).await).partitions_created, 0);

    let rows: Vec<AuditRow> = (0..10)
        .map(|i| row(&format!("rec{i}"), now + i * 3_600_000))
        .chain([row("ancient", 1_000)])
        .collect();
    assert_eq!(ok(s.insert_audit_batch(&rows).await), 11);
    // The same batch again (a retry after an unclear failure): nothing is duplicated.
    assert_eq!(ok(s.insert_audit_batch(&rows).await), 0);
    let page = ok(s.query_audit(&AuditQuery::default()).await);
    assert_eq!(page.total, 11);

    let mut c = raw(&db).await;
    let placed: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tableoid::regclass::text, COUNT(*) FROM audit_records GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    assert_eq!(
        placed,
        [
            ("audit_records_default".to_owned(), 1),
            ("audit_records_p20241004".to_owned(), 10),
        ]
    );
    s.close().await;
    let _ = c.close().await;
}

#[tokio::test]
async fn retention_drops_whole_day_partitions() {
    let (db, s) = postgres().await;
    let now = 20_000 * DAY_MS + DAY_MS / 2;
    // Partitions for days 19989..=20003.
    for back in (0..=10).rev() {
        ok(s.maintain_audit(now - back * DAY_MS, None).await);
    }
    let rows: Vec<AuditRow> = (19_989..=20_000)
        .map(|d| row(&format!("d{d}"), d * DAY_MS + DAY_MS / 4))
        .collect();
    ok(s.insert_audit_batch(&rows).await);
    // Retention 2 days: the cut-off is noon of day 19998. Days up to 19997 end before it
    // and are dropped whole; day 19998 straddles it and is kept until it is entirely past.
    let done = ok(s
        .maintain_audit(now, Some(Duration::from_secs(2 * 86_400)))
        .await);
    assert_eq!(done.partitions_dropped, 9, "{done:?}");
    assert_eq!(done.rows_deleted, 0, "{done:?}");
    let page = ok(s.query_audit(&AuditQuery::default()).await);
    let mut ids: Vec<String> = page
        .records
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(ids, ["d19998", "d19999", "d20000"]);
    let mut c = raw(&db).await;
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'audit_records'::regclass",
    )
    .fetch_one(&mut c)
    .await
    .unwrap_or(-1);
    // 19998..=20003 and the default partition.
    assert_eq!(left, 7);
    s.close().await;
    let _ = c.close().await;
}
