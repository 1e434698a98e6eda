//! Operator API keys: creation, lookup by hash, listing, revocation, tenant scoping.

use portcullis_store::{sha256_hex, Role, Store, StoreError};

crate::both_backends!(
    created_key_is_found_by_its_hash_only,
    keys_are_unique_and_listed_per_tenant,
    revocation_is_tenant_scoped_idempotent_and_effective,
    creation_bumps_revision_and_validates_labels,
);

async fn created_key_is_found_by_its_hash_only(s: Store) -> Result<(), StoreError> {
    let (rec, key) = s
        .create_api_key("acme", Role::Admin, "ci deploy", 1_000)
        .await?;
    assert!(key.starts_with("pck_"));
    assert_eq!(key.len(), 47);
    assert!(rec.id.starts_with("key_"));
    assert_eq!(rec.key_prefix, &key[..8]);
    assert_eq!(
        (rec.tenant.as_str(), rec.role, rec.name.as_str()),
        ("acme", Role::Admin, "ci deploy")
    );
    assert_eq!(rec.created_at, 1_000);
    assert_eq!(rec.revoked_at, None);

    assert_eq!(
        s.find_api_key_by_hash(&sha256_hex(&key)).await?,
        Some(rec.clone())
    );
    // The plaintext itself, a near miss, an upper-case hash and garbage find nothing.
    assert_eq!(s.find_api_key_by_hash(&key).await?, None);
    let mut near = key.clone();
    near.pop();
    assert_eq!(s.find_api_key_by_hash(&sha256_hex(&near)).await?, None);
    assert_eq!(
        s.find_api_key_by_hash(&sha256_hex(&key).to_uppercase())
            .await?,
        None
    );
    assert_eq!(s.find_api_key_by_hash("' OR 1=1 --").await?, None);
    assert_eq!(s.find_api_key_by_hash("").await?, None);
    Ok(())
}

async fn keys_are_unique_and_listed_per_tenant(s: Store) -> Result<(), StoreError> {
    let (a1, k1) = s.create_api_key("acme", Role::Admin, "one", 1).await?;
    let (a2, k2) = s.create_api_key("acme", Role::Viewer, "two", 2).await?;
    let (g1, _) = s.create_api_key("globex", Role::Admin, "", 3).await?;
    assert_ne!(k1, k2);
    assert_ne!(a1.id, a2.id);
    assert_eq!(
        s.list_api_keys(Some("acme")).await?,
        vec![a1.clone(), a2.clone()]
    );
    assert_eq!(s.list_api_keys(Some("globex")).await?, vec![g1.clone()]);
    assert_eq!(s.list_api_keys(None).await?, vec![a1, a2, g1]);
    assert!(s.list_api_keys(Some("nobody")).await?.is_empty());
    Ok(())
}

async fn revocation_is_tenant_scoped_idempotent_and_effective(s: Store) -> Result<(), StoreError> {
    let (rec, key) = s.create_api_key("acme", Role::Viewer, "dash", 10).await?;
    let hash = sha256_hex(&key);
    let rev = s.revision().await?;

    // Another tenant cannot see, hence cannot revoke, the key.
    assert!(matches!(
        s.revoke_api_key(Some("globex"), &rec.id, 20).await,
        Err(StoreError::NotFound {
            what: "api key",
            ..
        })
    ));
    assert!(matches!(
        s.revoke_api_key(None, "key_0000000000000000", 20).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.revision().await?, rev);
    assert!(s.find_api_key_by_hash(&hash).await?.is_some());

    let revoked = s.revoke_api_key(Some("acme"), &rec.id, 30).await?;
    assert_eq!(revoked.revoked_at, Some(30));
    assert_eq!(s.revision().await?, rev + 1);
    assert_eq!(s.find_api_key_by_hash(&hash).await?, None);

    // Revoking again keeps the first time and writes nothing.
    let again = s.revoke_api_key(None, &rec.id, 40).await?;
    assert_eq!(again.revoked_at, Some(30));
    assert_eq!(s.revision().await?, rev + 1);
    // Listing still shows the revoked key.
    assert_eq!(s.list_api_keys(Some("acme")).await?, vec![revoked]);
    Ok(())
}

async fn creation_bumps_revision_and_validates_labels(s: Store) -> Result<(), StoreError> {
    s.create_api_key("acme", Role::Admin, "a", 1).await?;
    assert_eq!(s.revision().await?, 1);
    for (tenant, name) in [("", "x"), ("acme", "bad\u{7}name"), ("a\nb", "x")] {
        assert!(matches!(
            s.create_api_key(tenant, Role::Admin, name, 1).await,
            Err(StoreError::Invalid { .. })
        ));
    }
    assert!(matches!(
        s.create_api_key("acme", Role::Admin, &"n".repeat(129), 1)
            .await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(s.revision().await?, 1);
    assert_eq!(s.list_api_keys(None).await?.len(), 1);
    Ok(())
}

#[test]
fn roles_parse_and_print() {
    assert_eq!("admin".parse::<Role>().ok(), Some(Role::Admin));
    assert_eq!("viewer".parse::<Role>().ok(), Some(Role::Viewer));
    for bad in ["", "Admin", "root", "viewer "] {
        assert!(bad.parse::<Role>().is_err(), "{bad:?}");
    }
    assert_eq!(Role::Viewer.to_string(), "viewer");
    assert_eq!(
        serde_json::to_string(&Role::Admin).ok().as_deref(),
        Some("\"admin\"")
    );
}
