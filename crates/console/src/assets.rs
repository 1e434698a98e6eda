//! The console's static files, embedded in the binary and served under
//! `/ui/assets/{stem}.{hash}.{ext}`: the name changes whenever the content does, so each
//! answer may be cached for a year (`immutable`). No file is read at run time.

use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    /// Name served, with the content hash.
    pub(crate) name: String,
    /// `Content-Type`.
    pub(crate) content_type: &'static str,
    /// Content.
    pub(crate) body: &'static [u8],
    /// Strong `ETag` (the full content hash, quoted).
    pub(crate) etag: String,
}

/// The embedded files: (stem, extension, content type, content).
const FILES: [(&str, &str, &str, &[u8]); 3] = [
    (
        "htmx",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/htmx-2.0.11.min.js"),
    ),
    (
        "console",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/console.css"),
    ),
    (
        "htmx-license",
        "txt",
        "text/plain; charset=utf-8",
        include_bytes!("../assets/htmx-LICENSE.txt"),
    ),
];

/// Every embedded file, hashed once.
pub(crate) fn all() -> &'static [Asset] {
    static ASSETS: OnceLock<Vec<Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        FILES
            .iter()
            .map(|&(stem, ext, content_type, body)| {
                let digest = Sha256::digest(body);
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                Asset {
                    name: format!("{stem}.{}.{ext}", &hex[..16]),
                    content_type,
                    body,
                    etag: format!("\"{hex}\""),
                }
            })
            .collect()
    })
}

/// The file served as `name`.
pub(crate) fn find(name: &str) -> Option<&'static Asset> {
    all().iter().find(|a| a.name == name)
}

/// The URL of the file whose stem is `stem` (`/ui/assets/console.1a2b….css`).
pub(crate) fn url(stem: &str) -> String {
    all()
        .iter()
        .find(|a| a.name.split('.').next() == Some(stem))
        .map(|a| format!("/ui/assets/{}", a.name))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        let css = url("console");
        assert!(
            css.starts_with("/ui/assets/console.") && css.ends_with(".css"),
            "{css}"
        );
        let name = css.trim_start_matches("/ui/assets/");
        let a = find(name).expect("served");
        assert_eq!(a.content_type, "text/css; charset=utf-8");
        assert!(
            find("console.css").is_none(),
            "only hashed names are served"
        );
        assert!(url("htmx").ends_with(".js"));
        assert!(url("nothing").is_empty());
    }
}
