//! Request parsing at the edge: JSON bodies and query parameters, with every rejection one
//! of our problem responses (axum's own rejections are plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::wire::{Census, ParseLimits, with_limits};
use super::words;
use super::{AppState, Caller};
use crate::admission::{BodyShape, Need, Part};
use crate::error::{ApiError, ApiResult};

/// Bodies above this size are parsed on a blocking worker, not on the async runtime.
pub const PARSE_INLINE_MAX: usize = 256 * 1024;

/// A request body's type, and how what it holds is stored once parsed (for the memory it is
/// admitted with before it is parsed).
pub trait RequestBody: DeserializeOwned + Send + 'static {
    /// Whether parts of it are kept as JSON trees (`serde_json::Value`: check's
    /// submissions, read whatever their shape) rather than as numbers.
    const KEEPS_JSON: bool = false;
}

/// A JSON body parsed into `T`; an empty body is 400 `invalid_json`.
pub struct ApiJson<T>(pub T);

/// A JSON body parsed into `T`, or `None` for an empty body (any content type).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: RequestBody> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        match OptionalJson::<T>::from_request(req, state).await?.0 {
            Some(v) => Ok(Self(v)),
            None => Err(ApiError::InvalidJson(
                "the body is empty; this request needs a JSON body \
                 (with curl: --json '{...}')"
                    .into(),
            )),
        }
    }
}

impl<T: RequestBody> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let caller = caller_of(&req)?;
        let Some((content_type, bytes)) = read_body(req, state).await? else {
            return Ok(Self(None));
        };
        if !content_type.as_deref().is_some_and(is_json) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body's Content-Type is {}; send JSON with \
                 'Content-Type: application/json' (with curl: --json '{{...}}' sets it)",
                shown(content_type.as_deref())
            )));
        }
        Ok(Self(Some(parse_json_body(state, &caller, bytes).await?)))
    }
}

/// The request's caller, which the gate put in its extensions.
pub fn caller_of(req: &Request) -> ApiResult<Caller> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("a body was read without a caller".into()))
}

/// The body, at most `--max-body-bytes` of it, with its content type; `None` when it is
/// empty or only whitespace. Its memory is reserved before a byte is read: twice its
/// declared length (its pieces as they arrive, and the body they are joined into), or twice
/// the limit for a body of undeclared length; then the body's own length.
pub async fn read_body(
    req: Request,
    state: &AppState,
) -> ApiResult<Option<(Option<String>, Bytes)>> {
    let caller = caller_of(&req)?;
    let limit = state.config().max_body_bytes;
    let too_large = || {
        ApiError::BodyTooLarge(format!(
            "the body is larger than this server's limit of {limit} bytes \
             (--max-body-bytes); send less data per request"
        ))
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    let expected = http_body::Body::size_hint(req.body())
        .upper()
        .unwrap_or(limit as u64)
        .min(limit as u64);
    let shrink = "send less data per request";
    if expected > 0 {
        caller.need(
            Part::Body,
            Need::new(2 * u128::from(expected), "the body", shrink),
        )?;
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| body_timeout(&e).unwrap_or_else(too_large))?;
    caller.need(
        Part::Body,
        Need::new(bytes.len() as u128, "the body", shrink),
    )?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Ok(Some((content_type, bytes)))
}

/// A content type as a detail shows it: quoted, or `missing`.
pub fn shown(content_type: Option<&str>) -> String {
    content_type.map_or("missing".to_owned(), |c| format!("{c:?}"))
}

/// Parses a JSON body with the server's limits in force, on a worker when it is large.
///
/// A scan that allocates nothing checks the syntax and counts what the body holds first, so
/// the memory its parse will hold is reserved (or refused) before the parse runs.
pub async fn parse_json_body<T: RequestBody>(
    state: &AppState,
    caller: &Caller,
    bytes: Bytes,
) -> ApiResult<T> {
    let limits = ParseLimits {
        max_samples: state.config().max_samples,
        max_history: usize::try_from(state.config().max_history).unwrap_or(usize::MAX),
    };
    let inline = bytes.len() <= PARSE_INLINE_MAX;
    let scan = move || census(&bytes).map(|shape| (shape, bytes));
    let (shape, bytes) = if inline {
        scan()?
    } else {
        state.compute(caller, None, scan).await??
    };
    let parsed = if T::KEEPS_JSON {
        shape.tree_bytes()
    } else {
        shape.typed_bytes()
    };
    let need = Need::new(
        parsed,
        "the body's numbers and lists as parsed",
        "send less data per request",
    );
    let parse = move || with_limits(limits, || parse(&bytes));
    let value = if inline {
        caller.need(Part::Parsed, need)?;
        parse()
    } else {
        state
            .compute(caller, Some((Part::Parsed, need)), parse)
            .await?
    };
    // The body's bytes went with the parse.
    caller.memory.release(Part::Body);
    value
}

/// Checks a JSON body's syntax and counts what it holds, allocating nothing.
pub fn census(bytes: &[u8]) -> ApiResult<BodyShape> {
    use serde::de::DeserializeSeed as _;
    let mut shape = BodyShape::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Census(&mut shape)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| classify(&e, "."))?;
    Ok(shape)
}

