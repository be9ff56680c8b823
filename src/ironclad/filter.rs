//! SCIM filter construction (RFC 7644 §3.4.2.2). Values are written as JSON string literals
//! through the `scim_v2` filter AST, so `"` becomes `\"`, `\` becomes `\\` and control
//! characters are escaped: a userName with a quote in it finds exactly that user, and no value
//! can change the shape of the filter.
//!
//! What does not live here: sending the filter (see [`super::paging`]) or evaluating filters
//! (the simulator does that).

use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, Filter};

/// Parses an attribute path as written in a filter: `userName`, `name.familyName`, or a
/// schema-qualified `urn:...:User:department`.
fn attr_path(attr: &str) -> AttrPath {
    let (uri, rest) = match attr.rfind(':') {
        Some(i) => (Some(attr[..i].to_string()), &attr[i + 1..]),
        None => (None, attr),
    };
    let (name, sub) = match rest.split_once('.') {
        Some((n, s)) => (n.to_string(), Some(s.to_string())),
        None => (rest.to_string(), None),
    };
    AttrPath {
        uri,
        name,
        sub_attr: sub,
    }
}

/// `attr eq "value"` as an AST node.
pub fn eq_filter(attr: &str, value: &str) -> Filter {
    Filter::Attr(AttrExp::Comparison(
        attr_path(attr),
        CompareOp::Eq,
        CompValue::Str(value.to_string()),
    ))
}

/// `attr eq "value"`, with the value escaped.
pub fn eq(attr: &str, value: &str) -> String {
    eq_filter(attr, value).to_string()
}

/// `attr eq "v1" or attr eq "v2" ...` for a batch lookup; `None` when `values` is empty.
pub fn any_eq<'a>(attr: &str, values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    Filter::any(values.into_iter().map(|v| eq_filter(attr, v))).map(|f| f.to_string())
}

/// A value as a filter string literal, quotes included: `a"b` becomes `"a\"b"`.
pub fn quote(value: &str) -> String {
    CompValue::Str(value.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(
            eq("userName", r#"o"brien\x@example.com"#),
            r#"userName eq "o\"brien\\x@example.com""#
        );
        assert_eq!(quote("tab\there"), r#""tab\there""#);
    }

    #[test]
    fn escaped_filters_parse_back_to_the_same_value() {
        for v in [
            r#"a"b@example.com"#,
            r#"back\slash@example.com"#,
            r#"both\"mixed@example.com"#,
            r#"" or userName pr or ""#,
            "ünïcødé@example.com",
        ] {
            let text = eq("userName", v);
            let parsed: Filter = text.parse().unwrap();
            match parsed {
                Filter::Attr(AttrExp::Comparison(path, CompareOp::Eq, CompValue::Str(s))) => {
                    assert_eq!(path.name, "userName");
                    assert_eq!(s, v);
                }
                other => panic!("{text} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn sub_attributes_and_schema_uris() {
        assert_eq!(eq("name.familyName", "x"), r#"name.familyName eq "x""#);
        assert_eq!(
            eq(
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
                "7"
            ),
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7""#
        );
    }

    #[test]
    fn batch_lookup_is_an_or() {
        assert_eq!(
            any_eq("externalId", ["a", "b\""]).unwrap(),
            r#"externalId eq "a" or externalId eq "b\"""#
        );
        assert_eq!(any_eq("externalId", []), None);
    }
}
