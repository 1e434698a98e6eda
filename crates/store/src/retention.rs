//! Audit upkeep: day partitions created ahead (PostgreSQL) and retention.
//!
//! PostgreSQL keeps one partition per UTC day (`audit_records_pYYYYMMDD`, range of `ts`),
//! created a few days ahead so inserts never wait on DDL; retention drops whole partitions
//! (no row-by-row delete, no table bloat) and deletes, in bounded batches, what the default
//! partition holds past the cut-off. SQLite deletes old rows in bounded batches, each its
//! own short transaction, so gateways and the CLI sharing the file are never blocked long.
//! The per-minute rollups of the removed minutes go with them.
//!
//! Replicas sharing a PostgreSQL run the upkeep under a try-lock: one does the work, the
//! others skip that round.

use crate::backend::Pool;
use crate::error::{Result, StoreError};
use crate::rollup;
use crate::store::Store;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use tracing::{debug, info, warn};

/// One day in Unix milliseconds.
const DAY_MS: i64 = 86_400_000;
/// Day partitions kept ready after today.
pub const PARTITIONS_AHEAD: i64 = 3;
/// Rows deleted per statement (SQLite, and PostgreSQL's default partition).
const DELETE_BATCH: i64 = 5_000;
/// Pause between delete batches, letting other writers in.
const BATCH_PAUSE: Duration = Duration::from_millis(20);
/// Longest wait for the lock a partition drop needs (it waits behind running queries on
/// the audit table; a drop that cannot get it is retried on the next round).
const DROP_LOCK_TIMEOUT: &str = "5s";
/// Session advisory lock of the upkeep ("pcaudit!" in ASCII).
const UPKEEP_LOCK: i64 = 0x7063_6175_6469_7421;
/// Name prefix of the day partitions.
const PARTITION_PREFIX: &str = "audit_records_p";

/// What one [`Store::maintain_audit`] round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditUpkeep {
    /// Day partitions created (PostgreSQL).
    pub partitions_created: u32,
    /// Day partitions dropped by retention (PostgreSQL).
    pub partitions_dropped: u32,
    /// Rows deleted by retention (SQLite; PostgreSQL's default partition).
    pub rows_deleted: u64,
    /// Another replica held the upkeep lock: nothing was done this round.
    pub skipped: bool,
}

impl Store {
    /// Audit upkeep at `now_ms` (Unix ms): on PostgreSQL, creates the day partitions from
    /// yesterday to [`PARTITIONS_AHEAD`] days ahead; with `retention`, removes the records
    /// older than `now_ms - retention` (PostgreSQL: drops the day partitions entirely
    /// older, deletes older rows of the default partition in batches; SQLite: deletes
    /// older rows in batches). Idempotent; run it at start and then periodically.
    pub async fn maintain_audit(
        &self,
        now_ms: i64,
        retention: Option<Duration>,
    ) -> Result<AuditUpkeep> {
        let cutoff = match retention {
            Some(r) => {
                let ms = i64::try_from(r.as_millis())
                    .map_err(|_| StoreError::invalid("audit retention", "longer than the epoch"))?;
                Some(now_ms.saturating_sub(ms))
            }
            None => None,
        };
        match &self.pool {
            Pool::Sqlite(p) => Ok(AuditUpkeep {
                rows_deleted: match cutoff {
                    Some(c) => {
                        let n = delete_sqlite(p, c).await?;
                        for sql in rollup::PRUNE {
                            sqlx::query(sql)
                                .bind(rollup::last_pruned_minute(c))
                                .execute(p)
                                .await?;
                        }
                        n
                    }
                    None => 0,
                },
                ..AuditUpkeep::default()
            }),
            Pool::Postgres(p) => upkeep_postgres(p, now_ms, cutoff).await,
        }
    }
}

