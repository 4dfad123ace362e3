//! Nicknames nobody can forge: what a nickname may be made of, and when
//! two names are "the same" for a room.
//!
//! A wanted name is first NFC-normalised (the form it is kept and shown
//! in). It is then refused, each time saying why, unless:
//!
//! - it is 1–[`MAX_NICK`] characters long;
//! - every character is a letter, a decimal digit or a combining mark
//!   that UTS #39 allows in identifiers (Identifier_Status=Allowed: scripts
//!   in current use, no default-ignorable, deprecated or obsolete
//!   characters), or one of [`PUNCTUATION`] (`-`, `_`, `.`); so no control,
//!   format (bidi controls, zero-width characters), whitespace,
//!   private-use, unassigned or symbol characters (such as U+2800 BRAILLE
//!   PATTERN BLANK or the Hangul fillers, which look like nothing);
//! - it starts with a letter or digit, and has at most
//!   [`MAX_MARKS_IN_A_ROW`] combining marks in a row;
//! - it is single-script (UTS #39: Latin with Cyrillic look-alikes is
//!   refused; Han with Hiragana and Katakana is one script, digits and
//!   punctuation go with any);
//! - it is not reserved: anything that reads as `user` followed by digits
//!   only (`User 1` is the form of default names: `user1`, `User_1`,
//!   `Usеr1` with a Cyrillic е, `USER`, `u.s.e.r.0` are all reserved), or
//!   as `wschat` or `error` (plain lines begin `wschat: ` and `error: `),
//!   compared as below with `-`, `_`, `.` left out.
//!
//! Two names are the same when their UTS #39 confusable skeletons are
//! equal, or the skeletons of their case folds are: so `аlice` (Cyrillic
//! а) is `alice`, `ALICE` is `alice`, `rn` is `m`, `0` is `O`, `1` is `l`.
//! A room holds the [`keys`] of each nickname in it (and of those kept for
//! a user reconnecting), and a name whose keys are held is taken.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
use unicode_security::{GeneralSecurityProfile, MixedScript};

use crate::service::PeerId;

/// The longest nickname, in characters (after NFC).
pub const MAX_NICK: usize = 24;

/// The punctuation a nickname may hold besides letters, digits and marks.
pub const PUNCTUATION: [char; 3] = ['-', '_', '.'];

/// The most combining marks one after another.
pub const MAX_MARKS_IN_A_ROW: usize = 4;

/// Words no nickname may read as (besides `user` + digits).
const RESERVED_WORDS: [&str; 2] = ["wschat", "error"];

/// A nickname that passed [`check`]: its NFC form and its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nick {
    pub name: String,
    pub keys: Keys,
}

/// What a name is compared by: its confusable skeleton, and the skeleton
/// of its case fold.
pub type Keys = [String; 2];

/// A case fold (full case mapping: `ß` and `SS` fold alike).
fn fold(s: &str) -> String {
    s.to_uppercase().to_lowercase()
}

fn skeleton(s: &str) -> String {
    unicode_security::skeleton(s).collect()
}

/// The keys of `name` (any string; for a nickname, its NFC form): its
/// skeleton, and the case fold of the skeleton of its case fold (so that
/// `b0b`, whose skeleton is `bOb`, is `bob`).
pub fn keys(name: &str) -> Keys {
    [skeleton(name), folded(name)]
}

/// The second key: case- and confusable-insensitive.
fn folded(name: &str) -> String {
    fold(&skeleton(&fold(name)))
}

