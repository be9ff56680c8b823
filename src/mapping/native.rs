//! Native evaluation of the commonest expression shapes (`id`, `attr.x`, `attr.x | lower`,
//! `attr.x is defined`, `attr.x is not defined`, `attrs.x | map('lower') | list`,
//! `not disabled`, `true`, `false`), recognized from an expression's text when the mapping
//! is loaded. When every item of a mapping's one-pass list has such a shape, an entry is
//! evaluated without the expression engine, which is most of the cost of mapping a large
//! directory. The results are the engine's own values, and anything a shape does not cover
//! exactly (an absent attribute under `lower`, a binary value, text that is not a boolean)
//! makes the whole entry go through the engine instead, so the outcome never differs.
//!
//! What does not live here: the engine, its filters and functions (`expr`), and what the
//! values become (`eval`).

use super::expr::{attr_values, direct_attribute, model_value};
use crate::model::{Entry, Value as ModelValue};
use minijinja::Value;

/// One recognized expression shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Native {
    /// `true` or `false`.
    Const(bool),
    /// `id`: the entry's stable id.
    Id,
    /// `attr.x`: the attribute's first value.
    First(String),
    /// `attr.x | lower`.
    FirstLower(String),
    /// `attr.x is defined` (false) or `attr.x is not defined` (true).
    Defined { name: String, negated: bool },
    /// `attrs.x | map('lower') | list`.
    AllLower(String),
    /// `not disabled`.
    NotDisabled,
}

impl Native {
    /// The shape of an expression's text, if it is one of those evaluated natively.
    pub(crate) fn recognize(src: &str) -> Option<Native> {
        let words: Vec<&str> = src.split_whitespace().collect();
        let s = words.join(" ");
        match s.as_str() {
            "true" => return Some(Native::Const(true)),
            "false" => return Some(Native::Const(false)),
            "id" => return Some(Native::Id),
            "not disabled" => return Some(Native::NotDisabled),
            _ => {}
        }
        let pieces: Vec<&str> = s.split('|').map(str::trim).collect();
        match pieces.as_slice() {
            [one] => {
                if let Some(head) = one.strip_suffix(" is not defined") {
                    let name = direct_attribute(head)?;
                    return Some(Native::Defined {
                        name,
                        negated: true,
                    });
                }
                if let Some(head) = one.strip_suffix(" is defined") {
                    let name = direct_attribute(head)?;
                    return Some(Native::Defined {
                        name,
                        negated: false,
                    });
                }
                direct_attribute(one).map(Native::First)
            }
            [head, "lower"] => direct_attribute(head).map(Native::FirstLower),
            [head, map, "list"] => {
                let map: String = map.chars().filter(|c| !c.is_whitespace()).collect();
                if map != "map('lower')" && map != "map(\"lower\")" {
                    return None;
                }
                let rest = head.strip_prefix("attrs")?;
                direct_attribute(&format!("attr{rest}")).map(Native::AllLower)
            }
            _ => None,
        }
    }

    /// The value the engine would give for `entry`, or `None` where this shape does not
    /// cover the case exactly. `disabled` is the entry's disabled condition once known.
    pub(crate) fn eval(&self, entry: &Entry, disabled: Option<bool>) -> Option<Value> {
        Some(match self {
            Native::Const(b) => Value::from(*b),
            Native::Id => Value::from(entry.id.as_str()),
            Native::First(name) => attr_values(&entry.attrs, name)
                .first()
                .map(model_value)
                .unwrap_or(Value::UNDEFINED),
            Native::FirstLower(name) => match attr_values(&entry.attrs, name).first()? {
                ModelValue::Text(t) => Value::from(t.as_str().to_lowercase()),
                ModelValue::Binary(_) => return None,
            },
            Native::Defined { name, negated } => {
                Value::from(attr_values(&entry.attrs, name).is_empty() == *negated)
            }
            Native::AllLower(name) => {
                let mut out = Vec::new();
                for v in attr_values(&entry.attrs, name) {
                    match v {
                        ModelValue::Text(t) => out.push(Value::from(t.as_str().to_lowercase())),
                        ModelValue::Binary(_) => return None,
                    }
                }
                Value::from(out)
            }
            Native::NotDisabled => Value::from(!disabled?),
        })
    }
}

/// Every shape of a list of expression texts, or `None` when one is not recognized.
pub(crate) fn recognize_all<'a>(sources: impl IntoIterator<Item = &'a str>) -> Option<Vec<Native>> {
    sources.into_iter().map(Native::recognize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_recognized_and_others_are_not() {
        let first = |n: &str| Some(Native::First(n.to_string()));
        assert_eq!(Native::recognize(" true "), Some(Native::Const(true)));
        assert_eq!(Native::recognize("id"), Some(Native::Id));
        assert_eq!(
            Native::recognize("not  disabled"),
            Some(Native::NotDisabled)
        );
        assert_eq!(Native::recognize("attr.mail"), first("mail"));
        assert_eq!(Native::recognize("attr['name.x']"), first("name.x"));
        assert_eq!(
            Native::recognize("attr.mail|lower"),
            Some(Native::FirstLower("mail".into()))
        );
        assert_eq!(
            Native::recognize("attr.pwdAccountLockedTime is defined"),
            Some(Native::Defined {
                name: "pwdAccountLockedTime".into(),
                negated: false
            })
        );
        assert_eq!(
            Native::recognize("attr.mail   is not\ndefined"),
            Some(Native::Defined {
                name: "mail".into(),
                negated: true
            })
        );
        assert_eq!(
            Native::recognize("attrs.mail | map( \"lower\" ) | list"),
            Some(Native::AllLower("mail".into()))
        );
        for other in [
            "attr.mail | upper",
            "attr.mail | lower | trim",
            "attrs.mail | map('upper') | list",
            "attrs.mail | list",
            "attr.a or attr.b",
            "not disabled and true",
            "attr.x.y is defined",
            "attrs['a|b'] | map('lower') | list",
            "identity",
            "disabled",
            "attr.mail is defined or attr.uid is defined",
            "",
        ] {
            assert_eq!(Native::recognize(other), None, "{other}");
        }
    }
}
