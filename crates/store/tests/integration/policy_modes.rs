//! Policy modes set at run time: stored per policy, listed, cleared, revision bumped only by
//! a change, malformed input refused.

use portcullis_store::{Store, StoreError};
use std::collections::BTreeMap;

crate::both_backends!(
    modes_are_set_listed_and_cleared,
    only_changes_bump_the_revision,
    malformed_names_and_modes_are_refused,
);

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn modes_are_set_listed_and_cleared(s: Store) -> Result<(), StoreError> {
    assert_eq!(s.policy_modes().await?, BTreeMap::new());
    assert!(s.set_policy_mode("egress", Some("shadow"), 10).await?);
    assert!(s.set_policy_mode("baseline", Some("disabled"), 11).await?);
    assert_eq!(
        s.policy_modes().await?,
        map(&[("baseline", "disabled"), ("egress", "shadow")])
    );
    assert!(s.set_policy_mode("egress", Some("active"), 12).await?);
    assert!(s.set_policy_mode("baseline", None, 13).await?);
    assert_eq!(s.policy_modes().await?, map(&[("egress", "active")]));
    Ok(())
}

async fn only_changes_bump_the_revision(s: Store) -> Result<(), StoreError> {
    let r0 = s.revision().await?;
    assert!(s.set_policy_mode("egress", Some("shadow"), 10).await?);
    let r1 = s.revision().await?;
    assert_eq!(r1, r0 + 1);
    assert!(!s.set_policy_mode("egress", Some("shadow"), 11).await?);
    assert!(!s.set_policy_mode("other", None, 12).await?);
    assert_eq!(s.revision().await?, r1, "no change, no bump");
    assert!(s.set_policy_mode("egress", None, 13).await?);
    assert_eq!(s.revision().await?, r1 + 1);
    Ok(())
}

async fn malformed_names_and_modes_are_refused(s: Store) -> Result<(), StoreError> {
    let long = "p".repeat(129);
    for name in ["", "a-b", "a b", "x;DROP TABLE agents", "é", long.as_str()] {
        let e = s.set_policy_mode(name, Some("active"), 1).await.err();
        assert!(
            matches!(e, Some(StoreError::Invalid { .. })),
            "{name:?}: {e:?}"
        );
    }
    for mode in ["", "ACTIVE", "enforce", "shadow "] {
        let e = s.set_policy_mode("egress", Some(mode), 1).await.err();
        assert!(
            matches!(e, Some(StoreError::Invalid { .. })),
            "{mode:?}: {e:?}"
        );
    }
    assert_eq!(s.policy_modes().await?, BTreeMap::new());
    assert_eq!(s.revision().await?, 0);
    Ok(())
}
