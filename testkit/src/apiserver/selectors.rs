//! Label selectors as list and watch requests carry them (`k=v`, `k==v`,
//! `k!=v`, `k in (..)`, `k notin (..)`, `k`, `!k`).

use serde_json::Value;

use super::status::ApiError;

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Default)]
pub(super) struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    pub(super) fn parse(text: &str) -> Result<Selector, ApiError> {
        let bad = |detail: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {detail} in label selector {text:?}"
            ))
        };
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_string())
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotIn(key.trim().to_string(), vec![value.trim().to_string()])
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                Requirement::In(key.trim().to_string(), vec![value.trim().to_string()])
            } else if let Some((key, set)) = split_set(term, " notin ") {
                Requirement::NotIn(key, set.ok_or_else(|| bad(term))?)
            } else if let Some((key, set)) = split_set(term, " in ") {
                Requirement::In(key, set.ok_or_else(|| bad(term))?)
            } else if term.contains(char::is_whitespace) {
                return Err(bad(term));
            } else {
                Requirement::Exists(term.to_string())
            };
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    pub(super) fn matches(&self, labels: &Value) -> bool {
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            Requirement::NotIn(key, values) => {
                label(key).is_none_or(|v| !values.iter().any(|x| x == v))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::DoesNotExist(key) => label(key).is_none(),
        })
    }
}

/// Splits a selector at the commas that are not inside `( )`.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

/// `key <op> (a, b)`: the key and the values, or `Some((key, None))` when
/// the operator is there but the set is malformed.
fn split_set(term: &str, op: &str) -> Option<(String, Option<Vec<String>>)> {
    let (key, rest) = term.split_once(op)?;
    let set = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| inner.split(',').map(|v| v.trim().to_string()).collect());
    Some((key.trim().to_string(), set))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_parse_every_operator_kube_sends() {
        let labels = json!({"a": "1", "b": "2"});
        for (text, expected) in [
            ("a=1", true),
            ("a==1", true),
            ("a!=1", false),
            ("c!=1", true),
            ("a in (1, 3)", true),
            ("a notin (1,3)", false),
            ("a,b=2", true),
            ("!a", false),
            ("!c", true),
            ("a=1,b in (3)", false),
            ("", true),
        ] {
            let selector = Selector::parse(text).unwrap();
            assert_eq!(selector.matches(&labels), expected, "{text}");
        }
        assert!(!Selector::parse("a=1").unwrap().matches(&Value::Null));
        assert!(Selector::parse("a in 1").is_err());
        assert!(Selector::parse("a b").is_err());
    }
}
