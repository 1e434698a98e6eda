//! A relative `sqlite://` path resolves against the working directory (own test binary,
//! since it changes the process's working directory).

use portcullis_core::Agent;
use portcullis_store::Store;

#[tokio::test]
async fn relative_path_is_created_under_the_working_directory() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    if let Err(e) = std::env::set_current_dir(dir.path()) {
        panic!("chdir: {e}");
    }
    let s = match Store::connect("sqlite://data/portcullis.db").await {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    };
    assert!(dir.path().join("data/portcullis.db").is_file());
    assert_eq!(s.describe(), "sqlite://data/portcullis.db");
    assert!(s
        .create_agent(&Agent::new("demo", "default", 1))
        .await
        .is_ok());
    s.close().await;
    let again = match Store::connect("sqlite:data/portcullis.db").await {
        Ok(s) => s,
        Err(e) => panic!("reconnect: {e}"),
    };
    assert!(matches!(again.get_agent("demo").await, Ok(Some(_))));
}
