//! The format of one entry file, `<provider>.cred`: the sealed variables of one
//! (namespace, user, provider).
//!
//! ```text
//! polydev-credentials v1
//! OPENAI_API_KEY <nonce: 12 bytes, base64> <ciphertext ‖ 16-byte tag, base64>
//! ```
//!
//! ASCII text, `\n`-terminated lines, one line per variable, sorted by name, standard base64
//! with padding. The file's identity is its path; it is not repeated inside but bound into every
//! ciphertext (see [`super::sealed`]), so a file copied elsewhere does not open.
//!
//! Invariants: parsing is strict (unknown header, bad name, bad base64, wrong nonce length,
//! a ciphertext shorter than a tag, a duplicate variable or a missing final newline are all
//! errors) and never panics; `parse(render(e)) == e`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::sealed::{NONCE_LEN, Sealed, TAG_LEN};
use crate::credential_model::names::{self, NameKind};

/// The first line of every entry file.
pub const HEADER: &str = "polydev-credentials v1";

/// The sealed variables of one entry, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFile {
    pub values: BTreeMap<String, Sealed>,
}

impl EntryFile {
    /// Parse an entry file; the error says what is wrong (never containing file content).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "it is not text".to_string())?;
        let body = text
            .strip_suffix('\n')
            .ok_or("it does not end with a newline (truncated?)")?;
        let mut lines = body.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(format!("its first line is not {HEADER:?}"));
        }
        let mut values = BTreeMap::new();
        for (index, line) in lines.enumerate() {
            let number = index + 2;
            let fields: Vec<&str> = line.split(' ').collect();
            let [variable, nonce, ciphertext] = fields[..] else {
                return Err(format!("line {number} does not have 3 fields"));
            };
            names::check(NameKind::Variable, variable)
                .map_err(|e| format!("line {number}: {e}"))?;
            let nonce: [u8; NONCE_LEN] = STANDARD
                .decode(nonce)
                .ok()
                .and_then(|n| n.try_into().ok())
                .ok_or_else(|| format!("line {number}: the nonce is not {NONCE_LEN} bytes"))?;
            let ciphertext = STANDARD
                .decode(ciphertext)
                .ok()
                .filter(|c| c.len() >= TAG_LEN)
                .ok_or_else(|| format!("line {number}: the ciphertext is not valid"))?;
            let sealed = Sealed { nonce, ciphertext };
            if values.insert(variable.to_string(), sealed).is_some() {
                return Err(format!("line {number}: {variable} appears twice"));
            }
        }
        Ok(EntryFile { values })
    }

    /// The file's bytes.
    pub fn render(&self) -> Vec<u8> {
        let mut text = String::from(HEADER);
        text.push('\n');
        for (variable, sealed) in &self.values {
            text.push_str(variable);
            text.push(' ');
            text.push_str(&STANDARD.encode(sealed.nonce));
            text.push(' ');
            text.push_str(&STANDARD.encode(&sealed.ciphertext));
            text.push('\n');
        }
        text.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> EntryFile {
        let mut values = BTreeMap::new();
        values.insert(
            "OPENAI_API_KEY".to_string(),
            Sealed {
                nonce: [1; NONCE_LEN],
                ciphertext: vec![2; 40],
            },
        );
        values.insert(
            "A".to_string(),
            Sealed {
                nonce: [3; NONCE_LEN],
                ciphertext: vec![4; TAG_LEN],
            },
        );
        EntryFile { values }
    }

    #[test]
    fn round_trips_in_a_stable_sorted_format() {
        let rendered = String::from_utf8(sample().render()).unwrap();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert!(lines[1].starts_with("A AwMDAwMDAwMDAwMD "), "{rendered}");
        assert!(lines[2].starts_with("OPENAI_API_KEY "), "{rendered}");
        assert_eq!(EntryFile::parse(rendered.as_bytes()).unwrap(), sample());
        assert_eq!(
            EntryFile::parse(format!("{HEADER}\n").as_bytes()).unwrap(),
            EntryFile::default()
        );
    }

    #[test]
    fn rejects_anything_malformed() {
        let good = String::from_utf8(sample().render()).unwrap();
        let nonce = STANDARD.encode([0u8; NONCE_LEN]);
        let ct = STANDARD.encode([0u8; TAG_LEN]);
        for (bad, expect) in [
            (String::new(), "newline"),
            (good.trim_end().to_string(), "newline"),
            (good.replace("v1", "v2"), "first line"),
            (format!("{HEADER}\nA {nonce}\n"), "3 fields"),
            (format!("{HEADER}\nA {nonce} {ct} x\n"), "3 fields"),
            (format!("{HEADER}\na {nonce} {ct}\n"), "invalid variable"),
            (format!("{HEADER}\nA AAAA {ct}\n"), "nonce"),
            (format!("{HEADER}\nA {nonce} AAAA\n"), "ciphertext"),
            (format!("{HEADER}\nA {nonce} !!\n"), "ciphertext"),
            (
                format!("{HEADER}\nA {nonce} {ct}\nA {nonce} {ct}\n"),
                "twice",
            ),
            (format!("{HEADER}\n\n"), "3 fields"),
        ] {
            let err = EntryFile::parse(bad.as_bytes()).unwrap_err();
            assert!(err.contains(expect), "{bad:?}: {err}");
        }
        assert!(EntryFile::parse(b"\xff\xfe\n").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = EntryFile::parse(&bytes);
        }

        #[test]
        fn parse_inverts_render(
            entries in proptest::collection::btree_map(
                "[A-Z_][A-Z0-9_]{0,20}",
                (any::<[u8; NONCE_LEN]>(), proptest::collection::vec(any::<u8>(), TAG_LEN..80)),
                0..5,
            )
        ) {
            let file = EntryFile {
                values: entries
                    .into_iter()
                    .map(|(k, (nonce, ciphertext))| (k, Sealed { nonce, ciphertext }))
                    .collect(),
            };
            prop_assert_eq!(EntryFile::parse(&file.render()).unwrap(), file);
        }
    }
}
