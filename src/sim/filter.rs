//! Evaluation of SCIM filters (RFC 7644 §3.4.2.2) over stored resources.
//!
//! Parsing is the `scim_v2` crate's ([`scim_v2::filter::Filter`]); this module resolves every
//! attribute path against the simulator's schemas once ("compiling" the filter, so an unknown
//! attribute is a `400 invalidFilter` before any resource is looked at), then evaluates the
//! compiled tree per resource: `eq ne co sw ew pr gt ge lt le`, `and or not`, grouping and value
//! paths such as `emails[type eq "work" and value ew "@example.com"]`. String comparisons follow
//! each attribute's `caseExact` (so `userName` and `emails.value` compare without case);
//! `dateTime` attributes compare as instants.
//!
//! What does not live here: choosing which resources to scan (the `userName eq` index lookup is
//! in [`super::store`]) and PATCH paths ([`super::patch`]), which reuse [`compile_val_filter`].

use super::error::ScimError;
use super::schema::{AttrDef, AttrType, Kind, IRONCLAD};
use super::store::Record;
use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, Filter, ValFilter};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;

/// Where a filter's attribute lives in a stored resource.
#[derive(Debug, Clone, Copy)]
enum Loc {
    /// The server-assigned `id`.
    Id,
    /// `externalId`.
    ExternalId,
    /// `meta.created`, `meta.lastModified`, `meta.resourceType`, `meta.location`, `meta.version`.
    Meta(&'static str),
    /// The `schemas` array.
    Schemas,
    /// A core attribute.
    Core(&'static AttrDef),
    /// An attribute of an extension schema (stored under the extension's URN).
    Ext(&'static str, &'static AttrDef),
    /// A sub-attribute of the element a value path is looking at.
    Elem(&'static AttrDef),
}

/// A resolved attribute path.
#[derive(Debug, Clone)]
struct Target {
    loc: Loc,
    sub: Option<&'static AttrDef>,
    ty: AttrType,
    case_exact: bool,
}

/// A comparison operand, prepared once.
#[derive(Debug, Clone)]
enum Operand {
    Null,
    Bool(bool),
    Number(f64),
    /// The string as given and lower-cased (for caseExact=false comparisons).
    Str(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A compiled filter node.
#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Present(Target),
    Cmp(Target, Op, Operand),
    ValuePath(Target, Box<Node>),
}

/// A filter resolved against a resource kind's schemas, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Compiled {
    root: Node,
}

/// Context an evaluation needs besides the resource (for `meta.location`).
#[derive(Debug, Clone, Copy)]
pub struct EvalCtx<'a> {
    /// The resource kind.
    pub kind: Kind,
    /// Base URL (`http://host:port`) used in `meta.location`.
    pub base: &'a str,
}

/// Parses and compiles a `filter` query parameter.
pub fn parse(kind: Kind, text: &str) -> Result<Compiled, ScimError> {
    let filter: Filter = text
        .parse()
        .map_err(|e| ScimError::invalid_filter(format!("cannot parse filter {text:?}: {e}")))?;
    Ok(Compiled {
        root: compile(kind, &filter)?,
    })
}

impl Compiled {
    /// Whether `rec` matches.
    pub fn matches(&self, rec: &Record, ctx: EvalCtx<'_>) -> bool {
        eval(&self.root, rec, None, ctx)
    }

    /// `Some(name)` when the filter is exactly `userName eq "name"`, which the store answers from
    /// its index instead of a scan.
    pub fn user_name_eq(&self) -> Option<&str> {
        match &self.root {
            Node::Cmp(
                Target {
                    loc: Loc::Core(a),
                    sub: None,
                    ..
                },
                Op::Eq,
                Operand::Str(s, _),
            ) if a.name == "userName" => Some(s),
            _ => None,
        }
    }
}

/// A value-path filter compiled against the sub-attributes of `parent` (used by PATCH paths
/// like `emails[type eq "work"].value`).
#[derive(Debug, Clone)]
pub struct ElemFilter {
    root: Node,
}

/// Compiles the bracketed filter of a PATCH value path.
pub fn compile_val_filter(
    kind: Kind,
    parent: &'static AttrDef,
    vf: &ValFilter,
) -> Result<ElemFilter, ScimError> {
    Ok(ElemFilter {
        root: compile_val(kind, Some(parent), vf)?,
    })
}

impl ElemFilter {
    /// Whether one element of the multi-valued attribute matches.
    pub fn matches(&self, elem: &Value) -> bool {
        // Element-level nodes never look at the resource itself.
        let dummy = Record::placeholder();
        eval(
            &self.root,
            &dummy,
            Some(elem),
            EvalCtx {
                kind: Kind::User,
                base: "",
            },
        )
    }

    /// The `attr eq value` pairs of a filter made only of `eq` comparisons joined by `and`, from
    /// which a missing element can be created (`emails[type eq "work"].value` on a user with no
    /// work email).
    pub fn equalities(&self) -> Option<Vec<(&'static str, Value)>> {
        fn collect(n: &Node, out: &mut Vec<(&'static str, Value)>) -> bool {
            match n {
                Node::And(items) => items.iter().all(|i| collect(i, out)),
                Node::Cmp(
                    Target {
                        loc: Loc::Elem(a), ..
                    },
                    Op::Eq,
                    op,
                ) => {
                    let v = match op {
                        Operand::Str(s, _) => Value::String(s.clone()),
                        Operand::Bool(b) => Value::Bool(*b),
                        Operand::Number(n) => serde_json::Number::from_f64(*n)
                            .map(Value::Number)
                            .unwrap_or(Value::Null),
                        Operand::Null => return false,
                    };
                    out.push((a.name, v));
                    true
                }
                _ => false,
            }
        }
        let mut out = Vec::new();
        collect(&self.root, &mut out).then_some(out)
    }
}

fn compile(kind: Kind, f: &Filter) -> Result<Node, ScimError> {
    Ok(match f {
        Filter::Attr(e) => compile_exp(kind, None, e)?,
        Filter::Not(inner) => Node::Not(Box::new(compile(kind, inner)?)),
        Filter::And(items) => Node::And(
            items
                .iter()
                .map(|i| compile(kind, i))
                .collect::<Result<_, _>>()?,
        ),
        Filter::Or(items) => Node::Or(
            items
                .iter()
                .map(|i| compile(kind, i))
                .collect::<Result<_, _>>()?,
        ),
        Filter::ValuePath(vp) => {
            let t = resolve(kind, None, &vp.attr)?;
            let parent = match (t.loc, t.sub) {
                (Loc::Core(a) | Loc::Ext(_, a), None) if a.multi && a.ty == AttrType::Complex => a,
                _ => {
                    return Err(ScimError::invalid_filter(format!(
                        "{} is not a multi-valued complex attribute",
                        show(&vp.attr)
                    )))
                }
            };
            let inner = compile_val(kind, Some(parent), &vp.filter)?;
            Node::ValuePath(t, Box::new(inner))
        }
    })
}

fn compile_val(
    kind: Kind,
    parent: Option<&'static AttrDef>,
    f: &ValFilter,
) -> Result<Node, ScimError> {
    Ok(match f {
        ValFilter::Attr(e) => compile_exp(kind, parent, e)?,
        ValFilter::Not(inner) => Node::Not(Box::new(compile_val(kind, parent, inner)?)),
        ValFilter::And(items) => Node::And(
            items
                .iter()
                .map(|i| compile_val(kind, parent, i))
                .collect::<Result<_, _>>()?,
        ),
        ValFilter::Or(items) => Node::Or(
            items
                .iter()
                .map(|i| compile_val(kind, parent, i))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn compile_exp(
    kind: Kind,
    parent: Option<&'static AttrDef>,
    e: &AttrExp,
) -> Result<Node, ScimError> {
    match e {
        AttrExp::Present(p) => Ok(Node::Present(resolve(kind, parent, p)?)),
        AttrExp::Comparison(p, op, value) => {
            let mut t = resolve(kind, parent, p)?;
            if t.ty == AttrType::Complex {
                // RFC 7644: a complex attribute without a sub-attribute compares its `value`.
                let complex = match (t.loc, t.sub) {
                    (Loc::Core(a) | Loc::Ext(_, a) | Loc::Elem(a), None) => Some(a),
                    _ => None,
                };
                match complex.and_then(|a| a.find_sub("value")) {
                    Some(v) => {
                        t.sub = Some(v);
                        t.ty = v.ty;
                        t.case_exact = v.case_exact;
                    }
                    None => {
                        return Err(ScimError::invalid_filter(format!(
                            "{} is complex and cannot be compared",
                            show(p)
                        )))
                    }
                }
            }
            let op = match op {
                CompareOp::Eq => Op::Eq,
                CompareOp::Ne => Op::Ne,
                CompareOp::Co => Op::Co,
                CompareOp::Sw => Op::Sw,
                CompareOp::Ew => Op::Ew,
                CompareOp::Gt => Op::Gt,
                CompareOp::Ge => Op::Ge,
                CompareOp::Lt => Op::Lt,
                CompareOp::Le => Op::Le,
            };
            if t.ty == AttrType::Boolean && !matches!(op, Op::Eq | Op::Ne) {
                return Err(ScimError::invalid_filter(format!(
                    "{} is boolean: only eq and ne apply",
                    show(p)
                )));
            }
            let operand = match value {
                CompValue::Null => Operand::Null,
                CompValue::True => Operand::Bool(true),
                CompValue::False => Operand::Bool(false),
                CompValue::Number(n) => Operand::Number(n.as_f64().unwrap_or(f64::NAN)),
                CompValue::Str(s) => Operand::Str(s.clone(), s.to_lowercase()),
            };
            if t.ty == AttrType::DateTime {
                if let Operand::Str(s, _) = &operand {
                    if !matches!(op, Op::Co | Op::Sw | Op::Ew)
                        && chrono::DateTime::parse_from_rfc3339(s).is_err()
                    {
                        return Err(ScimError::invalid_filter(format!(
                            "{s:?} is not an RFC 3339 date-time for {}",
                            show(p)
                        )));
                    }
                }
            }
            Ok(Node::Cmp(t, op, operand))
        }
    }
}

fn show(p: &AttrPath) -> String {
    p.to_string()
}

fn unknown(p: &AttrPath) -> ScimError {
    ScimError::invalid_filter(format!("unknown attribute {} in filter", show(p)))
}

fn leaf(loc: Loc, attr: &'static AttrDef, sub: Option<&'static AttrDef>) -> Target {
    let l = sub.unwrap_or(attr);
    Target {
        loc,
        sub,
        ty: l.ty,
        case_exact: l.case_exact,
    }
}

fn plain(loc: Loc, ty: AttrType, case_exact: bool) -> Target {
    Target {
        loc,
        sub: None,
        ty,
        case_exact,
    }
}

/// Resolves one attribute path against the schemas (`parent` for paths inside brackets).
fn resolve(
    kind: Kind,
    parent: Option<&'static AttrDef>,
    p: &AttrPath,
) -> Result<Target, ScimError> {
    if let Some(parent) = parent {
        // Inside `emails[...]`, names are sub-attributes of `emails`.
        let a = parent.find_sub(&p.name).ok_or_else(|| unknown(p))?;
        if p.sub_attr.is_some() {
            return Err(unknown(p));
        }
        return Ok(leaf(Loc::Elem(a), a, None));
    }
    let (attr, loc_of): (&'static AttrDef, Box<dyn Fn(&'static AttrDef) -> Loc>) = match &p.uri {
        Some(uri) if uri.eq_ignore_ascii_case(kind.core().id) => {
            let a = kind.core().find(&p.name);
            match a {
                Some(a) => (a, Box::new(Loc::Core)),
                None => return common(p),
            }
        }
        Some(uri) => {
            let ext = kind.extension(uri).ok_or_else(|| unknown(p))?;
            let a = ext.find(&p.name).ok_or_else(|| unknown(p))?;
            let id = ext.id;
            (a, Box::new(move |a| Loc::Ext(id, a)))
        }
        None => match kind.core().find(&p.name) {
            Some(a) => (a, Box::new(Loc::Core)),
            None => return common(p),
        },
    };
    let sub = match &p.sub_attr {
        None => None,
        Some(s) => Some(attr.find_sub(s).ok_or_else(|| unknown(p))?),
    };
    Ok(leaf(loc_of(attr), attr, sub))
}

/// The common attributes every resource has (`id`, `externalId`, `meta.*`, `schemas`).
fn common(p: &AttrPath) -> Result<Target, ScimError> {
    let name = p.name.as_str();
    let sub = p.sub_attr.as_deref();
    let t = if name.eq_ignore_ascii_case("id") && sub.is_none() {
        plain(Loc::Id, AttrType::String, true)
    } else if name.eq_ignore_ascii_case("externalId") && sub.is_none() {
        plain(Loc::ExternalId, AttrType::String, true)
    } else if name.eq_ignore_ascii_case("schemas") && sub.is_none() {
        plain(Loc::Schemas, AttrType::Reference, false)
    } else if name.eq_ignore_ascii_case("meta") {
        let s = sub.ok_or_else(|| unknown(p))?;
        let (canon, ty) = [
            ("created", AttrType::DateTime),
            ("lastModified", AttrType::DateTime),
            ("resourceType", AttrType::String),
            ("location", AttrType::Reference),
            ("version", AttrType::String),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .ok_or_else(|| unknown(p))?;
        plain(Loc::Meta(canon), ty, true)
    } else {
        return Err(unknown(p));
    };
    Ok(t)
}

/// The values a target designates in a resource (several for multi-valued attributes).
fn values<'a>(
    rec: &'a Record,
    elem: Option<&'a Value>,
    t: &Target,
    ctx: EvalCtx<'_>,
) -> Vec<Cow<'a, Value>> {
    let mut out: Vec<Cow<'a, Value>> = Vec::new();
    let top: Option<&'a Value> = match t.loc {
        Loc::Id => return vec![Cow::Owned(Value::String(rec.id.clone()))],
        Loc::ExternalId => rec.body.get("externalId"),
        Loc::Schemas => {
            if let Value::Array(a) = super::store::schemas_of(ctx.kind, rec) {
                return a.into_iter().map(Cow::Owned).collect();
            }
            return out;
        }
        Loc::Meta(m) => {
            let meta = super::store::meta_of(ctx.kind, rec, ctx.base);
            return meta.get(m).cloned().map(Cow::Owned).into_iter().collect();
        }
        Loc::Core(a) => rec.body.get(a.name),
        Loc::Ext(urn, a) => {
            if urn == IRONCLAD && a.name == "provider" {
                return rec
                    .provider
                    .as_ref()
                    .map(|p| Cow::Owned(Value::String(p.clone())))
                    .into_iter()
                    .collect();
            }
            rec.body.get(urn).and_then(|e| e.get(a.name))
        }
        Loc::Elem(a) => elem.and_then(|e| e.get(a.name)),
    };
    let Some(top) = top else { return out };
    let mut push = |v: &'a Value| match t.sub {
        Some(s) => {
            if let Some(x) = v.get(s.name) {
                out.push(Cow::Borrowed(x));
            }
        }
        None => out.push(Cow::Borrowed(v)),
    };
    match top {
        Value::Array(items) => items.iter().for_each(&mut push),
        v => push(v),
    }
    out
}

fn eval(n: &Node, rec: &Record, elem: Option<&Value>, ctx: EvalCtx<'_>) -> bool {
    match n {
        Node::And(items) => items.iter().all(|i| eval(i, rec, elem, ctx)),
        Node::Or(items) => items.iter().any(|i| eval(i, rec, elem, ctx)),
        Node::Not(inner) => !eval(inner, rec, elem, ctx),
        Node::Present(t) => values(rec, elem, t, ctx).iter().any(|v| present(v)),
        Node::Cmp(t, op, operand) => {
            let vals = values(rec, elem, t, ctx);
            match (op, operand) {
                (Op::Eq, Operand::Null) => !vals.iter().any(|v| present(v)),
                (Op::Ne, Operand::Null) => vals.iter().any(|v| present(v)),
                (Op::Ne, _) => !vals.iter().any(|v| compare(v, Op::Eq, operand, t)),
                _ => vals.iter().any(|v| compare(v, *op, operand, t)),
            }
        }
        Node::ValuePath(t, inner) => {
            let vals = values(rec, elem, t, ctx);
            vals.iter().any(|v| eval(inner, rec, Some(v), ctx))
        }
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn compare(v: &Value, op: Op, operand: &Operand, t: &Target) -> bool {
    match (v, operand) {
        (Value::Bool(b), Operand::Bool(o)) => op == Op::Eq && b == o,
        (Value::Number(n), Operand::Number(o)) => {
            let Some(n) = n.as_f64() else { return false };
            ordered(n.partial_cmp(o), op)
        }
        (Value::String(s), Operand::Str(raw, lower)) => {
            if t.ty == AttrType::DateTime && !matches!(op, Op::Co | Op::Sw | Op::Ew) {
                let (Ok(a), Ok(b)) = (
                    chrono::DateTime::parse_from_rfc3339(s),
                    chrono::DateTime::parse_from_rfc3339(raw),
                ) else {
                    return false;
                };
                return ordered(Some(a.cmp(&b)), op);
            }
            let (s, o): (Cow<'_, str>, &str) = if t.case_exact {
                (Cow::Borrowed(s.as_str()), raw.as_str())
            } else {
                (Cow::Owned(s.to_lowercase()), lower.as_str())
            };
            match op {
                Op::Co => s.contains(o),
                Op::Sw => s.starts_with(o),
                Op::Ew => s.ends_with(o),
                _ => ordered(Some(s.as_ref().cmp(o)), op),
            }
        }
        _ => false,
    }
}

fn ordered(ord: Option<Ordering>, op: Op) -> bool {
    let Some(ord) = ord else { return false };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Co | Op::Sw | Op::Ew => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(body: Value) -> Record {
        let mut r = Record::placeholder();
        r.id = "abc".into();
        r.body = body.as_object().unwrap().clone();
        r.provider = Some("saml".into());
        r
    }

    fn m(f: &str, r: &Record) -> bool {
        parse(Kind::User, f).unwrap().matches(
            r,
            EvalCtx {
                kind: Kind::User,
                base: "http://h",
            },
        )
    }

    #[test]
    fn operators() {
        let r = user(json!({
            "userName": "Alex.Doe@Example.com", "title": "Lawyer", "active": true,
            "name": {"givenName": "Alex", "familyName": "Doe"},
            "emails": [{"value": "Alex.Doe@Example.com", "type": "work", "primary": true},
                       {"value": "alex@home.org", "type": "home"}],
            "externalId": "E-1",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Legal"}
        }));
        assert!(m(r#"userName eq "alex.doe@example.com""#, &r));
        assert!(m(r#"USERNAME EQ "ALEX.DOE@EXAMPLE.COM""#, &r));
        assert!(!m(r#"userName ne "alex.doe@example.com""#, &r));
        assert!(m(r#"userName co "doe@""#, &r));
        assert!(m(r#"userName sw "alex""#, &r));
        assert!(m(r#"userName ew ".COM""#, &r));
        assert!(m(r#"title pr"#, &r));
        assert!(!m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter pr"#,
            &r
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "legal""#,
            &r
        ));
        assert!(m(r#"title gt "K" and title lt "M""#, &r));
        assert!(m(r#"title ge "Lawyer" and title le "lawyer""#, &r));
        assert!(m(r#"not (title eq "x")"#, &r));
        assert!(m(
            r#"title eq "x" or (active eq true and name.familyName eq "doe")"#,
            &r
        ));
        assert!(m(r#"emails[type eq "home" and value ew "home.org"]"#, &r));
        assert!(!m(r#"emails[type eq "work" and value ew "home.org"]"#, &r));
        assert!(m(r#"emails.value eq "alex@home.org""#, &r));
        assert!(m(r#"emails eq "alex@home.org""#, &r));
        // externalId and id are caseExact.
        assert!(m(r#"externalId eq "E-1""#, &r));
        assert!(!m(r#"externalId eq "e-1""#, &r));
        assert!(m(r#"id eq "abc""#, &r));
        assert!(m(r#"meta.resourceType eq "User""#, &r));
        assert!(m(r#"meta.created gt "2000-01-01T00:00:00Z""#, &r));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:ironclad:2.0:User:provider eq "saml""#,
            &r
        ));
        assert!(m(r#"title ne "x""#, &r));
        assert!(m(r#"name.formatted ne "x""#, &r));
    }

    #[test]
    fn errors() {
        for f in [
            r#"nickName eq "x""#,
            r#"name.middle eq "x""#,
            r#"active gt true"#,
            r#"userName eq"#,
            r#"urn:bogus:thing eq "x""#,
            r#"title[value eq "x"]"#,
            r#"meta.created gt "yesterday""#,
        ] {
            let e = parse(Kind::User, f).unwrap_err();
            assert_eq!(e.scim_type, Some("invalidFilter"), "{f}");
        }
    }

    #[test]
    fn user_name_fast_path() {
        let c = parse(Kind::User, r#"userName eq "a@b.c""#).unwrap();
        assert_eq!(c.user_name_eq(), Some("a@b.c"));
        let c = parse(Kind::User, r#"userName co "a""#).unwrap();
        assert_eq!(c.user_name_eq(), None);
    }

    #[test]
    fn groups() {
        let mut g = Record::placeholder();
        g.body = json!({"displayName": "Legal Ops Group", "members": [{"value": "u1"}]})
            .as_object()
            .unwrap()
            .clone();
        let ctx = EvalCtx {
            kind: Kind::Group,
            base: "",
        };
        let f = parse(Kind::Group, r#"displayName eq "legal ops group""#).unwrap();
        assert!(f.matches(&g, ctx));
        let f = parse(Kind::Group, r#"members[value eq "u1"]"#).unwrap();
        assert!(f.matches(&g, ctx));
        let f = parse(Kind::Group, r#"members.value eq "U1""#).unwrap();
        assert!(!f.matches(&g, ctx));
        assert!(parse(Kind::Group, r#"userName eq "x""#).is_err());
    }
}
