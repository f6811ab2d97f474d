//! Turning container names into names a directory can hold.

use std::collections::HashSet;

/// Escapes what a file name cannot be or hold: `/` and NUL become `%2F` and `%00`, and the
/// names `""`, `.` and `..` become `%00`-style escapes of themselves.
pub fn escape(name: &str) -> String {
    match name {
        "" => "%".to_string(),
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => name.replace('/', "%2F").replace('\0', "%00"),
    }
}

/// Gives each name in a directory once: a repeat gets `~2`, `~3`, ... appended.
#[derive(Default)]
pub struct UniqueNames {
    seen: HashSet<String>,
}

impl UniqueNames {
    pub fn claim(&mut self, name: String) -> String {
        if self.seen.insert(name.clone()) {
            return name;
        }
        let unique = (2..)
            .map(|n| format!("{name}~{n}"))
            .find(|candidate| !self.seen.contains(candidate))
            .expect("an unused suffix exists");
        log::info!("two entries named {name:?}: the second is shown as {unique:?}");
        self.seen.insert(unique.clone());
        unique
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_paths_cannot_hold() {
        assert_eq!(escape("a/b\0c"), "a%2Fb%00c");
        assert_eq!(escape(".."), "%2E%2E");
        assert_eq!(escape("x.npy"), "x.npy");
    }

    #[test]
    fn repeats_get_a_suffix() {
        let mut names = UniqueNames::default();
        assert_eq!(names.claim("a".into()), "a");
        assert_eq!(names.claim("a".into()), "a~2");
        assert_eq!(names.claim("a".into()), "a~3");
    }
}
