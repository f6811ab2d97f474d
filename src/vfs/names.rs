//! Turning container names into names a directory can hold.

use std::collections::HashSet;

use crate::io::stable_hash;

/// The longest file name the kernel accepts (`NAME_MAX`), in bytes.
pub const NAME_MAX: usize = 255;
/// Extensions up to this many bytes survive shortening, so `x.npy` stays a `.npy`.
const KEPT_EXTENSION: usize = 16;

/// Escapes what a file name cannot be or hold: `/` and NUL become `%2F` and `%00`, and the
/// names `""`, `.` and `..` become `%00`-style escapes of themselves. Names longer than
/// [`NAME_MAX`] bytes are then shortened (see [`shorten`]). A name that needs none of this
/// is given back as it is, without a copy.
pub fn escape(name: String) -> String {
    let escaped = match name.as_str() {
        "" => "%".to_string(),
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ if name.contains(['/', '\0']) => name.replace('/', "%2F").replace('\0', "%00"),
        _ => name,
    };
    shorten(escaped)
}

/// A name of at most [`NAME_MAX`] bytes: a longer one keeps its start (cut on a character
/// boundary), then `~` and 16 hex digits of a hash of the whole name, then its extension.
/// The hash keeps two long names that share their start apart, and is the same on every
/// mount, so paths stay stable.
pub fn shorten(name: String) -> String {
    if name.len() <= NAME_MAX {
        return name;
    }
    let extension = match name.rfind('.') {
        Some(dot) if name.len() - dot <= KEPT_EXTENSION => &name[dot..],
        _ => "",
    };
    let hash = format!("~{:016x}", stable_hash(&[name.as_bytes()]));
    let mut keep = NAME_MAX - hash.len() - extension.len();
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{hash}{extension}", &name[..keep])
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
            .map(|n| shorten(format!("{name}~{n}")))
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
    use proptest::prelude::*;

    #[test]
    fn escapes_what_paths_cannot_hold() {
        assert_eq!(escape("a/b\0c".into()), "a%2Fb%00c");
        assert_eq!(escape("..".into()), "%2E%2E");
        assert_eq!(escape("x.npy".into()), "x.npy");
    }

    #[test]
    fn repeats_get_a_suffix() {
        let mut names = UniqueNames::default();
        assert_eq!(names.claim("a".into()), "a");
        assert_eq!(names.claim("a".into()), "a~2");
        assert_eq!(names.claim("a".into()), "a~3");
    }

    #[test]
    fn long_names_are_cut_with_a_hash_and_keep_their_extension() {
        let long = format!("{}.npy", "a".repeat(4096));
        let short = escape(long.clone());
        assert_eq!(short.len(), NAME_MAX);
        assert!(
            short.ends_with(".npy") && short.starts_with("aaaa"),
            "{short}"
        );
        assert_eq!(escape(long), short, "not deterministic");
        let other = format!("{}b.npy", "a".repeat(4095));
        assert_ne!(escape(other), short);
        assert_eq!(escape("x".repeat(255)), "x".repeat(255));
    }

    #[test]
    fn repeats_of_a_long_name_stay_short() {
        let mut names = UniqueNames::default();
        let long = shorten("é".repeat(300));
        assert_eq!(names.claim(long.clone()), long);
        let second = names.claim(long.clone());
        assert!(second.len() <= NAME_MAX && second != long, "{second}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(256)))]

        #[test]
        fn escaped_names_are_valid_file_names(name in "\\PC{0,400}") {
            let out = escape(name);
            prop_assert!(!out.is_empty() && out.len() <= NAME_MAX);
            prop_assert!(!out.contains('/') && !out.contains('\0'));
            prop_assert!(out != "." && out != "..");
        }
    }
}