async fn delete_sqlite(pool: &SqlitePool, cutoff: i64) -> Result<u64> {
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM audit_records WHERE rowid IN \
             (SELECT rowid FROM audit_records WHERE ts < $1 LIMIT $2)",
        )
        .bind(cutoff)
        .bind(DELETE_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < u64::try_from(DELETE_BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
}

async fn upkeep_postgres(pool: &PgPool, now_ms: i64, cutoff: Option<i64>) -> Result<AuditUpkeep> {
    // A connection of its own, closed at the end: the session lock cannot outlive the round.
    let mut conn = pool.acquire().await?.detach();
    let res = upkeep_locked(&mut conn, now_ms, cutoff).await;
    let _ = conn.close().await;
    res
}

async fn upkeep_locked(
    conn: &mut PgConnection,
    now_ms: i64,
    cutoff: Option<i64>,
) -> Result<AuditUpkeep> {
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(UPKEEP_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(AuditUpkeep {
            skipped: true,
            ..AuditUpkeep::default()
        });
    }
    let mut done = AuditUpkeep::default();
    let today = now_ms.div_euclid(DAY_MS);
    for day in today - 1..=today + PARTITIONS_AHEAD {
        let name = partition_name(day)?;
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await?;
        if exists.is_some() {
            continue;
        }
        let (from, to) = (day * DAY_MS, (day + 1) * DAY_MS);
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF audit_records \
             FOR VALUES FROM ({from}) TO ({to})"
        );
        match sqlx::query(&ddl).execute(&mut *conn).await {
            Ok(_) => {
                done.partitions_created += 1;
                debug!(partition = %name, "audit partition created");
            }
            // E.g. the default partition already holds rows of that day (records far
            // ahead of this clock): they stay there, queryable; the next round retries.
            Err(e) => warn!(partition = %name, error = %e, "audit partition not created"),
        }
    }
    if let Some(cutoff) = cutoff {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_records'::regclass ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        for name in names {
            let Some(day) = partition_day(&name) else {
                continue;
            };
            if (day + 1) * DAY_MS > cutoff {
                continue;
            }
            match drop_partition(conn, &name).await {
                Ok(()) => {
                    done.partitions_dropped += 1;
                    info!(partition = %name, "audit partition dropped (retention)");
                }
                Err(e) => warn!(partition = %name, error = %e, "audit partition not dropped"),
            }
        }
        loop {
            let n = sqlx::query(
                "DELETE FROM audit_records_default WHERE ctid = ANY(ARRAY(\
                 SELECT ctid FROM audit_records_default WHERE ts < $1 LIMIT $2))",
            )
            .bind(cutoff)
            .bind(DELETE_BATCH)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            done.rows_deleted += n;
            if n < u64::try_from(DELETE_BATCH).unwrap_or(u64::MAX) {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
        // Records go by whole days here (those of the default partition excepted): the
        // rollups of the cut-off's own day stay until its partition goes.
        let gone_before = cutoff.div_euclid(DAY_MS) * DAY_MS;
        for sql in rollup::PRUNE {
            sqlx::query(sql)
                .bind(rollup::last_pruned_minute(gone_before))
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(done)
}

async fn drop_partition(conn: &mut PgConnection, name: &str) -> Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// `audit_records_pYYYYMMDD` for `day` (days since the Unix epoch, UTC).
fn partition_name(day: i64) -> Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(day * 86_400)
        .map_err(|e| StoreError::invalid("audit partition day", e.to_string()))?;
    Ok(format!(
        "{PARTITION_PREFIX}{:04}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day()
    ))
}

/// The day (since the Unix epoch) a partition name stands for; `None` for other names.
fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix(PARTITION_PREFIX)?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits.get(0..4)?.parse().ok()?;
    let month: u8 = digits.get(4..6)?.parse().ok()?;
    let day: u8 = digits.get(6..8)?.parse().ok()?;
    let month = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    Some(
        date.midnight()
            .assume_utc()
            .unix_timestamp()
            .div_euclid(86_400),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_others_are_ignored() -> Result<()> {
        // 2024-02-29, a leap day: 19782 days after the epoch.
        assert_eq!(partition_name(19_782)?, "audit_records_p20240229");
        assert_eq!(partition_name(0)?, "audit_records_p19700101");
        for day in [0, 19_782, 19_783, 20_000, 40_000] {
            assert_eq!(partition_day(&partition_name(day)?), Some(day));
        }
        for other in [
            "audit_records_default",
            "audit_records_p2024022",
            "audit_records_p20240230",
            "audit_records_p2024-2-2",
            "audit_records_p202402299",
            "other_p20240229",
        ] {
            assert_eq!(partition_day(other), None, "{other}");
        }
        Ok(())
    }
}
