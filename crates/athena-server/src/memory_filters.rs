//! Whose memories a request names: mem0's `filters` (in a body, or in a query string as JSON or
//! as the Python literal the mem0 client writes there) and the scope query parameters, parsed
//! into a [`Scope`] and a metadata filter. Whatever mem0 filters by that athena does not is
//! refused by name, never ignored.

use athena::memory::{Metadata, Scope};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::pyliteral;

/// Deepest nesting of `AND` lists accepted.
const MAX_AND_DEPTH: usize = 8;

/// The scope ids, by their names in mem0's filters.
const SCOPE_KEYS: [&str; 3] = ["user_id", "agent_id", "run_id"];

/// What mem0 filters by that athena does not, with why.
const UNSUPPORTED: [(&str, &str); 10] = [
    ("app_id", "athena's scopes are user_id, agent_id and run_id"),
    ("OR", "athena combines filters with AND only"),
    ("NOT", "athena combines filters with AND only"),
    ("categories", "athena does not categorize memories"),
    ("created_at", "athena does not filter by date"),
    ("updated_at", "athena does not filter by date"),
    ("keywords", "athena ranks by full text in search instead"),
    ("memory_ids", "get memories by id one at a time"),
    ("org_id", "athena has no organizations"),
    ("project_id", "athena has no projects"),
];

/// A parsed filter: the scope ids it gives, and the metadata every memory must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeFilter {
    /// The scope ids given (none at all is possible here; the routes require one).
    pub scope: Scope,
    /// Keys each memory's metadata must hold with equal values.
    pub metadata: Metadata,
}

/// Parses mem0's `filters` object: `user_id`, `agent_id`, `run_id` (strings), `metadata` (an
/// object of values to match) and `AND` (a list of such objects, all of which hold).
pub fn parse_filters(filters: &Map<String, Value>) -> Result<ScopeFilter, ApiError> {
    let mut out = ScopeFilter::default();
    merge(&mut out, filters, 0)?;
    Ok(out)
}

/// Parses the text of a `filters` query parameter: JSON, or a Python literal.
pub fn parse_filters_text(text: &str) -> Result<ScopeFilter, ApiError> {
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(_) => pyliteral::parse(text).map_err(|e| {
            ApiError::bad_request(
                "filters",
                format!("`filters` in the query is neither JSON nor a Python dict literal: {e}"),
            )
        })?,
    };
    match value {
        Value::Object(map) => parse_filters(&map),
        _ => Err(ApiError::bad_request(
            "filters",
            "`filters` must be an object",
        )),
    }
}

fn merge(
    out: &mut ScopeFilter,
    filters: &Map<String, Value>,
    depth: usize,
) -> Result<(), ApiError> {
    if depth > MAX_AND_DEPTH {
        return Err(ApiError::bad_request(
            "filters",
            format!("`AND` nested deeper than {MAX_AND_DEPTH}"),
        ));
    }
    for (key, value) in filters {
        if let Some(i) = SCOPE_KEYS.iter().position(|k| k == key) {
            let id = scope_id(key, value)?;
            let slot = match i {
                0 => &mut out.scope.user_id,
                1 => &mut out.scope.agent_id,
                _ => &mut out.scope.run_id,
            };
            set_once(slot, key, id)?;
        } else if key == "metadata" {
            let Value::Object(m) = value else {
                return Err(ApiError::bad_request(
                    "filters",
                    "`filters.metadata` must be an object of the values to match",
                ));
            };
            for (k, v) in m {
                match out.metadata.get(k) {
                    Some(old) if old != v => {
                        return Err(ApiError::bad_request(
                            "filters",
                            format!("`metadata.{k}` is given two different values"),
                        ))
                    }
                    _ => {
                        out.metadata.insert(k.clone(), v.clone());
                    }
                }
            }
        } else if key == "AND" {
            let Value::Array(items) = value else {
                return Err(ApiError::bad_request(
                    "filters",
                    "`AND` must be a list of filter objects",
                ));
            };
            for item in items {
                let Value::Object(m) = item else {
                    return Err(ApiError::bad_request(
                        "filters",
                        "each item of `AND` must be a filter object",
                    ));
                };
                merge(out, m, depth + 1)?;
            }
        } else {
            let why = UNSUPPORTED.iter().find(|(k, _)| *k == key.as_str()).map_or(
                "athena filters by user_id, agent_id, run_id, metadata and AND",
                |x| x.1,
            );
            return Err(ApiError::bad_request(
                "filters",
                format!("the filter `{key}` is not supported: {why}"),
            ));
        }
    }
    Ok(())
}

/// A scope id's value: a plain string (mem0's operators and its `*` wildcard are refused).
fn scope_id(key: &str, value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(s) if s == "*" => Err(ApiError::bad_request(
            "filters",
            format!("`{key}: \"*\"` (any value) is not supported: give the id"),
        )),
        Value::String(s) => Ok(s.clone()),
        Value::Object(_) => Err(ApiError::bad_request(
            "filters",
            format!("`{key}` must be a string: operators (in, ne, ...) are not supported"),
        )),
        _ => Err(ApiError::bad_request(
            "filters",
            format!("`{key}` must be a string"),
        )),
    }
}