fn code(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Why `c` may not be in a nickname, if it may not.
fn refuse_char(c: char) -> Option<String> {
    if PUNCTUATION.contains(&c) {
        return None;
    }
    let category = c.general_category();
    let why = match category.group_of() {
        _ if c.is_control() => "control characters",
        _ if c.is_whitespace() => "spaces",
        _ if category == GeneralCategory::Format => {
            "invisible formatting characters (bidi controls, zero-width characters)"
        }
        _ if category == GeneralCategory::PrivateUse => "private-use characters",
        _ if category == GeneralCategory::Unassigned => "unassigned characters",
        _ if category == GeneralCategory::Surrogate => "surrogates",
        GeneralCategoryGroup::Letter | GeneralCategoryGroup::Mark
            if c.identifier_allowed() =>
        {
            return None
        }
        GeneralCategoryGroup::Number
            if category == GeneralCategory::DecimalNumber && c.identifier_allowed() =>
        {
            return None
        }
        GeneralCategoryGroup::Letter | GeneralCategoryGroup::Mark | GeneralCategoryGroup::Number => {
            return Some(format!(
                "{} is not allowed in a nickname: it is invisible, obsolete or not in current use (UTS #39)",
                code(c)
            ))
        }
        _ => {
            return Some(format!(
                "{} is not allowed in a nickname: only letters, digits, combining marks and - _ . are",
                code(c)
            ))
        }
    };
    Some(format!("a nickname cannot contain {why} ({})", code(c)))
}

/// The group of a category (the crate has it as a free function only).
trait Group {
    fn group_of(self) -> GeneralCategoryGroup;
}

impl Group for GeneralCategory {
    fn group_of(self) -> GeneralCategoryGroup {
        use GeneralCategory::*;
        match self {
            UppercaseLetter | LowercaseLetter | TitlecaseLetter | ModifierLetter | OtherLetter => {
                GeneralCategoryGroup::Letter
            }
            NonspacingMark | SpacingMark | EnclosingMark => GeneralCategoryGroup::Mark,
            DecimalNumber | LetterNumber | OtherNumber => GeneralCategoryGroup::Number,
            _ => GeneralCategoryGroup::Other,
        }
    }
}

fn is_mark(c: char) -> bool {
    c.general_category().group_of() == GeneralCategoryGroup::Mark
}

/// Whether `name` reads as a reserved name (see the module doc).
pub fn is_reserved(name: &str) -> bool {
    let bare: String = name.chars().filter(|c| !PUNCTUATION.contains(c)).collect();
    let bare = folded(&bare);
    if RESERVED_WORDS.iter().any(|w| bare == folded(w)) {
        return true;
    }
    let Some(rest) = bare.strip_prefix(&folded("user")) else {
        return false;
    };
    // What the digits become (`0` is `o`, `1` is `l`).
    let digits = folded("0123456789");
    rest.chars().all(|c| c.is_numeric() || digits.contains(c))
}

/// `name` in NFC.
pub fn normalise(name: &str) -> String {
    name.nfc().collect()
}

/// Checks a wanted nickname: its NFC form and keys, or why it is refused.
pub fn check(wanted: &str) -> Result<Nick, String> {
    let name = normalise(wanted);
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NICK {
        return Err(format!("a nickname is 1-{MAX_NICK} characters"));
    }
    if let Some(why) = name.chars().find_map(refuse_char) {
        return Err(why);
    }
    if name
        .chars()
        .next()
        .is_some_and(|c| PUNCTUATION.contains(&c) || is_mark(c))
    {
        return Err("a nickname starts with a letter or a digit".into());
    }
    let mut run = 0;
    for c in name.chars() {
        run = if is_mark(c) { run + 1 } else { 0 };
        if run > MAX_MARKS_IN_A_ROW {
            return Err(format!(
                "a nickname has at most {MAX_MARKS_IN_A_ROW} combining marks in a row"
            ));
        }
    }
    if !name.as_str().is_single_script() {
        return Err(
            "a nickname cannot mix scripts (such as Latin letters with Cyrillic or Greek look-alikes)"
                .into(),
        );
    }
    if is_reserved(&name) {
        return Err(
            "that name is reserved: names that read as User + digits belong to users without a nickname, and wschat and error to the server"
                .into(),
        );
    }
    let keys = keys(&name);
    Ok(Nick { name, keys })
}

/// Who holds a name in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A user present.
    User(PeerId),
    /// A user who dropped and may come back (the id of its departure).
    Away(u64),
}

/// The nicknames held in one room, by key.
#[derive(Debug, Default)]
pub struct Registry(HashMap<String, Holder>);

impl Registry {
    /// Who holds a name with any of `keys`.
    pub fn holder(&self, keys: &Keys) -> Option<Holder> {
        keys.iter().find_map(|k| self.0.get(k).copied())
    }

    /// Gives the name with `keys` to `holder`.
    pub fn insert(&mut self, keys: &Keys, holder: Holder) {
        for k in keys {
            self.0.insert(k.clone(), holder);
        }
    }

