//! The vocabulary of metered model usage: what one request through the credential broker used,
//! and whose task it was. A leaf that the broker's metering (which fills it in), the usage ledger
//! (which stores it) and the metrics (which count it) all use; it names nothing else of the crate.
//!
//! Token counts are the provider's own, per request, mapped onto one set of fields:
//!
//! | field | Anthropic Messages | OpenAI Responses / Chat | Gemini |
//! |---|---|---|---|
//! | `input` | `input_tokens` (excludes cache reads and writes) | `input_tokens` / `prompt_tokens` (includes cached) | `promptTokenCount` (includes cached) |
//! | `output` | `output_tokens` | `output_tokens` / `completion_tokens` (include reasoning) | `candidatesTokenCount` |
//! | `cache_read` | `cache_read_input_tokens` | `…_details.cached_tokens` | `cachedContentTokenCount` |
//! | `cache_write_5m` / `cache_write_1h` | `cache_creation.ephemeral_{5m,1h}_input_tokens` (all of `cache_creation_input_tokens` as 5 m when not split) | 0 | 0 |
//! | `reasoning` | 0 | `output_tokens_details.reasoning_tokens` | `thoughtsTokenCount` (not in `candidatesTokenCount`) |
//!
//! So the fields are comparable within one provider, and a budget counts
//! [`TokenUsage::billable_total`], which adds what each provider bills as separate tokens.
//!
//! Invariants: no prompt or response text is ever put in these types; a [`UsageRecord`]'s
//! `request_id` is unique per request and is what makes storing it idempotent.

use std::time::{Duration, SystemTime};

/// Tokens one request used, as the provider reported them (see the module's table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub reasoning: u64,
}

impl TokenUsage {
    /// Every token the provider bills for this request, counted once: for Anthropic input,
    /// output, cache reads and writes; for OpenAI input (cached included) and output
    /// (reasoning included); for Gemini prompt, candidates and thoughts.
    pub fn billable_total(&self, api: ApiKind) -> u64 {
        match api {
            ApiKind::AnthropicMessages => self
                .input
                .saturating_add(self.output)
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_write_5m)
                .saturating_add(self.cache_write_1h),
            ApiKind::OpenAiResponses | ApiKind::OpenAiChat => {
                self.input.saturating_add(self.output)
            }
            ApiKind::Gemini => self
                .input
                .saturating_add(self.output)
                .saturating_add(self.reasoning),
            ApiKind::Other => self.input.saturating_add(self.output),
        }
    }
}

/// Which API a request spoke, as far as metering is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiKind {
    /// `POST /v1/messages` (streaming or not).
    AnthropicMessages,
    /// `POST /v1/responses`.
    OpenAiResponses,
    /// `POST /v1/chat/completions`.
    OpenAiChat,
    /// `…:generateContent` / `…:streamGenerateContent`.
    Gemini,
    /// Anything else the broker forwarded (model lists, token counts): no usage expected.
    Other,
}

impl ApiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::AnthropicMessages => "anthropic-messages",
            ApiKind::OpenAiResponses => "openai-responses",
            ApiKind::OpenAiChat => "openai-chat",
            ApiKind::Gemini => "gemini",
            ApiKind::Other => "other",
        }
    }
}

/// How sure the recorded usage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageCertainty {
    /// The provider's final usage was read.
    Reported,
    /// The answer ended before its final usage (client gone, upstream cut): the counts are the
    /// last the provider reported, or an estimate from the bytes seen when it reported none.
    Estimated,
    /// No usage could be read (not JSON, malformed, not an API that reports usage).
    Unknown,
}

impl UsageCertainty {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageCertainty::Reported => "reported",
            UsageCertainty::Estimated => "estimated",
            UsageCertainty::Unknown => "unknown",
        }
    }
}

/// Whose task made a request: what the ledger keys rows by and budgets are counted per.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageOwner {
    pub namespace: String,
    /// `None`: a task without a user (the node's shared key).
    pub user_id: Option<String>,
    pub provider: String,
    pub job: String,
    pub alloc_id: String,
    pub task: String,
}

/// One request through the broker, once its answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Unique per request (the broker makes it); storing a record twice stores it once.
    pub request_id: String,
    pub owner: UsageOwner,
    pub api: ApiKind,
    /// The request path as forwarded (no query string: it may hold a key).
    pub path: String,
    /// The upstream's status, or the broker's own answer (403, 408, 429, 502).
    pub status: u16,
    pub started_at: SystemTime,
    /// Upstream time to the first byte of the answer's body; `None` when none came.
    pub time_to_first_byte: Option<Duration>,
    pub duration: Duration,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub tokens: TokenUsage,
    pub certainty: UsageCertainty,
}

/// Where the broker hands each finished request's record: the ledger, the metrics. Called on
/// the request's own task when its answer ends, so an implementation must return at once (queue
/// the record, never wait on a disk or a lock held for long) and must never fail the request:
/// metering never takes a task down.
pub trait UsageSink: Send + Sync {
    fn record(&self, record: UsageRecord);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billable_totals_count_each_provider_s_tokens_once() {
        let usage = TokenUsage {
            input: 10,
            output: 20,
            cache_read: 100,
            cache_write_5m: 1000,
            cache_write_1h: 10_000,
            reasoning: 5,
        };
        assert_eq!(usage.billable_total(ApiKind::AnthropicMessages), 11_130);
        assert_eq!(usage.billable_total(ApiKind::OpenAiResponses), 30);
        assert_eq!(usage.billable_total(ApiKind::OpenAiChat), 30);
        assert_eq!(usage.billable_total(ApiKind::Gemini), 35);
        let huge = TokenUsage {
            input: u64::MAX,
            output: 1,
            ..TokenUsage::default()
        };
        assert_eq!(huge.billable_total(ApiKind::Gemini), u64::MAX);
    }
}
