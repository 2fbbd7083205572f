//! serde's error messages, said in the API's words.
//!
//! serde and serde_json describe a badly formed value in Rust's terms (`invalid type: floating
//! point `4.5`, expected i64`, `expected struct InitWire`). Their messages follow a fixed
//! grammar (the provided methods of `serde::de::Error`, the `Display` of `de::Unexpected`), so
//! the parts are taken apart here and put back as a client reads them: `layers[0] is the
//! number 4.5; it must be an integer, like 4`. The "expected" texts of our own visitors are
//! already in the API's words; [`expected`] translates those of serde's built-in types.
//! Anything else (a message of our own) passes through with its path in front.

/// A data error (`serde_json::error::Category::Data`) at `path` (`"."` for the body itself).
pub fn data_error(message: &str, path: &str) -> String {
    let subject = if path == "." || path.is_empty() {
        "the body"
    } else {
        path
    };
    let invalid = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some((found_text, exp)) = invalid.and_then(|r| r.rsplit_once(", expected ")) {
        return format!(
            "{subject} is {}; it must be {}",
            found(found_text),
            expected(exp)
        );
    }
    if let Some((len, exp)) = message
        .strip_prefix("invalid length ")
        .and_then(|r| r.split_once(", expected "))
    {
        return format!("{subject} has {len} entries; it must be {}", expected(exp));
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, known) = rest.split_once('`').unwrap_or((rest, ""));
        // The path of an unknown field ends with the field itself; name its object.
        let subject = match path.strip_suffix(field) {
            Some("") => "the body",
            Some(parent) if parent.ends_with('.') => &parent[..parent.len() - 1],
            _ => subject,
        };
        let known: Vec<&str> = known.split('`').skip(1).step_by(2).collect::<Vec<_>>();
        let suggestion = strsim_closest(field, &known)
            .map(|k| format!(" (did you mean {k:?}?)"))
            .unwrap_or_default();
        let list = known
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        return if known.is_empty() {
            format!("{subject} takes no fields, and {field:?} is one")
        } else {
            format!(
                "{subject} has an unknown field {field:?}{suggestion}; the fields it takes are \
                 {list}"
            )
        };
    }
    if let Some(field) = backticked(message, "missing field `") {
        return format!("{subject} lacks the field {field:?}, which is required");
    }
    if let Some(field) = backticked(message, "duplicate field `") {
        return format!("{subject} has the field {field:?} twice; give it once");
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (word, known) = rest.split_once('`').unwrap_or((rest, ""));
        let words = known
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        return format!("{subject} is {word:?}; it must be one of {words}");
    }
    if subject == "the body" {
        message.to_owned()
    } else {
        format!("{subject}: {message}")
    }
}

/// A syntax or end-of-input error: the body is not JSON at all.
pub fn syntax_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    let at = format!("line {}, column {}", e.line(), e.column());
    match message {
        "number out of range" => format!(
            "the body is not valid JSON here: the number at {at} is too large (every number \
             must fit an IEEE double, whose largest is about 1.8e308)"
        ),
        "recursion limit exceeded" => format!(
            "the body is nested too deeply (more than 128 lists or objects inside each other, \
             at {at})"
        ),
        _ => format!("the body is not valid JSON: {message} at {at}"),
    }
}

/// The text between `prefix` and the next backtick.
fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest.split_once('`').map_or(rest, |(f, _)| f))
}

/// The closest of `known` to a misspelt `word`, when it is close.
fn strsim_closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), *k))
        .filter(|&(d, k)| d <= 2 && d < k.len())
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// `de::Unexpected`'s text, in the API's words.
fn found(text: &str) -> String {
    if let Some(b) = text.strip_prefix("boolean `") {
        return b.trim_end_matches('`').to_owned();
    }
    for prefix in ["integer `", "floating point `"] {
        if let Some(n) = text.strip_prefix(prefix) {
            return format!("the number {}", n.trim_end_matches('`'));
        }
    }
    if let Some(s) = text.strip_prefix("string ") {
        return format!("the string {s}");
    }
    if let Some(c) = text.strip_prefix("character `") {
        return format!("the string {:?}", c.trim_end_matches('`'));
    }
    match text {
        "sequence" => "a list".into(),
        "map" => "an object".into(),
        "unit value" | "Option value" => "null".into(),
        other => other.into(),
    }
}

/// The "expected" half of a message: our visitors' texts as they are, serde's translated.
fn expected(text: &str) -> String {
    match text {
        "f64" | "f32" => "a number".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128"
        | "usize" => "an integer".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list".into(),
        "a borrowed string" | "a string" => "a string".into(),
        "a map" => "an object".into(),
        "unit" => "null".into(),
        t if t.starts_with("struct ") || t.starts_with("tuple struct ") => "an object".into(),
        t => t.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_phrases_become_the_apis() {
        let cases = [
            (
                "invalid type: floating point `4.5`, expected an integer, like 4",
                "layers[0]",
                "layers[0] is the number 4.5; it must be an integer, like 4",
            ),
            (
                "invalid type: string \"0.1\", expected f64",
                "learning_rate",
                "learning_rate is the string \"0.1\"; it must be a number",
            ),
            (
                "invalid type: sequence, expected an object, {\"name\": value, ...}",
                "init",
                "init is a list; it must be an object, {\"name\": value, ...}",
            ),
            (
                "invalid type: unit value, expected a sequence",
                "layers",
                "layers is null; it must be a list",
            ),
            (
                "unknown field `lyers`, expected one of `layers`, `activation`",
                "lyers",
                "the body has an unknown field \"lyers\" (did you mean \"layers\"?); the fields \
                 it takes are \"layers\", \"activation\"",
            ),
            (
                "unknown field `sed`, expected one of `method`, `seed`",
                "init.sed",
                "init has an unknown field \"sed\" (did you mean \"seed\"?); the fields it \
                 takes are \"method\", \"seed\"",
            ),
            (
                "missing field `epochs`",
                ".",
                "the body lacks the field \"epochs\", which is required",
            ),
            (
                "invalid type: boolean `true`, expected i64",
                "dataset.sample_shape[0]",
                "dataset.sample_shape[0] is true; it must be an integer",
            ),
        ];
        for (message, path, want) in cases {
            assert_eq!(data_error(message, path), want, "{message}");
        }
    }
}
