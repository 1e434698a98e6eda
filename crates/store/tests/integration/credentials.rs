//! Provider credentials: sealed at rest, write-only secret, tenant ownership, revisions.

use portcullis_store::{SealKey, Store, StoreError, SEAL_KEY_LEN};
use serde_json::json;

crate::both_backends!(secrets_are_sealed_write_only_and_owned_by_a_tenant);

async fn secrets_are_sealed_write_only_and_owned_by_a_tenant(s: Store) -> Result<(), StoreError> {
    let key = SealKey::from_bytes(&[3; SEAL_KEY_LEN])?;
    let spec = json!({"hosts": ["api.openai.com"], "agents": ["bot"]});
    let rev0 = s.revision().await?;

    // A new credential needs a secret.
    let e = s
        .put_credential("openai_prod", "acme", &spec, None, &key, 10)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid { .. }), "{e}");

    let c = s
        .put_credential(
            "openai_prod",
            "acme",
            &spec,
            Some("sk-SEALED-plaintext"),
            &key,
            10,
        )
        .await?;
    assert!(s.revision().await? > rev0);
    assert_eq!(c.secret(&key)?, "sk-SEALED-plaintext");
    assert!(!format!("{c:?}").contains("sk-SEALED"));

    // An update without a secret keeps it; the spec changes; created_at stays.
    let spec2 = json!({"hosts": ["api.openai.com"], "groups": ["research"]});
    let c2 = s
        .put_credential("openai_prod", "acme", &spec2, None, &key, 20)
        .await?;
    assert_eq!((c2.created_at, c2.updated_at), (10, 20));
    let got = s.get_credential("openai_prod").await?.expect("stored");
    assert_eq!(got.spec, spec2);
    assert_eq!(got.secret(&key)?, "sk-SEALED-plaintext");

    // Another tenant cannot take or delete the name.
    let e = s
        .put_credential("openai_prod", "other", &spec, Some("x"), &key, 30)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert!(!s.delete_credential("openai_prod", "other").await?);

    // Another key opens nothing, and cannot be used to keep the secret either.
    let wrong = SealKey::from_bytes(&[4; SEAL_KEY_LEN])?;
    assert!(got.secret(&wrong).is_err());
    assert!(s
        .put_credential("openai_prod", "acme", &spec, None, &wrong, 40)
        .await
        .is_err());

    s.put_credential(
        "stripe",
        "other",
        &json!({"hosts": ["api.stripe.com"]}),
        Some("rk"),
        &key,
        50,
    )
    .await?;
    let names = |v: Vec<portcullis_store::StoredCredential>| {
        v.into_iter().map(|c| c.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(s.list_credentials(None).await?),
        ["openai_prod", "stripe"]
    );
    assert_eq!(
        names(s.list_credentials(Some("acme")).await?),
        ["openai_prod"]
    );

    let rev = s.revision().await?;
    assert!(s.delete_credential("openai_prod", "acme").await?);
    assert!(s.revision().await? > rev);
    assert!(s.get_credential("openai_prod").await?.is_none());
    assert!(!s.delete_credential("openai_prod", "acme").await?);
    Ok(())
}

#[tokio::test]
async fn the_plaintext_never_reaches_the_database_file() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("p.db");
    let s = Store::connect(&format!("sqlite://{}", db.display())).await?;
    let key = SealKey::from_bytes(&[3; SEAL_KEY_LEN])?;
    let spec = json!({"hosts": ["api.openai.com"]});
    s.put_credential(
        "openai_prod",
        "acme",
        &spec,
        Some("sk-SEALED-plaintext"),
        &key,
        10,
    )
    .await?;
    s.close().await;
    // (SQLite may still be removing its -wal/-shm files: skip what vanished.)
    let mut read = 0;
    for f in std::fs::read_dir(dir.path()).expect("dir").flatten() {
        let Ok(bytes) = std::fs::read(f.path()) else {
            continue;
        };
        read += 1;
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("sk-SEALED-plaintext"),
            "{}",
            f.path().display()
        );
    }
    assert!(read >= 1, "the database file was read");
    let s = Store::connect(&format!("sqlite://{}", db.display())).await?;
    let got = s.get_credential("openai_prod").await?;
    assert_eq!(
        got.map(|c| c.secret(&key)).transpose()?.as_deref(),
        Some("sk-SEALED-plaintext")
    );
    Ok(())
}
