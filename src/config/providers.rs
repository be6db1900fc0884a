//! Provider presets: what `provider = "anthropic"` on a route means. Explicit `header`, `format`,
//! `upstream` and `profile` on the route still win.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    OpenRouter,
    OpenAI,
    Anthropic,
    Gemini,
    Azure,
}

impl Provider {
    const ALL: [Self; 5] = [
        Self::OpenRouter,
        Self::OpenAI,
        Self::Anthropic,
        Self::Gemini,
        Self::Azure,
    ];

    /// The provider called `name` in a config (`provider = "..."`) or a profile's prefix.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::OpenRouter => "openrouter",
            Self::OpenAI => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Azure => "azure",
        }
    }

    /// The header the provider reads its key from.
    pub fn header(self) -> &'static str {
        match self {
            Self::OpenRouter | Self::OpenAI => "authorization",
            Self::Anthropic => "x-api-key",
            Self::Gemini => "x-goog-api-key",
            Self::Azure => "api-key",
        }
    }

    pub fn format(self) -> &'static str {
        match self {
            Self::OpenRouter | Self::OpenAI => "Bearer {key}",
            Self::Anthropic | Self::Gemini | Self::Azure => "{key}",
        }
    }

    /// The public API's address; Azure's depends on the user's resource, so it has none.
    pub fn upstream(self) -> Option<&'static str> {
        match self {
            Self::OpenRouter => Some("https://openrouter.ai"),
            Self::OpenAI => Some("https://api.openai.com"),
            Self::Anthropic => Some("https://api.anthropic.com"),
            Self::Gemini => Some("https://generativelanguage.googleapis.com"),
            Self::Azure => None,
        }
    }

    /// Does the provider offer WebSocket endpoints (OpenAI's Responses and Realtime, Azure's
    /// Realtime, Gemini Live)? OpenRouter and Anthropic have none: an upgrade there is answered
    /// 426 at once, so an agent falls back to HTTPS without retrying.
    pub fn websocket(self) -> bool {
        matches!(self, Self::OpenAI | Self::Azure | Self::Gemini)
    }

    /// Headers the provider requires that a client might not send; a client's own value wins.
    pub fn default_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Anthropic => &[("anthropic-version", "2023-06-01")],
            _ => &[],
        }
    }
}
