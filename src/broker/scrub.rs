//! Keeping the key out of answers: the upstream's status line, headers and body are scrubbed
//! before they reach the task's container.
//!
//! An API can hand back what it was sent: a `301` that repeats the query (the key, in
//! `query-key` mode) in `Location`, an endpoint that reflects request headers, an error message
//! quoting the URL. The broker puts the key into every request, so every answer is checked for
//! it, as it streams.
//!
//! What counts as the key ([`KeyForms`]): the key as the broker sent it and the encodings a
//! server that reflects it is likely to apply — the raw bytes; percent-encoded as the broker
//! writes it in a query (upper-case hex) and with lower-case hex; percent-encoded twice (a URL
//! reflected inside another URL's query); JSON-escaped (with and without `\/`). Keys made only
//! of letters, digits, `-`, `_`, `.` and `~` — every provider's — have one form. A run of at
//! least [`MIN_RUN`] leading bytes of a form (the whole form if shorter) is scrubbed, not only
//! the whole form: a reflection cut short (an error that quotes the first 100 characters of a
//! URL whose path the task padded) would otherwise hand the task whichever prefix it asked for.
//! Transformations beyond encoding (base64, hashing, reversing) are not looked for: those need
//! an upstream working against the broker, and the upstream is the operator's choice.
//!
//! Invariants:
//! - Every byte of such a run is replaced by [`REDACTION`], one for one, so lengths (and
//!   `Content-Length`) stay true and the answer stays well-formed JSON, SSE or URL.
//! - A run split across body frames is found: [`Scrubber`] holds back the longest end of the
//!   data that is still the beginning of a form (at most the form's length − 1 bytes) until the
//!   next frame decides it, and nothing else. Provider keys have no line breaks, so the held
//!   bytes never end a line: a complete SSE event (ended by a blank line) or NDJSON line is never
//!   held back, and no timer is needed to release it. At the end of the body the held bytes
//!   (fewer than [`MIN_RUN`] of a form's start, else already scrubbed) are sent.
//! - The body is never buffered whole. A frame with nothing to scrub and nothing held is passed
//!   on as it is (no copy); the search is `memchr`'s SIMD substring search.
//! - Header values holding a run are scrubbed in place, header names holding one (lower-cased)
//!   are dropped, and trailers are treated like headers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use hyper::body::{Body, Frame, SizeHint};
use memchr::memmem::Finder;
use zeroize::Zeroizing;

/// The byte written over each byte of a key found in an answer.
pub const REDACTION: u8 = b'*';

/// The shortest run of a form's leading bytes that is scrubbed (forms shorter than this are
/// scrubbed whole). Long enough that a provider's public key prefix (`sk-ant-api03-`, 13 bytes)
/// plus text that happens to follow it is almost never taken for the key; short enough that a
/// cut-short reflection leaves the task less than this many bytes, not enough to guess the rest.
pub const MIN_RUN: usize = 16;

/// One way the key can appear in an answer.
struct Form {
    bytes: Zeroizing<Vec<u8>>,
    /// Finds the first `min(MIN_RUN, len)` bytes.
    head: Finder<'static>,
}

/// Every form of one key that an answer must not carry.
pub struct KeyForms {
    forms: Vec<Form>,
}

impl KeyForms {
    /// The forms of `key` (none for an empty key).
    pub fn of(key: &str) -> KeyForms {
        let once_upper = percent_encode(key.as_bytes(), true);
        let candidates = [
            key.as_bytes().to_vec(),
            once_upper.clone(),
            percent_encode(key.as_bytes(), false),
            percent_encode(&once_upper, true),
            json_escape(key, false),
            json_escape(key, true),
        ];
        let mut forms: Vec<Form> = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let candidate = Zeroizing::new(candidate);
            if candidate.is_empty() || forms.iter().any(|f| *f.bytes == *candidate) {
                continue;
            }
            let head = Finder::new(&candidate[..candidate.len().min(MIN_RUN)]).into_owned();
            forms.push(Form {
                bytes: candidate,
                head,
            });
        }
        KeyForms { forms }
    }

    /// How many distinct forms are looked for.
    pub fn len(&self) -> usize {
        self.forms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Call `mark(start, end)` for every run of a form in `data`: at least `MIN_RUN` (or the
    /// whole form) of its leading bytes, extended as far as `data` keeps matching it.
    /// Overlapping runs are all reported. Returns whether any was found.
    fn runs(&self, data: &[u8], mut mark: impl FnMut(usize, usize)) -> bool {
        let mut found = false;
        for form in &self.forms {
            let head = form.head.needle().len();
            let mut from = 0;
            while let Some(at) = form.head.find(&data[from..]) {
                let start = from + at;
                let matched = data[start + head..]
                    .iter()
                    .zip(&form.bytes[head..])
                    .take_while(|(a, b)| a == b)
                    .count();
                mark(start, start + head + matched);
                found = true;
                from = start + 1;
            }
        }
        found
    }

    /// The length of the longest end of `data` that is a proper beginning of a form: the
    /// bytes a run may still continue from.
    fn open_tail(&self, data: &[u8]) -> usize {
        let mut longest = 0;
        for form in &self.forms {
            let window = data.len().saturating_sub(form.bytes.len() - 1);
            for at in memchr::memchr_iter(form.bytes[0], &data[window..]) {
                let tail = data.len() - window - at;
                if tail <= longest {
                    break;
                }
                if form.bytes.starts_with(&data[window + at..]) {
                    longest = tail;
                    break;
                }
            }
        }
        longest
    }

    /// `value` with every run scrubbed, or `None` if it holds none.
    pub fn scrub(&self, value: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        self.runs(value, |start, end| {
            out.get_or_insert_with(|| value.to_vec())[start..end].fill(REDACTION);
        });
        out
    }

    /// Whether a (lower-case) header name holds a run of a form.
    fn in_name(&self, name: &str) -> bool {
        let name = name.as_bytes();
        self.forms.iter().any(|form| {
            let head = form.head.needle().to_ascii_lowercase();
            name.windows(head.len())
                .any(|window| window == head.as_slice())
        })
    }

    /// Scrub every value of `headers` in place; drop headers whose name holds a run.
    pub fn scrub_headers(&self, headers: &mut HeaderMap) {
        if self.forms.is_empty() {
            return;
        }
        let named: Vec<_> = headers
            .keys()
            .filter(|name| self.in_name(name.as_str()))
            .cloned()
            .collect();
        for name in named {
            headers.remove(&name);
        }
        for (_, value) in headers.iter_mut() {
            if let Some(scrubbed) = self.scrub(value.as_bytes()) {
                // The redaction byte is visible ASCII, so the value stays valid.
                *value = HeaderValue::from_bytes(&scrubbed)
                    .unwrap_or_else(|_| HeaderValue::from_static(""));
            }
        }
    }
}

/// `text` percent-encoded as the broker writes a query value: unreserved bytes as they are.
fn percent_encode(text: &[u8], upper: bool) -> Vec<u8> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(text.len());
    for &byte in text {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[(byte >> 4) as usize],
                digits[(byte & 15) as usize],
            ]);
        }
    }
    out
}

