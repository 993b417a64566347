//! RAGFlow's name de-duplication (`duplicate_name`), shared by datasets and documents.
//!
//! Where this sits: when a dataset is created or a document uploaded, before the row is written.

use std::collections::HashSet;

use ragq_common::db::new_id;

/// RAGFlow's `duplicate_name`: `name` if free, else `stem(1).ext`, `stem(2).ext` … (an existing
/// `(n)` counter is incremented). `taken` holds the names in use, compared case-insensitively.
pub fn free_name(name: &str, taken: &HashSet<String>) -> String {
    let mut current = name.to_string();
    for _ in 0..10_000 {
        if !taken.contains(&current.to_lowercase()) {
            return current;
        }
        // pathlib's suffix: the last ".ext" unless the name starts with its only dot.
        let (stem, ext) = match current.rfind('.') {
            Some(i) if i > 0 && i + 1 < current.len() => (&current[..i], &current[i..]),
            _ => (current.as_str(), ""),
        };
        let (base, n) = match stem.strip_suffix(')').and_then(|s| s.rsplit_once('(')) {
            Some((base, digits))
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (base, digits.parse::<u64>().unwrap_or(0))
            }
            _ => (stem, 0),
        };
        current = format!("{base}({}){ext}", n.saturating_add(1));
    }
    format!("{name}({})", new_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_lowercase()).collect()
    }

    #[test]
    fn free_names_follow_ragflow() {
        assert_eq!(free_name("kb", &taken(&[])), "kb");
        assert_eq!(free_name("kb", &taken(&["KB"])), "kb(1)");
        assert_eq!(free_name("kb", &taken(&["kb", "kb(1)"])), "kb(2)");
        assert_eq!(free_name("a.md", &taken(&["a.md"])), "a(1).md");
        assert_eq!(free_name("a(3).md", &taken(&["a(3).md"])), "a(4).md");
        assert_eq!(free_name(".env", &taken(&[".env"])), ".env(1)");
    }
}
