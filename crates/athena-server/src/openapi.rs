//! The server's OpenAPI description, served at `/openapi.json`. Each route's own answers come
//! from its `#[utoipa::path]`; the answers every route shares (the checks of
//! [`crate::routes`]' middleware and of the connection limit) are added here by rule, so a route
//! cannot be described without them.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi as _;

use crate::error::{ErrorBody, ErrorDetail};
use crate::responses::{ChatCompletionChunk, Completion};

/// The name of the API key's security scheme.
const API_KEY: &str = "api_key";

/// What the derive gives: the title, the tags and the schemas no route names directly (the
/// streamed chunks).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "athena",
        description = "An OpenAI-compatible server over an OLMoE model. Every error is \
            `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`; docs/SERVER_LIMITS.md \
            lists the bounds behind each status."
    ),
    tags(
        (name = "openai", description = "OpenAI's routes"),
        (name = "memory", description = "The memory action head, and the memory bank in the \
            routes the official mem0 client calls (docs/MEMORY_API.md)"),
        (name = "operations", description = "For operators and tools"),
    ),
    components(schemas(ErrorBody, ErrorDetail, ChatCompletionChunk, Completion))
)]
pub(crate) struct ApiDoc;

/// One answer every route (or every route with a body: POST, PUT) may give, and when.
struct Shared {
    status: u16,
    name: &'static str,
    description: &'static str,
    /// Only routes with a body (POST, PUT) give it.
    post_only: bool,
    /// `/health` does not give it.
    not_health: bool,
}

const SHARED: [Shared; 11] = [
    Shared {
        status: 400,
        name: "BadRequest",
        description: "The body is not JSON, or asks for something invalid (`param` names the \
                      field); `code: request_too_large` for a request that costs more than the \
                      whole token budget",
        post_only: true,
        not_health: false,
    },
    Shared {
        status: 401,
        name: "Unauthorized",
        description: "The server has an API key and the request does not present it \
                      (`code: invalid_api_key`)",
        post_only: false,
        not_health: true,
    },
    Shared {
        status: 408,
        name: "BodyTimeout",
        description: "The body did not arrive within `--body-read-timeout` (`code: body_timeout`)",
        post_only: false,
        not_health: false,
    },
    Shared {
        status: 413,
        name: "BodyTooLarge",
        description: "The body is larger than `--max-body-bytes` (`code: body_too_large`)",
        post_only: false,
        not_health: false,
    },
    Shared {
        status: 415,
        name: "UnsupportedMediaType",
        description: "The body is not declared as JSON (`code: unsupported_media_type`)",
        post_only: true,
        not_health: false,
    },
    Shared {
        status: 421,
        name: "MisdirectedRequest",
        description: "The `Host` header does not name this server (`code: invalid_host`)",
        post_only: false,
        not_health: false,
    },
    Shared {
        status: 422,
        name: "UnprocessableEntity",
        description: "JSON of the wrong shape: a missing field, a wrong type",
        post_only: true,
        not_health: false,
    },
    Shared {
        status: 429,
        name: "TooManyRequests",
        description: "The server holds as many requests or tokens as it may (`code: queue_full`), \
                      or its tokenizing queue is full; retry after `Retry-After` seconds",
        post_only: true,
        not_health: false,
    },
    Shared {
        status: 500,
        name: "InternalServerError",
        description: "A fault in the server",
        post_only: false,
        not_health: false,
    },
    Shared {
        status: 503,
        name: "ServiceUnavailable",
        description: "The server is shutting down, or has `--max-connections` open",
        post_only: false,
        not_health: true,
    },
    Shared {
        status: 504,
        name: "Timeout",
        description: "The request ran past `--request-timeout` (`--generation-timeout` for a \
                      generation; `code: timeout`)",
        post_only: false,
        not_health: false,
    },
];

/// Completes the description `paths` the router's routes produced: the shared answers, the
/// API key's security scheme, and the key's requirement on every route but `/health`.
pub(crate) fn complete(routes: OpenApi) -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(routes);
    let components = doc.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    for shared in &SHARED {
        let json = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build();
        let response = ResponseBuilder::new()
            .description(shared.description)
            .content("application/json", json)
            .build();
        components
            .responses
            .insert(shared.name.to_string(), RefOr::T(response));
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let health = path == "/health";
        for (post, op) in operations(item) {
            for shared in &SHARED {
                if (shared.post_only && !post) || (shared.not_health && health) {
                    continue;
                }
                op.responses
                    .responses
                    .entry(shared.status.to_string())
                    .or_insert_with(|| {
                        RefOr::Ref(Ref::new(format!("#/components/responses/{}", shared.name)))
                    });
            }
            if !health {
                op.security = Some(vec![SecurityRequirement::new(
                    API_KEY,
                    Vec::<String>::new(),
                )]);
            }
        }
    }
    doc
}

/// The operations of a path, each with whether it takes a body (POST, PUT).
fn operations(item: &mut PathItem) -> impl Iterator<Item = (bool, &mut Operation)> {
    [
        (false, item.get.as_mut()),
        (true, item.post.as_mut()),
        (true, item.put.as_mut()),
        (false, item.delete.as_mut()),
        (false, item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(post, op)| op.map(|op| (post, op)))
}

/// The description as JSON, with the `model` of every request limited to the names this server
/// serves (`null` too: a request may leave it out).
pub(crate) fn render(doc: &OpenApi, models: &[&str]) -> Result<String, serde_json::Error> {
    let mut json = serde_json::to_value(doc)?;
    if let Some(schemas) = json
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    {
        let requests = schemas
            .iter_mut()
            .filter(|(name, _)| name.ends_with("Request"));
        for (_, schema) in requests {
            if let Some(model) = schema.pointer_mut("/properties/model") {
                let mut names: Vec<serde_json::Value> = models.iter().map(|&m| m.into()).collect();
                names.push(serde_json::Value::Null);
                model["enum"] = serde_json::Value::Array(names);
            }
        }
    }
    serde_json::to_string(&json)
}
