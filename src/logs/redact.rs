//! Replaces a task's known secret values with [`REDACTED`] in its output streams.
//!
//! The definition of the output is the *one-shot* replacement ([`Redactor::redact_all`]): scan the
//! whole stream left to right; where one or more secrets start, replace the longest one and
//! continue after it; otherwise copy the byte. [`StreamRedactor`] produces exactly that output for
//! any chunking of the stream, including secrets split across two or more chunks, by holding back
//! a carry-over: from the first position where a secret *might* start but the data ends too early
//! to decide. The carry-over is shorter than the longest secret and is flushed by
//! [`StreamRedactor::finish`] at the end of the stream.
//!
//! Choice on short values: values shorter than [`MIN_SECRET_LEN`] (8) bytes are ignored. Redacting
//! a 1- to 7-byte value would shred ordinary output (every `a`, every `true`), and the credentials
//! polydev injects (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `GOOGLE_API_KEY`) are far longer. A
//! value this module ignores is not protected by it; the credentials layer must not rely on
//! redaction for short values. Only exact byte values are matched (no base64 or URL-encoded forms).
//!
//! The secret values are never logged or `Debug`-printed by this module.

use std::sync::Arc;

/// What a secret is replaced with.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// Values shorter than this many bytes are not redacted (see the module docs).
pub const MIN_SECRET_LEN: usize = 8;

/// The set of secret values of one task. Cheap to clone; hands out one [`StreamRedactor`] per
/// output stream.
#[derive(Clone, Default)]
pub struct Redactor {
    patterns: Arc<Patterns>,
}

#[derive(Default)]
struct Patterns {
    /// Distinct values, longest first (so the first full match is the longest).
    secrets: Vec<Vec<u8>>,
    /// `first_byte[b]` is true when some secret starts with byte `b`.
    first_byte: Vec<bool>,
    longest: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.patterns.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for these values; empty and short values (< [`MIN_SECRET_LEN`]) are ignored.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .map(|v| v.as_ref().to_vec())
            .filter(|v| v.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        let mut first_byte = vec![false; 256];
        for s in &secrets {
            first_byte[usize::from(s[0])] = true;
        }
        let longest = secrets.first().map_or(0, Vec::len);
        Redactor {
            patterns: Arc::new(Patterns {
                secrets,
                first_byte,
                longest,
            }),
        }
    }

    /// A redactor that changes nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.patterns.secrets.is_empty()
    }

    /// A fresh per-stream state.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor {
            patterns: Arc::clone(&self.patterns),
            carry: Vec::new(),
        }
    }

    /// The one-shot replacement of a whole stream: the definition streaming must match.
    pub fn redact_all(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let consumed = self.patterns.scan(input, true, &mut out);
        debug_assert_eq!(consumed, input.len());
        out
    }
}

/// What [`Patterns::match_at`] found at one position.
enum MatchAt {
    /// A secret of this length matches and no longer one could.
    Full(usize),
    /// The data ends before a secret starting here could be confirmed or ruled out.
    Undecided,
    None,
}

impl Patterns {
    fn match_at(&self, data: &[u8], at: usize, at_end: bool) -> MatchAt {
        let rest = &data[at..];
        for s in &self.secrets {
            if rest.len() >= s.len() {
                if rest[..s.len()] == s[..] {
                    return MatchAt::Full(s.len());
                }
            } else if !at_end && s.starts_with(rest) {
                // A longer secret may still complete; since secrets are sorted longest first,
                // no full match of a longer one was found before this point.
                return MatchAt::Undecided;
            }
        }
        MatchAt::None
    }

    /// Appends the redacted form of `data` to `out` up to the first undecided position (all of
    /// it when `at_end`); returns how many input bytes were consumed.
    fn scan(&self, data: &[u8], at_end: bool, out: &mut Vec<u8>) -> usize {
        if self.secrets.is_empty() {
            out.extend_from_slice(data);
            return data.len();
        }
        let mut copied_to = 0;
        let mut i = 0;
        while i < data.len() {
            if !self.first_byte[usize::from(data[i])] {
                i += 1;
                continue;
            }
            match self.match_at(data, i, at_end) {
                MatchAt::None => i += 1,
                MatchAt::Full(len) => {
                    out.extend_from_slice(&data[copied_to..i]);
                    out.extend_from_slice(REDACTED);
                    i += len;
                    copied_to = i;
                }
                MatchAt::Undecided => {
                    out.extend_from_slice(&data[copied_to..i]);
                    return i;
                }
            }
        }
        out.extend_from_slice(&data[copied_to..]);
        data.len()
    }
}

