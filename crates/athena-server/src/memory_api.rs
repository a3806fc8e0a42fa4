//! The memory routes' bodies and answers, shaped as the official mem0 client (`mem0ai` 2.2.1)
//! sends and reads them, and their parsing into validated inputs. Each body is read as a JSON
//! object first, so that a mem0 option athena does not support is refused by name (400); the
//! rest is then parsed into its type (422 for a wrong type). The answers are in
//! [`crate::memory_responses`]; docs/MEMORY_API.md maps every field to the bank.

use athena::memory::{Metadata, Scope, SearchOptions, MAX_TOP_K};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::memory_filters::{join_scopes, parse_filters, parse_filters_text, some_scope};

/// Most messages in one add.
pub const MAX_ADD_MESSAGES: usize = 256;
/// `page_size` when a listing gives none.
pub const DEFAULT_PAGE_SIZE: u64 = 100;
/// Largest `page_size`.
pub const MAX_PAGE_SIZE: u64 = 1000;
/// `top_k` when a search gives none.
pub const DEFAULT_TOP_K: usize = 10;

/// mem0's `filters`: `user_id`, `agent_id`, `run_id`, `metadata` (search only) and `AND`.
pub type Filters = Map<String, Value>;

/// A message's content: a string, or a list of parts of which the text ones count.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`), joined by new lines.
    Parts(Vec<MessagePart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MessagePart {
    /// The part's type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message of an add.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MemoryMessage {
    /// `user`, `assistant`, `system`, ...; each `user` message is stored as a fact, the others
    /// are context only.
    pub role: String,
    /// What was said.
    pub content: MessageContent,
    /// The speaker's name (accepted, not stored).
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v3/memories/add/`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MemoryAddRequest {
    /// The conversation; each user message becomes a fact.
    pub messages: Vec<MemoryMessage>,
    /// Whose memories: `user_id`, `agent_id` and/or `run_id`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Filters>,
    /// The user, beside `filters` (mem0's older spelling); must agree with `filters`.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent, beside `filters`.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The run, beside `filters`.
    #[serde(default)]
    pub run_id: Option<String>,
    /// A JSON object stored with every memory added.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// mem0's fact extraction by the language model (mem0's default: true). Not supported
    /// yet: give `false`, which stores each user message as a fact.
    #[serde(default)]
    pub infer: Option<bool>,
    /// athena's own: whether the trained action head decides ADD, UPDATE, DELETE or NONE
    /// for each fact. Default: when the server has a trained head (`--head`); `false`
    /// always adds a fact the scope does not hold yet.
    #[serde(default)]
    pub use_head: Option<bool>,
}

/// `POST /v3/memories/` (mem0's `get_all`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MemoryListRequest {
    /// Whose memories: `user_id`, `agent_id` and/or `run_id`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Filters>,
    /// mem0's: athena's memories never expire, so either value lists the same.
    #[serde(default)]
    pub show_expired: Option<bool>,
    /// mem0's: athena keeps one version of each memory, so either value lists the same.
    #[serde(default)]
    pub latest_only: Option<bool>,
}

/// `POST /v3/memories/search/`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MemorySearchRequest {
    /// What to look for.
    pub query: String,
    /// Whose memories, and `metadata` values they must hold.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Filters>,
    /// How many memories at most (1 to 1000; default 10).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Leave out memories whose cosine similarity to the query is below this.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// mem0's reranker: only `false` (athena ranks by fused retrieval).
    #[serde(default)]
    pub rerank: Option<bool>,
    /// mem0's keyword search: athena's ranking always fuses full-text matches (unless the
    /// server runs with `--text-weight 0`), so only `true`.
    #[serde(default)]
    pub keyword_search: Option<bool>,
    /// mem0's: athena's memories never expire, so either value finds the same.
    #[serde(default)]
    pub show_expired: Option<bool>,
    /// mem0's: athena keeps one version of each memory, so either value finds the same.
    #[serde(default)]
    pub latest_only: Option<bool>,
}

/// `PUT /v1/memories/{memory_id}/`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MemoryUpdateRequest {
    /// The memory's new text (re-encoded; an UPDATE in its history).
    #[serde(default)]
    pub text: Option<String>,
    /// Keys to set in the memory's metadata; the others stay.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// mem0's: athena's memories never expire, so only `null`.
    #[serde(default)]
    pub expiration_date: Option<String>,
}

/// The caller's scope in the query string: every memory route reads it, and the routes on
/// one memory need it, since the mem0 client sends no scope with a memory id. Give it as
/// default query parameters of the client's httpx client (docs/MEMORY_API.md shows how).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    /// The caller's user.
    pub user_id: Option<String>,
    /// The caller's agent.
    pub agent_id: Option<String>,
    /// The caller's run.
    pub run_id: Option<String>,
    /// mem0's filters, as JSON or as the Python literal the mem0 client writes.
    pub filters: Option<String>,
}

/// [`ScopeQuery`] and the page of a listing.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The caller's user.
    pub user_id: Option<String>,
    /// The caller's agent.
    pub agent_id: Option<String>,
    /// The caller's run.
    pub run_id: Option<String>,
    /// mem0's filters, as JSON or as the Python literal the mem0 client writes.
    pub filters: Option<String>,
    /// The page, from 1 (default 1).
    #[param(minimum = 1)]
    pub page: Option<u64>,
    /// Memories a page (1 to 1000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u64>,
}

/// [`ScopeQuery`] and mem0's `delete_linked`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// The caller's user.
    pub user_id: Option<String>,
    /// The caller's agent.
    pub agent_id: Option<String>,
    /// The caller's run.
    pub run_id: Option<String>,
    /// mem0's filters, as JSON or as the Python literal the mem0 client writes.
    pub filters: Option<String>,
    /// mem0's "also delete the memories this one superseded": athena links no memories, so
    /// there is never more to delete.
    pub delete_linked: Option<bool>,
}

/// The scope query parameters give, if any.
fn query_scope(
    user_id: &Option<String>,
    agent_id: &Option<String>,
    run_id: &Option<String>,
    filters: Option<&str>,
) -> Result<Option<Scope>, ApiError> {
    let given = Scope {
        user_id: user_id.clone(),
        agent_id: agent_id.clone(),
        run_id: run_id.clone(),
    };
    let scope = match filters {
        Some(text) => {
            let f = parse_filters_text(text)?;
            if !f.metadata.is_empty() {
                return Err(ApiError::bad_request(
                    "filters",
                    "metadata filters are supported in a search's body only",
                ));
            }
            join_scopes(&given, &f.scope)?
        }
        None => given,
    };
    Ok(some_scope(scope))
}

impl ScopeQuery {
    /// The scope the query gives, if any.
    pub fn scope(&self) -> Result<Option<Scope>, ApiError> {
        query_scope(
            &self.user_id,
            &self.agent_id,
            &self.run_id,
            self.filters.as_deref(),
        )
    }
}

impl DeleteQuery {
    /// The scope the query gives, if any.
    pub fn scope(&self) -> Result<Option<Scope>, ApiError> {
        query_scope(
            &self.user_id,
            &self.agent_id,
            &self.run_id,
            self.filters.as_deref(),
        )
    }
}

impl PageQuery {
    /// The scope the query gives, if any.
    pub fn scope(&self) -> Result<Option<Scope>, ApiError> {
        query_scope(
            &self.user_id,
            &self.agent_id,
            &self.run_id,
            self.filters.as_deref(),
        )
    }

    /// The page (from 1) and its size, checked.
    pub fn page(&self) -> Result<(u64, u64), ApiError> {
        let page = self.page.unwrap_or(1);
        let size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if page == 0 || page > u64::MAX / MAX_PAGE_SIZE {
            return Err(ApiError::bad_request(
                "page",
                format!("`page` must be at least 1 (and sane), got {page}"),
            ));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&size) {
            return Err(ApiError::bad_request(
                "page_size",
                format!("`page_size` must be 1 to {MAX_PAGE_SIZE}, got {size}"),
            ));
        }
        Ok((page, size))
    }
}

/// A validated add.
#[derive(Debug, Clone)]
pub struct AddInput {
    /// The scope given in the body (checked against the query's by the route).
    pub scope: Option<Scope>,
    /// The conversation: each message's role and text.
    pub messages: Vec<(String, String)>,
    /// Whether the caller asks mem0's fact extraction by the language model (mem0's
    /// default).
    pub infer: bool,
    /// Stored with every memory added.
    pub metadata: Metadata,
    /// The caller's choice about the action head.
    pub use_head: Option<bool>,
}

impl AddInput {
    /// The facts an add without inference stores: the text of each user message; 400 when
    /// there is none.
    pub fn user_facts(&self) -> Result<Vec<String>, ApiError> {
        let facts: Vec<String> = self
            .messages
            .iter()
            .filter(|(role, _)| role == "user")
            .map(|(_, text)| text.clone())
            .collect();
        if facts.is_empty() {
            return Err(ApiError::bad_request(
                "messages",
                "no message has the role `user`: each user message is stored as a fact",
            ));
        }
        Ok(facts)
    }
}

/// A validated search.
#[derive(Debug, Clone)]
pub struct SearchInput {
    /// The scope given in the body.
    pub scope: Option<Scope>,
    /// The query text.
    pub query: String,
    /// Everything but the scope (filled by the route).
    pub options: SearchOptions,
}

/// A validated update.
#[derive(Debug, Clone)]
pub struct UpdateInput {
    /// The new text.
    pub text: Option<String>,
    /// Keys to set in the metadata.
    pub metadata: Option<Metadata>,
}

/// mem0 options athena does not support, with why; a body that gives one is a 400.
const UNSUPPORTED_OPTIONS: [(&str, &str); 14] = [
    ("app_id", "athena's scopes are user_id, agent_id and run_id"),
    ("org_id", "athena has no organizations"),
    ("project_id", "athena has no projects"),
    ("custom_categories", "athena does not categorize memories"),
    ("categories", "athena does not categorize memories"),
    (
        "custom_instructions",
        "fact extraction's instructions are the server's (--memory-extraction-prompt)",
    ),
    (
        "agent_custom_instructions",
        "fact extraction's instructions are the server's (--memory-extraction-prompt)",
    ),
    (
        "structured_data_schema",
        "fact extraction answers {\"facts\": [string]} only",
    ),
    (
        "timestamp",
        "athena stamps memories with the time they are written",
    ),
    ("expiration_date", "athena's memories never expire"),
    ("start_date", "athena does not filter by date"),
    ("end_date", "athena does not filter by date"),
    ("reference_date", "athena does not filter by date"),
    ("fields", "athena answers every field"),
];

/// Parses `body` into `T` after refusing the keys `T` does not know: a mem0 option athena
/// does not support is named with why, any other key as unknown.
fn typed<T: DeserializeOwned>(mut body: Map<String, Value>, known: &[&str]) -> Result<T, ApiError> {
    // A field given as `null` is a field left out, as the mem0 client leaves out `None`s.
    body.retain(|_, v| !v.is_null());
    if let Some(key) = body.keys().find(|k| !known.contains(&k.as_str())) {
        let msg = match UNSUPPORTED_OPTIONS.iter().find(|(k, _)| *k == key.as_str()) {
            Some((_, why)) => format!("`{key}` is not supported: {why}"),
            None => format!("unknown field `{key}`; the fields are {}", known.join(", ")),
        };
        return Err(ApiError::bad_request(key, msg));
    }
    serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::unprocessable(format!("invalid request: {e}")))
}

/// The scope a body gives in `filters` (no metadata allowed unless `metadata_ok`) and beside
/// it; `None` without any id.
fn body_scope(
    filters: Option<&Filters>,
    beside: Scope,
    metadata_ok: bool,
) -> Result<(Option<Scope>, Metadata), ApiError> {
    let parsed = filters.map(parse_filters).transpose()?.unwrap_or_default();
    if !metadata_ok && !parsed.metadata.is_empty() {
        return Err(ApiError::bad_request(
            "filters",
            "metadata filters are supported by search only",
        ));
    }
    let scope = join_scopes(&parsed.scope, &beside)?;
    Ok((some_scope(scope), parsed.metadata))
}

/// Parses an add: the messages' texts, the scope, the options.
pub fn parse_add(body: Map<String, Value>) -> Result<AddInput, ApiError> {
    let req: MemoryAddRequest = typed(
        body,
        &[
            "messages", "filters", "user_id", "agent_id", "run_id", "metadata", "infer", "use_head",
        ],
    )?;
    if req.messages.is_empty() || req.messages.len() > MAX_ADD_MESSAGES {
        return Err(ApiError::bad_request(
            "messages",
            format!(
                "`messages` must hold 1 to {MAX_ADD_MESSAGES} messages, got {}",
                req.messages.len()
            ),
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        let text = match m.content {
            MessageContent::Text(t) => t,
            MessageContent::Parts(parts) => {
                let mut texts = Vec::new();
                for p in parts {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => texts.push(t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(
                                "messages",
                                format!("message {i}: only text parts are supported, not `{kind}`"),
                            ))
                        }
                    }
                }
                texts.join("\n")
            }
        };
        messages.push((m.role, text));
    }
    let beside = Scope {
        user_id: req.user_id,
        agent_id: req.agent_id,
        run_id: req.run_id,
    };
    let (scope, _) = body_scope(req.filters.as_ref(), beside, false)?;
    Ok(AddInput {
        scope,
        messages,
        infer: req.infer.unwrap_or(true),
        metadata: req.metadata.unwrap_or_default(),
        use_head: req.use_head,
    })
}

/// Parses a listing; its scope is in `filters`.
pub fn parse_list(body: Map<String, Value>) -> Result<Option<Scope>, ApiError> {
    let req: MemoryListRequest = typed(body, &["filters", "show_expired", "latest_only"])?;
    Ok(body_scope(req.filters.as_ref(), Scope::default(), false)?.0)
}

/// Parses a search.
pub fn parse_search(body: Map<String, Value>) -> Result<SearchInput, ApiError> {
    let req: MemorySearchRequest = typed(
        body,
        &[
            "query",
            "filters",
            "top_k",
            "threshold",
            "rerank",
            "keyword_search",
            "show_expired",
            "latest_only",
        ],
    )?;
    if req.rerank == Some(true) {
        return Err(ApiError::bad_request(
            "rerank",
            "`rerank: true` is not supported: athena ranks by fused retrieval only",
        ));
    }
    if req.keyword_search == Some(false) {
        return Err(ApiError::bad_request(
            "keyword_search",
            "`keyword_search: false` is not supported: athena's ranking fuses full-text \
             matches (the server's --text-weight sets how much)",
        ));
    }
    let top_k = req.top_k.unwrap_or(DEFAULT_TOP_K);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(ApiError::bad_request(
            "top_k",
            format!("`top_k` must be 1 to {MAX_TOP_K}, got {top_k}"),
        ));
    }
    let (scope, metadata) = body_scope(req.filters.as_ref(), Scope::default(), true)?;
    let mut options = SearchOptions::new(Scope::default());
    options.top_k = top_k;
    options.threshold = req.threshold;
    options.filters = metadata;
    Ok(SearchInput {
        scope,
        query: req.query,
        options,
    })
}

/// Parses an update: a text, metadata, or both.
pub fn parse_update(body: Map<String, Value>) -> Result<UpdateInput, ApiError> {
    let req: MemoryUpdateRequest = typed(body, &["text", "metadata", "expiration_date"])?;
    if req.expiration_date.is_some() {
        return Err(ApiError::bad_request(
            "expiration_date",
            "`expiration_date` is not supported: athena's memories never expire",
        ));
    }
    if req.text.is_none() && req.metadata.is_none() {
        return Err(ApiError::bad_request(
            "text",
            "give `text`, `metadata` or both",
        ));
    }
    Ok(UpdateInput {
        text: req.text,
        metadata: req.metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_add_stores_user_messages_and_refuses_what_it_cannot_do() {
        let add = parse_add(obj(json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "I like tea"},
                {"role": "assistant", "content": "Noted"},
                {"role": "user", "content": [{"type": "text", "text": "I live"},
                                             {"type": "text", "text": "in Rome"}]},
            ],
            "filters": {"user_id": "alice"}, "agent_id": "bot", "infer": false,
            "metadata": {"source": "chat"},
        })))
        .unwrap();
        assert_eq!(add.user_facts().unwrap(), ["I like tea", "I live\nin Rome"]);
        assert!(!add.infer);
        assert_eq!(
            add.scope.unwrap().to_string(),
            "user_id=alice, agent_id=bot"
        );
        assert_eq!(add.metadata, obj(json!({"source": "chat"})));
        let base = json!({"messages": [{"role": "user", "content": "x"}], "infer": false});
        assert!(
            parse_add(obj(json!({"messages": [{"role": "user", "content": "x"}]})))
                .unwrap()
                .infer
        );
        let only_assistant = parse_add(obj(
            json!({"messages": [{"role": "assistant", "content": "x"}]}),
        ))
        .unwrap();
        assert!(only_assistant
            .user_facts()
            .unwrap_err()
            .message
            .contains("role `user`"));
        for (change, status, says) in [
            (json!({"timestamp": 5}), 400, "`timestamp` is not supported"),
            (json!({"bogus": 5}), 400, "unknown field `bogus`"),
            (json!({"messages": []}), 400, "1 to"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                400,
                "text parts",
            ),
            (
                json!({"filters": {"metadata": {"a": 1}}}),
                400,
                "search only",
            ),
            (
                json!({"filters": {"user_id": "a"}, "user_id": "b"}),
                400,
                "two different",
            ),
            (json!({"messages": "hi"}), 422, "invalid request"),
        ] {
            let mut body = obj(base.clone());
            body.extend(obj(change.clone()));
            let e = parse_add(body).unwrap_err();
            assert_eq!(e.status, StatusCode::from_u16(status).unwrap(), "{change}");
            assert!(e.message.contains(says), "{change}: {}", e.message);
        }
    }

    #[test]
    fn searches_listings_and_updates_parse_into_options() {
        let s = parse_search(obj(json!({
            "query": "tea", "filters": {"user_id": "a", "metadata": {"k": "v"}},
            "top_k": 3, "threshold": 0.2, "rerank": false, "latest_only": true,
        })))
        .unwrap();
        assert_eq!((s.options.top_k, s.options.threshold), (3, Some(0.2)));
        assert_eq!(s.options.filters, obj(json!({"k": "v"})));
        assert_eq!(s.scope, Some(Scope::user("a")));
        for bad in [
            json!({"query": "q", "rerank": true}),
            json!({"query": "q", "keyword_search": false}),
            json!({"query": "q", "top_k": 0}),
            json!({"query": "q", "top_k": 1001}),
            json!({"query": "q", "categories": ["x"]}),
        ] {
            assert_eq!(
                parse_search(obj(bad.clone())).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert_eq!(
            parse_list(obj(json!({"filters": {"run_id": "r"}}))).unwrap(),
            Some(Scope {
                run_id: Some("r".into()),
                ..Scope::default()
            })
        );
        assert_eq!(parse_list(obj(json!({}))).unwrap(), None);
        assert!(parse_update(obj(json!({}))).is_err());
        assert!(parse_update(obj(json!({"expiration_date": "2030-01-01"}))).is_err());
        assert!(parse_update(obj(json!({"text": "x", "expiration_date": null}))).is_ok());
    }

    #[test]
    fn a_query_gives_a_scope_in_parameters_or_filters() {
        let q = ScopeQuery {
            user_id: Some("a".into()),
            filters: Some("{'agent_id': 'bot'}".into()),
            ..ScopeQuery::default()
        };
        assert_eq!(
            q.scope().unwrap().unwrap().to_string(),
            "user_id=a, agent_id=bot"
        );
        assert_eq!(ScopeQuery::default().scope().unwrap(), None);
        let meta = ScopeQuery {
            filters: Some(r#"{"metadata": {"a": 1}}"#.into()),
            ..ScopeQuery::default()
        };
        assert!(meta.scope().is_err());
    }
}