fn set_once(slot: &mut Option<String>, key: &str, id: String) -> Result<(), ApiError> {
    match slot {
        Some(old) if *old != id => Err(ApiError::bad_request(
            "filters",
            format!("`{key}` is given two different values (`{old}` and `{id}`)"),
        )),
        _ => {
            *slot = Some(id);
            Ok(())
        }
    }
}

/// The scope of a request from its two places: the query string (`user_id`, `agent_id`,
/// `run_id`, `filters`) and the body (`filters`, and the ids beside it). Either may be left
/// out; where both give one, the query's must cover the body's (each id the query gives, the
/// body gives with the same value), so that a client pinned to a scope by its query stays in
/// it. The narrower one is the request's scope. Without any id: 400.
pub fn resolve_scope(query: Option<&Scope>, body: Option<&Scope>) -> Result<Scope, ApiError> {
    let scope = match (query, body) {
        (Some(q), Some(b)) if !q.matches(b) => {
            return Err(ApiError::bad_request(
                "filters",
                format!("the scope in the query ({q}) and the one in the body ({b}) disagree"),
            ))
        }
        (_, Some(b)) => b.clone(),
        (Some(q), None) => q.clone(),
        (None, None) => Scope::default(),
    };
    if scope == Scope::default() {
        return Err(ApiError::bad_request(
            "filters",
            "no scope: give user_id, agent_id or run_id in `filters` (or as query parameters \
             `?user_id=...`); every memory route works within one scope",
        ));
    }
    scope.validate().map_err(ApiError::from)?;
    Ok(scope)
}

/// The scope ids of `a`, with those of `b` where `a` has none; 400 when they disagree.
pub fn join_scopes(a: &Scope, b: &Scope) -> Result<Scope, ApiError> {
    let mut out = a.clone();
    for (slot, (key, id)) in [&mut out.user_id, &mut out.agent_id, &mut out.run_id]
        .into_iter()
        .zip(b.parts())
    {
        if let Some(id) = id {
            set_once(slot, key, id.to_string())?;
        }
    }
    Ok(out)
}

/// `Some(scope)` unless it gives no id.
pub fn some_scope(scope: Scope) -> Option<Scope> {
    (scope != Scope::default()).then_some(scope)
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
    fn filters_give_a_scope_and_metadata() {
        let f = parse_filters(&obj(json!({
            "AND": [{"user_id": "alice"}, {"agent_id": "bot", "metadata": {"k": 1}}],
            "user_id": "alice",
        })))
        .unwrap();
        assert_eq!(f.scope.user_id.as_deref(), Some("alice"));
        assert_eq!(f.scope.agent_id.as_deref(), Some("bot"));
        assert_eq!(f.metadata, obj(json!({"k": 1})));
        let py = parse_filters_text("{'user_id': 'bob', 'run_id': 'r1'}").unwrap();
        assert_eq!(py.scope.to_string(), "user_id=bob, run_id=r1");
        let js = parse_filters_text(r#"{"user_id": "bob"}"#).unwrap();
        assert_eq!(js.scope, Scope::user("bob"));
    }

    #[test]
    fn what_athena_cannot_filter_by_is_a_400_naming_it() {
        for (bad, says) in [
            (json!({"OR": [{"user_id": "a"}]}), "`OR`"),
            (json!({"app_id": "x"}), "`app_id`"),
            (json!({"user_id": "*"}), "\"*\""),
            (json!({"user_id": {"in": ["a", "b"]}}), "operators"),
            (json!({"user_id": 3}), "string"),
            (
                json!({"AND": [{"user_id": "a"}, {"user_id": "b"}]}),
                "two different",
            ),
            (json!({"metadata": [1]}), "object"),
            (json!({"AND": {"user_id": "a"}}), "list"),
            (json!({"weird": 1}), "`weird`"),
        ] {
            let e = parse_filters(&obj(bad.clone())).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
        let mut deep = json!({"user_id": "a"});
        for _ in 0..=MAX_AND_DEPTH {
            deep = json!({ "AND": [deep] });
        }
        assert!(parse_filters(&obj(deep)).is_err());
        assert!(parse_filters_text("[1]").is_err());
        assert!(parse_filters_text("{'user_id': ").is_err());
    }

    #[test]
    fn the_query_scope_pins_the_body_scope() {
        let alice = Scope::user("alice");
        let alice_bot = Scope {
            agent_id: Some("bot".into()),
            ..alice.clone()
        };
        assert_eq!(resolve_scope(Some(&alice), None).unwrap(), alice);
        assert_eq!(resolve_scope(None, Some(&alice)).unwrap(), alice);
        assert_eq!(
            resolve_scope(Some(&alice), Some(&alice_bot)).unwrap(),
            alice_bot
        );
        let e = resolve_scope(Some(&alice_bot), Some(&alice)).unwrap_err();
        assert!(e.message.contains("disagree"), "{}", e.message);
        assert!(resolve_scope(Some(&alice), Some(&Scope::user("bob"))).is_err());
        let none = resolve_scope(None, None).unwrap_err();
        assert!(none.message.contains("no scope"), "{}", none.message);
        assert!(resolve_scope(Some(&Scope::user(" ")), None).is_err());
        assert_eq!(join_scopes(&alice, &alice_bot).unwrap(), alice_bot);
        assert!(join_scopes(&alice, &Scope::user("bob")).is_err());
    }
}