    /// Frees the name with `keys` if `holder` holds it.
    pub fn remove(&mut self, keys: &Keys, holder: Holder) {
        for k in keys {
            if self.0.get(k) == Some(&holder) {
                self.0.remove(k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `b` may take its name beside `a`.
    fn may_sit_beside(a: &str, b: &str) -> bool {
        let a = check(a).expect("a is a valid name");
        let Ok(b) = check(b) else { return false };
        let mut room = Registry::default();
        room.insert(&a.keys, Holder::User(0));
        room.holder(&b.keys).is_none()
    }

    #[test]
    fn confusables_table() {
        // (present, wanted, may the second sit beside the first?)
        let table = [
            ("alice", "аlice", false),      // Cyrillic а
            ("alice", "ALICE", false),      // case
            ("alice", "Alice", false),      // case
            ("alice", "aIice", false),      // capital I for l
            ("alice", "a1ice", false),      // digit 1 for l
            ("mallory", "rnallory", false), // rn for m
            ("bob", "b0b", false),          // zero for o
            ("bob", "bоb", false),          // Cyrillic о
            ("paypal", "pаypаl", false),    // Cyrillic а (mixed script too)
            ("scope", "ѕсоре", false),      // all Cyrillic, one script
            ("straße", "STRASSE", false),   // ß folds to ss
            ("ΟΔΟΣ", "οδος", false),        // Greek case, final sigma
            ("café", "cafe\u{301}", false), // NFD is NFC'd
            ("x_y", "x_y", false),          // the very same
            ("jose", "josé", true),         // an accent is a different name
            ("alice", "alicia", true),      // different
            ("bob", "bobby", true),         // different
            ("ilya", "llya", true),         // i and l stay apart
            ("日本", "日本人", true),       // different
            ("anna", "аnnа", false),        // Cyrillic а twice
            ("kevin", "kеvin", false),      // Cyrillic е
            ("olga", "οlga", false),        // Greek ο
            ("ill", "iII", false),          // capital I for l, twice
        ];
        for (present, wanted, ok) in table {
            assert_eq!(
                may_sit_beside(present, wanted),
                ok,
                "{wanted:?} beside {present:?}"
            );
        }
    }

    #[test]
    fn what_a_nickname_may_be_made_of() {
        for ok in [
            "alice",
            "Ünïcødé_42",
            "bob.smith",
            "x-y",
            "日本語",
            "Привет",
            "مرحبا",
            "नमस्ते",
            "7up",
            &"x".repeat(24),
        ] {
            assert!(check(ok).is_ok(), "{ok:?}: {:?}", check(ok));
        }
        let refused = |name: &str, why: &str| {
            let err = check(name).expect_err(name);
            assert!(err.contains(why), "{name:?}: {err}");
        };
        refused("", "1-24 characters");
        refused(&"x".repeat(25), "1-24 characters");
        refused("a b", "spaces (U+0020)");
        refused("tab\there", "control characters (U+0009)");
        refused("bell\u{7}", "control characters");
        refused("\u{1b}[2J", "control characters (U+001B)");
        refused("User\u{2800}33972", "U+2800 is not allowed");
        refused(
            "bob\u{202e}",
            "formatting characters (bidi controls, zero-width characters) (U+202E)",
        );
        refused("bo\u{200b}b", "formatting characters");
        refused("bo\u{200d}b", "formatting characters");
        refused("a\u{feff}", "formatting characters");
        refused("a\u{e000}", "private-use characters");
        refused("a\u{378}", "unassigned characters");
        refused("\u{3164}", "U+3164 is not allowed");
        refused("a\u{3000}b", "spaces");
        refused("a\u{a0}b", "spaces");
        refused("/root", "U+002F is not allowed");
        refused("<b>", "U+003C is not allowed");
        refused("a:b", "U+003A is not allowed");
        refused("😀", "U+1F600 is not allowed");
        refused("-dash", "starts with a letter or a digit");
        refused(".dot", "starts with a letter or a digit");
        refused(
            "a\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}",
            "combining marks in a row",
        );
        refused("pаypal", "cannot mix scripts");
        assert_eq!(check("cafe\u{301}").unwrap().name, "café", "kept in NFC");
    }

    #[test]
    fn names_like_default_ones_and_the_servers_are_reserved() {
        for name in [
            "User1",
            "user1",
            "USER",
            "User_33972",
            "User.1",
            "u.s.e.r.0",
            "Usеr1",
            "user0O",
            "usero",
            "userl",
            "user٣",
            "wschat",
            "WSChat",
            "error",
            "err.or",
            "user",
        ] {
            let err = check(name).expect_err(name);
            assert!(
                err.contains("reserved") || err.contains("mix scripts"),
                "{name}: {err}"
            );
        }
        for name in ["username", "users", "userx1", "wschat2", "errors", "User1a"] {
            assert!(check(name).is_ok(), "{name}: {:?}", check(name));
        }
    }

    #[test]
    fn the_registry_frees_only_its_holders_names() {
        let mut room = Registry::default();
        let alice = check("alice").unwrap();
        room.insert(&alice.keys, Holder::User(1));
        room.remove(&alice.keys, Holder::User(2));
        assert_eq!(room.holder(&keys("ALICE")), Some(Holder::User(1)));
        room.insert(&alice.keys, Holder::Away(7));
        room.remove(&alice.keys, Holder::Away(7));
        assert!(room.is_empty());
    }
}
