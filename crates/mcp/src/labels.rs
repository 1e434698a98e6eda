//! Bounded tool labels for metrics: a tool keeps its name as a label once a registered server
//! listed it in a `tools/list` answer (up to a cap across servers); any other tool name — what
//! an agent merely asked for — is `other`, so an agent cannot grow the label set.

use std::collections::HashSet;
use std::sync::Mutex;

/// Label of a tool name that is not known.
pub const OTHER: &str = "other";
/// Longest tool name kept as a label.
const MAX_LABEL: usize = 128;

/// The tools seen per server.
#[derive(Debug)]
pub struct ToolLabels {
    max: usize,
    seen: Mutex<HashSet<(String, String)>>,
}

impl ToolLabels {
    /// At most `max` (server, tool) labels.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Remembers the tools `server` listed (while there is room).
    pub fn learn<'a>(&self, server: &str, tools: impl IntoIterator<Item = &'a str>) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        for t in tools {
            if seen.len() >= self.max {
                return;
            }
            if is_label(t) {
                seen.insert((server.to_owned(), t.to_owned()));
            }
        }
    }

    /// The label of `tool` on `server`: its name when the server listed it, else `other`.
    pub fn label(&self, server: &str, tool: &str) -> String {
        let known = self
            .seen
            .lock()
            .map(|s| s.contains(&(server.to_owned(), tool.to_owned())))
            .unwrap_or(false);
        if known {
            tool.to_owned()
        } else {
            OTHER.to_owned()
        }
    }

    /// How many labels are known.
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether no label is known yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn is_label(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_LABEL && t.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_tools_keep_their_name_and_the_set_is_capped() {
        let l = ToolLabels::new(3);
        assert_eq!(l.label("gh", "list_issues"), OTHER);
        l.learn("gh", ["list_issues", "bad name", "", "create_issue"]);
        assert_eq!(l.label("gh", "list_issues"), "list_issues");
        assert_eq!(l.label("fs", "list_issues"), OTHER, "per server");
        assert_eq!(l.label("gh", "bad name"), OTHER);
        l.learn("fs", ["read", "write", "delete"]);
        assert_eq!(l.len(), 3);
        assert_eq!(l.label("fs", "read"), "read");
        assert_eq!(l.label("fs", "write"), OTHER, "over the cap");
        let long = "x".repeat(129);
        l.learn("gh", [long.as_str()]);
        assert_eq!(l.label("gh", &long), OTHER);
    }
}