/// `text` as the inside of a JSON string; `solidus`: `/` written as `\/`.
fn json_escape(text: &str, solidus: bool) -> Vec<u8> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if solidus => out.push_str("\\/"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// The body scrub as a state machine over frames: push each frame's bytes, send what it
/// returns, and [`Scrubber::finish`] at the end.
pub struct Scrubber {
    forms: Arc<KeyForms>,
    /// The held bytes as received (to find runs that continue into the next frame).
    held_received: Vec<u8>,
    /// The same bytes as they will be sent (runs found so far already scrubbed).
    held_scrubbed: Vec<u8>,
}

impl Scrubber {
    pub fn new(forms: Arc<KeyForms>) -> Scrubber {
        Scrubber {
            forms,
            held_received: Vec::new(),
            held_scrubbed: Vec::new(),
        }
    }

    pub fn forms(&self) -> &KeyForms {
        &self.forms
    }

    /// How many bytes are held back now.
    pub fn held(&self) -> usize {
        self.held_received.len()
    }

    /// Take the next frame's bytes; returns the bytes that can be sent now.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.forms.is_empty() {
            return chunk;
        }
        let received: Bytes = if self.held_received.is_empty() {
            chunk.clone()
        } else {
            let mut joined = BytesMut::with_capacity(self.held_received.len() + chunk.len());
            joined.extend_from_slice(&self.held_received);
            joined.extend_from_slice(&chunk);
            joined.freeze()
        };
        let mut scrubbed: Option<BytesMut> = None;
        let held_scrubbed = &self.held_scrubbed;
        self.forms.runs(&received, |start, end| {
            scrubbed.get_or_insert_with(|| {
                let mut out = BytesMut::with_capacity(received.len());
                out.extend_from_slice(held_scrubbed);
                out.extend_from_slice(&chunk);
                out
            })[start..end]
                .fill(REDACTION);
        });
        let out: Bytes = match scrubbed {
            Some(out) => out.freeze(),
            None if self.held_scrubbed.is_empty() => received.clone(),
            None => {
                let mut out = BytesMut::with_capacity(received.len());
                out.extend_from_slice(&self.held_scrubbed);
                out.extend_from_slice(&chunk);
                out.freeze()
            }
        };
        let keep = self.forms.open_tail(&received);
        let sendable = received.len() - keep;
        self.held_received.clear();
        self.held_received.extend_from_slice(&received[sendable..]);
        self.held_scrubbed.clear();
        self.held_scrubbed.extend_from_slice(&out[sendable..]);
        out.slice(..sendable)
    }

    /// The end of the body: the held bytes, which are no run (or were scrubbed as one).
    pub fn finish(&mut self) -> Bytes {
        self.held_received.clear();
        Bytes::from(std::mem::take(&mut self.held_scrubbed))
    }
}

/// A response body with the key scrubbed out of its data and trailers.
pub struct ScrubbedBody<B> {
    inner: B,
    scrubber: Scrubber,
    inner_ended: bool,
    /// Trailers waiting until the held bytes are sent.
    trailers: Option<HeaderMap>,
}

impl<B> ScrubbedBody<B> {
    pub fn new(inner: B, forms: Arc<KeyForms>) -> Self {
        ScrubbedBody {
            inner,
            scrubber: Scrubber::new(forms),
            inner_ended: false,
            trailers: None,
        }
    }
}

impl<B> Body for ScrubbedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if this.inner_ended {
                let rest = this.scrubber.finish();
                if !rest.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.inner_ended = true,
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.scrubber.push(data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            this.scrubber.forms().scrub_headers(&mut trailers);
                            this.trailers = Some(trailers);
                            // Trailers end a body: send the held bytes, then them.
                            this.inner_ended = true;
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        (self.inner_ended || self.inner.is_end_stream())
            && self.scrubber.held() == 0
            && self.scrubber.held_scrubbed.is_empty()
            && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Scrubbing keeps lengths: what is left is what the upstream has left plus what is held.
        let held = self.scrubber.held_scrubbed.len() as u64;
        if self.inner_ended {
            return SizeHint::with_exact(held);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests;