/// 408 `request_timeout` if reading a body failed because it came too slowly
/// (`--body-timeout-secs`); otherwise the body was too large.
pub(crate) fn body_timeout(e: &axum::Error) -> Option<ApiError> {
    crate::connections::body_timed_out(e).map(|limit| {
        ApiError::RequestTimeout(format!(
            "the body did not arrive within {} s (--body-timeout-secs); send it at once, \
             or send less per request",
            limit.as_secs_f64()
        ))
    })
}

/// `application/json` or `application/<anything>+json`, with any parameters.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses JSON whose syntax [`census`] checked, naming the path of a badly formed value
/// (`layers[1]: invalid type ...`).
///
/// Syntax is checked on its own first: otherwise serde reports a truncated `[1, 2` as the
/// wrong type for a struct (400 invalid_request) instead of as broken JSON. And every body
/// is an object: serde would also fill a struct from an array, by position.
pub fn parse<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidRequest(
            "the body must be a JSON object, like {\"epochs\": 100}".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        classify(&inner, &path)
    })?;
    de.end().map_err(|e| classify(&e, "."))?;
    Ok(value)
}

fn classify(e: &serde_json::Error, path: &str) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            // serde's message without serde_json's position: the path says where.
            let text = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = text.strip_suffix(&suffix).unwrap_or(&text);
            ApiError::InvalidRequest(words::data_error(message, path))
        }
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::InvalidJson(words::syntax_error(e))
        }
    }
}

/// Query parameters as name/value pairs, parsed by hand so each fault gets its own code.
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q)
            .map(Self)
            .map_err(|e| ApiError::InvalidRequest(format!("the query string is malformed: {e}")))
    }
}

impl QueryParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An integer parameter in `min..=max`: not an integer is 400, out of range 422. As in
    /// bodies, an integer is any JSON number whose value is whole (`5`, `5.0`, `5e0`).
    pub fn int(&self, name: &str, min: u64, max: u64) -> ApiResult<Option<u64>> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let not_an_integer = || {
            ApiError::InvalidRequest(format!(
                "{name}={raw:?} is not an integer; {name} takes an integer from {min} to {max}"
            ))
        };
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        let value: i128 = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            // Exactly, however long: past i128 is simply out of range.
            raw.parse::<i128>().unwrap_or(if raw.starts_with('-') {
                i128::MIN
            } else {
                i128::MAX
            })
        } else {
            // JSON's number grammar, nothing else: no "inf", "NaN", "+5" or spaces.
            match serde_json::from_str::<serde_json::Value>(raw) {
                Ok(serde_json::Value::Number(n)) if raw.trim() == raw => {
                    match n.as_f64().filter(|v| v.fract() == 0.0) {
                        Some(v) => v as i128,
                        None => return Err(not_an_integer()),
                    }
                }
                _ => return Err(not_an_integer()),
            }
        };
        match u64::try_from(value) {
            Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::InvalidValue(format!(
                "{name}={raw} is out of range; {name} takes an integer from {min} to {max}"
            ))),
        }
    }
}