/// Redaction state of one output stream.
pub struct StreamRedactor {
    patterns: Arc<Patterns>,
    carry: Vec<u8>,
}

impl StreamRedactor {
    /// Feeds `chunk`, appending to `out` every output byte that is already decided.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.carry.is_empty() {
            let consumed = self.patterns.scan(chunk, false, out);
            self.carry.extend_from_slice(&chunk[consumed..]);
        } else {
            let mut data = std::mem::take(&mut self.carry);
            data.extend_from_slice(chunk);
            let consumed = self.patterns.scan(&data, false, out);
            data.drain(..consumed);
            self.carry = data;
        }
        debug_assert!(self.carry.len() < self.patterns.longest.max(1));
    }

    /// Ends the stream: appends the redacted carry-over to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let data = std::mem::take(&mut self.carry);
        self.patterns.scan(&data, true, out);
    }

    /// How many input bytes are held back, undecided.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Whether this stream redacts nothing (so bytes may be forwarded without copying).
    pub fn is_passthrough(&self) -> bool {
        self.patterns.secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunked(r: &Redactor, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut s = r.stream();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, input.len());
            s.push(&input[start..cut], &mut out);
            start = cut;
        }
        s.push(&input[start..], &mut out);
        s.finish(&mut out);
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn replaces_every_occurrence_and_keeps_the_rest() {
        let r = Redactor::new(["sk-abcdefgh", "sk-abcdefgh", ""]);
        let out = r.redact_all(b"key=sk-abcdefgh; again sk-abcdefghsk-abcdefgh.");
        assert_eq!(out, b"key=[REDACTED]; again [REDACTED][REDACTED].");
    }

    #[test]
    fn short_values_are_ignored_by_design() {
        let r = Redactor::new(["a", "1234567"]);
        assert!(r.is_empty());
        assert_eq!(r.redact_all(b"a 1234567"), b"a 1234567");
    }

    #[test]
    fn the_longest_overlapping_secret_wins() {
        let r = Redactor::new(["abcdefgh", "abcdefghijkl"]);
        assert_eq!(r.redact_all(b"xabcdefghijkly"), b"x[REDACTED]y");
        assert_eq!(chunked(&r, b"xabcdefghijkly", &[5, 9]), b"x[REDACTED]y");
        // The shorter one still matches when the longer does not complete.
        assert_eq!(chunked(&r, b"xabcdefghijz", &[9]), b"x[REDACTED]ijz");
    }

    #[test]
    fn a_secret_split_byte_by_byte_is_caught() {
        let r = Redactor::new(["SECRET-VALUE-123"]);
        let input = b"before SECRET-VALUE-123 after";
        let cuts: Vec<usize> = (0..input.len()).collect();
        assert_eq!(chunked(&r, input, &cuts), b"before [REDACTED] after");
    }

    #[test]
    fn a_prefix_at_the_end_of_the_stream_is_flushed_unchanged() {
        let r = Redactor::new(["SECRET-VALUE"]);
        let mut s = r.stream();
        let mut out = Vec::new();
        s.push(b"tail SECRET-VAL", &mut out);
        assert_eq!(out, b"tail ");
        assert_eq!(s.pending(), 10);
        s.finish(&mut out);
        assert_eq!(out, b"tail SECRET-VAL");
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn debug_does_not_print_values() {
        let r = Redactor::new(["super-secret-value"]);
        assert!(!format!("{r:?}").contains("super"));
    }

    proptest! {
        #[test]
        fn streaming_equals_one_shot_and_leaks_nothing(
            secrets in prop::collection::vec("[a-d]{8,14}", 1..4),
            pieces in prop::collection::vec((any::<bool>(), "[a-e\\n ]{0,12}", 0usize..4), 0..24),
            cuts in prop::collection::vec(0usize..400, 0..12),
        ) {
            let r = Redactor::new(&secrets);
            let mut input = Vec::new();
            for (insert, filler, which) in &pieces {
                input.extend_from_slice(filler.as_bytes());
                if *insert {
                    input.extend_from_slice(secrets[which % secrets.len()].as_bytes());
                }
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            let streamed = chunked(&r, &input, &cuts);
            let one_shot = r.redact_all(&input);
            prop_assert_eq!(&streamed, &one_shot);
            for s in &secrets {
                prop_assert!(!contains(&streamed, s.as_bytes()));
            }
        }
    }
}
