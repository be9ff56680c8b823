//! The expression language of mapping files: a sandboxed minijinja environment (no I/O, no
//! templates, bounded by fuel) extended with the filters and functions identity mappings need,
//! the objects through which an entry's attributes are seen, and the load-time checks that
//! reject unknown variables, filters, tests and functions and bad regular expressions with the
//! position of the offending word.
//!
//! How an entry is exposed (documented in `docs/mapping.md`):
//! `attr.NAME` is the first value of attribute NAME (names are case-insensitive; absent is
//! undefined), `attrs.NAME` all its values as a list (absent is an empty list), `id` the stable
//! source id, `dn` the DN or resource URL, `now` the run time as `YYYY-MM-DDTHH:MM:SSZ`,
//! `groups` the names of the groups the entry belongs to (nesting followed) and, except in the
//! `disabled` expression itself, `disabled`.
//!
//! What does not live here: which expression runs when (see [`super::eval`]) and where
//! positions in the mapping file come from (see [`super::load`]).

use super::index::{group_name, EntryHandle, Index};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use minijinja::value::{Enumerator, Object, Rest};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value};
use regex::Regex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Fuel one expression may burn (roughly: instructions, plus one per 64 bytes of data made).
pub const FUEL_PER_EXPRESSION: u64 = 20_000;
/// Longest text an expression may produce for one attribute, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Most values a multi-valued target (`emails`) may receive.
pub const MAX_VALUES: usize = 100;
/// Longest expression source accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 8192;
/// Largest compiled size of one regular expression, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Regular expressions cached per mapping before the cache is cleared.
const REGEX_CACHE_MAX: usize = 512;

/// Variables every expression over an entry may use.
pub(crate) const ENTRY_VARS: &[&str] = &["attr", "attrs", "id", "dn", "now", "groups"];
/// Variables of expressions that run after `disabled` is known.
pub(crate) const ENTRY_VARS_WITH_DISABLED: &[&str] =
    &["attr", "attrs", "id", "dn", "now", "groups", "disabled"];

/// Builtin filters and functions that make no sense without HTML templates or that print
/// internal state; they are removed from the environment.
const REMOVED_FILTERS: &[&str] = &["safe", "escape", "e", "pprint", "indent"];
const REMOVED_TESTS: &[&str] = &["safe", "escaped"];
const REMOVED_GLOBALS: &[&str] = &["debug", "namespace"];

// ---------------------------------------------------------------------------------------------
// The environment.
// ---------------------------------------------------------------------------------------------

/// A cache of compiled regular expressions shared by the filters of one environment.
#[derive(Debug, Default)]
struct RegexCache(Mutex<HashMap<String, Arc<Regex>>>);

impl RegexCache {
    fn get(&self, pattern: &str) -> Result<Arc<Regex>, Error> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(pattern) {
            return Ok(r.clone());
        }
        let re = Arc::new(
            compile_regex(pattern).map_err(|m| Error::new(ErrorKind::InvalidOperation, m))?,
        );
        if map.len() >= REGEX_CACHE_MAX {
            map.clear();
        }
        map.insert(pattern.to_string(), re.clone());
        Ok(re)
    }
}

/// Compiles a regular expression with the size limits every mapping regex obeys.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regular expression: {e}"))
}

/// Builds the environment every mapping expression is compiled in. `fuel` bounds one
/// evaluation.
pub(crate) fn environment(fuel: u64) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_debug(true);
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(fuel));
    env.set_recursion_limit(100);
    for f in REMOVED_FILTERS {
        env.remove_filter(f);
    }
    for t in REMOVED_TESTS {
        env.remove_test(t);
    }
    for g in REMOVED_GLOBALS {
        env.remove_global(g);
    }
    let cache = Arc::new(RegexCache::default());

    // Absent input stays absent for these instead of failing.
    env.add_filter(
        "split",
        |v: &Value, sep: Option<Arc<str>>, max: Option<i64>| {
            if is_absent(v) {
                return Ok(Value::from(Vec::<Value>::new()));
            }
            minijinja::filters::split(v, sep, max)
        },
    );

    let c = cache.clone();
    env.add_filter("regex_match", move |v: &Value, pattern: &str| {
        regex_match(&c, v, pattern)
    });
    let c = cache.clone();
    env.add_test("matching", move |v: &Value, pattern: &str| {
        regex_match(&c, v, pattern)
    });
    let c = cache.clone();
    env.add_filter(
        "regex_capture",
        move |v: &Value, pattern: &str, group: Option<Value>| -> Result<Value, Error> {
            let Some(text) = text_of(v)? else {
                return Ok(Value::UNDEFINED);
            };
            let re = c.get(pattern)?;
            let Some(caps) = re.captures(&text) else {
                return Ok(Value::UNDEFINED);
            };
            let m = match &group {
                None => caps.get(if re.captures_len() > 1 { 1 } else { 0 }),
                Some(g) => match (g.as_i64(), g.as_str()) {
                    (Some(i), _) => usize::try_from(i).ok().and_then(|i| caps.get(i)),
                    (None, Some(name)) => caps.name(name),
                    _ => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            "regex_capture: the group is a number or a name",
                        ))
                    }
                },
            };
            Ok(m.map(|m| Value::from(m.as_str()))
                .unwrap_or(Value::UNDEFINED))
        },
    );
    let c = cache;
    env.add_filter(
        "regex_replace",
        move |v: &Value, pattern: &str, replacement: &str| -> Result<Value, Error> {
            let Some(text) = text_of(v)? else {
                return Ok(Value::UNDEFINED);
            };
            let re = c.get(pattern)?;
            Ok(Value::from(re.replace_all(&text, replacement).into_owned()))
        },
    );
    env.add_filter("as_bool", |v: &Value| -> Result<bool, Error> {
        super::eval::bool_of(v)
            .map(|b| b.unwrap_or(false))
            .map_err(invalid)
    });
    env.add_filter("normalize_diacritics", |v: &Value| {
        map_text(v, |s| Ok(Value::from(fold_diacritics(s))))
    });
    env.add_filter("email_local", |v: &Value| {
        map_text(v, |s| {
            Ok(Value::from(match s.rsplit_once('@') {
                Some((local, _)) => local,
                None => s,
            }))
        })
    });
    env.add_filter("email_domain", |v: &Value| {
        map_text(v, |s| {
            Ok(match s.rsplit_once('@') {
                Some((_, domain)) => Value::from(domain),
                None => Value::UNDEFINED,
            })
        })
    });
    env.add_filter(
        "bitand",
        |v: &Value, mask: &Value| -> Result<Value, Error> {
            Ok(Value::from(
                int_of(v)?.unwrap_or(0) & int_of(mask)?.unwrap_or(0),
            ))
        },
    );
    env.add_filter(
        "has_bit",
        |v: &Value, mask: &Value| -> Result<bool, Error> {
            let mask = int_of(mask)?.unwrap_or(0);
            Ok(mask != 0 && int_of(v)?.unwrap_or(0) & mask == mask)
        },
    );
    env.add_filter("rdn_value", |v: &Value| {
        map_text(v, |s| {
            let rdns = dn_rdns(s).map_err(|m| Error::new(ErrorKind::InvalidOperation, m))?;
            Ok(rdns
                .into_iter()
                .next()
                .and_then(|r| r.avas.into_iter().next())
                .map(|a| Value::from(a.value))
                .unwrap_or(Value::UNDEFINED))
        })
    });
    env.add_filter("rdn_type", |v: &Value| {
        map_text(v, |s| {
            let rdns = dn_rdns(s).map_err(|m| Error::new(ErrorKind::InvalidOperation, m))?;
            Ok(rdns
                .into_iter()
                .next()
                .and_then(|r| r.avas.into_iter().next())
                .map(|a| Value::from(a.typ))
                .unwrap_or(Value::UNDEFINED))
        })
    });
    env.add_filter("parent_dn", |v: &Value| {
        map_text(v, |s| {
            let rdns = dn_rdns(s).map_err(|m| Error::new(ErrorKind::InvalidOperation, m))?;
            Ok(match rdns.get(1) {
                Some(r) => Value::from(s[r.start..].trim()),
                None => Value::UNDEFINED,
            })
        })
    });
    env.add_filter(
        "dn_values",
        |v: &Value, typ: &str| -> Result<Value, Error> {
            let Some(s) = text_of(v)? else {
                return Ok(Value::from(Vec::<Value>::new()));
            };
            let rdns = dn_rdns(&s).map_err(|m| Error::new(ErrorKind::InvalidOperation, m))?;
            Ok(Value::from(
                rdns.into_iter()
                    .flat_map(|r| r.avas)
                    .filter(|a| a.typ.eq_ignore_ascii_case(typ))
                    .map(|a| Value::from(a.value))
                    .collect::<Vec<_>>(),
            ))
        },
    );
    env.add_filter("filetime", |v: &Value| -> Result<Value, Error> {
        let Some(n) = int_of(v)? else {
            return Ok(Value::UNDEFINED);
        };
        Ok(filetime_to_iso(n)
            .map(Value::from)
            .unwrap_or(Value::UNDEFINED))
    });
    env.add_filter("generalized_time", |v: &Value| {
        map_text(v, |s| {
            generalized_to_iso(s)
                .map(Value::from)
                .ok_or_else(|| invalid(format!("`{s}` is not an LDAP generalized time")))
        })
    });
    env.add_filter("iso_date", |v: &Value| {
        map_text(v, |s| {
            iso_date(s)
                .map(Value::from)
                .ok_or_else(|| invalid(format!("`{s}` is not an ISO 8601 date or time")))
        })
    });
    env.add_filter("guid", |v: &Value| -> Result<Value, Error> {
        if let Some(b) = v.as_bytes().filter(|_| v.as_str().is_none()) {
            return guid_text(b)
                .map(Value::from)
                .ok_or_else(|| invalid(format!("a GUID has 16 bytes, not {}", b.len())));
        }
        map_text(v, |s| Ok(Value::from(s.to_lowercase())))
    });
    env.add_filter("b64", |v: &Value| -> Result<Value, Error> {
        if let Some(b) = v.as_bytes().filter(|_| v.as_str().is_none()) {
            return Ok(Value::from(
                base64::engine::general_purpose::STANDARD.encode(b),
            ));
        }
        map_text(v, |s| {
            Ok(Value::from(
                base64::engine::general_purpose::STANDARD.encode(s.as_bytes()),
            ))
        })
    });
    env.add_function(
        REMEMBER_DISABLED,
        |state: &State, d: bool| -> Result<bool, Error> {
            ctx_of(state)?.set_disabled(d);
            Ok(d)
        },
    );
    env.add_function("coalesce", |args: Rest<Value>| -> Value {
        args.0
            .into_iter()
            .find(|v| !is_empty_value(v))
            .unwrap_or(Value::UNDEFINED)
    });
    env.add_function(
        "lookup",
        |state: &State, key: &Value, attribute: Option<&str>| -> Result<Value, Error> {
            let ctx = ctx_of(state)?;
            let owned;
            let key = match key.as_str() {
                Some(k) => k,
                None => match text_of(key)? {
                    Some(k) => {
                        owned = k;
                        owned.as_str()
                    }
                    None => return Ok(Value::UNDEFINED),
                },
            };
            let Some(pos) = ctx.index.find(key) else {
                return Ok(Value::UNDEFINED);
            };
            Ok(match attribute {
                None => Value::from_object(EntryView {
                    entry: EntryHandle::InSnapshot(ctx.index.clone(), pos),
                    index: ctx.index.clone(),
                    pos: Some(pos),
                }),
                Some(a) => ctx
                    .index
                    .entry(pos)
                    .and_then(|e| attr_values(&e.attrs, a).first())
                    .map(model_value)
                    .unwrap_or(Value::UNDEFINED),
            })
        },
    );
    env.add_function(
        "member_of",
        |state: &State, name: &str| -> Result<bool, Error> {
            let ctx = ctx_of(state)?;
            let Some(pos) = ctx.pos else {
                return Ok(false);
            };
            let mine = ctx.index.groups_of(pos);
            Ok(ctx
                .index
                .groups_named(name)
                .iter()
                .any(|g| mine.contains(g) || *g == pos))
        },
    );
    env
}

fn invalid(m: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, m)
}

fn regex_match(cache: &RegexCache, v: &Value, pattern: &str) -> Result<bool, Error> {
    if let Some(s) = v.as_str() {
        return Ok(cache.get(pattern)?.is_match(s));
    }
    let Some(text) = text_of(v)? else {
        return Ok(false);
    };
    Ok(cache.get(pattern)?.is_match(&text))
}

/// Undefined or none.
pub(crate) fn is_absent(v: &Value) -> bool {
    v.is_undefined() || v.is_none()
}

/// Absent, an empty string or an empty list: what `coalesce` skips and what counts as "no
/// value" for a target.
pub(crate) fn is_empty_value(v: &Value) -> bool {
    if is_absent(v) {
        return true;
    }
    if let Some(s) = v.as_str() {
        return s.trim().is_empty();
    }
    matches!(v.kind(), minijinja::value::ValueKind::Seq) && v.len() == Some(0)
}

/// The text of a single value: `None` when absent; numbers and booleans as written; bytes as
/// base64; a one-element list as its element. Longer lists are an error.
pub(crate) fn text_of(v: &Value) -> Result<Option<String>, Error> {
    use minijinja::value::ValueKind as K;
    Ok(match v.kind() {
        K::Undefined | K::None => None,
        K::String => v.as_str().map(str::to_string),
        K::Bytes => v
            .as_bytes()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        K::Bool => Some(if v.is_true() { "true" } else { "false" }.to_string()),
        K::Number => Some(v.to_string()),
        K::Seq | K::Iterable => {
            let items: Vec<Value> = v.try_iter()?.take(2).collect();
            match items.as_slice() {
                [] => None,
                [one] => text_of(one)?,
                _ => {
                    return Err(invalid(
                        "expected one value, got a list (pick one with `| first`)".to_string(),
                    ))
                }
            }
        }
        _ => return Err(invalid(format!("expected a text value, got {}", v.kind()))),
    })
}

fn map_text(v: &Value, f: impl FnOnce(&str) -> Result<Value, Error>) -> Result<Value, Error> {
    if let Some(s) = v.as_str() {
        return f(s);
    }
    match text_of(v)? {
        None => Ok(Value::UNDEFINED),
        Some(s) => f(&s),
    }
}

/// An integer from a number or a decimal (or `0x` hexadecimal) string; `None` when absent.
fn int_of(v: &Value) -> Result<Option<i64>, Error> {
    if is_absent(v) {
        return Ok(None);
    }
    if v.kind() == minijinja::value::ValueKind::Number {
        if let Some(i) = v.as_i64() {
            return Ok(Some(i));
        }
    }
    let owned;
    let t = match v.as_str() {
        Some(s) => s.trim(),
        None => {
            let Some(s) = text_of(v)? else {
                return Ok(None);
            };
            owned = s;
            owned.trim()
        }
    };
    if t.is_empty() {
        return Ok(None);
    }
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => t
            .parse::<i64>()
            .ok()
            .or_else(|| t.parse::<u64>().ok().map(|u| u as i64)),
    };
    parsed
        .map(Some)
        .ok_or_else(|| invalid(format!("`{t}` is not an integer")))
}

// ---------------------------------------------------------------------------------------------
// Objects: how entries are seen.
// ---------------------------------------------------------------------------------------------

/// One attribute value as an expression value: text as a string, binary as bytes.
pub(crate) fn model_value(v: &crate::model::Value) -> Value {
    match v {
        crate::model::Value::Text(s) => Value::from(s.as_str()),
        crate::model::Value::Binary(b) => Value::from_bytes(b.to_vec()),
    }
}

/// The values of an attribute, names compared case-insensitively (as [`Attributes::get`]
/// does, without allocating: this runs for every attribute an expression reads).
///
/// [`Attributes::get`]: crate::model::Attributes::get
pub(crate) fn attr_values<'a>(
    attrs: &'a crate::model::Attributes,
    name: &str,
) -> &'a [crate::model::Value] {
    attrs.get(name)
}

/// `attr` (first values) or `attrs` (all values) of one entry; names case-insensitive.
#[derive(Debug)]
struct AttrView {
    entry: EntryHandle,
    all: bool,
}

impl Object for AttrView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let values = attr_values(&self.entry.get().attrs, key);
        if self.all {
            Some(Value::from(
                values.iter().map(model_value).collect::<Vec<_>>(),
            ))
        } else {
            values.first().map(model_value)
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let names: Vec<Value> = self
            .entry
            .get()
            .attrs
            .iter()
            .map(|(n, _)| Value::from(n))
            .collect();
        Enumerator::Values(names)
    }
}

/// The entry `lookup(key)` returns: `.attr`, `.attrs`, `.id`, `.dn`, `.groups`.
#[derive(Debug)]
struct EntryView {
    entry: EntryHandle,
    index: Arc<Index>,
    pos: Option<usize>,
}

impl Object for EntryView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        entry_field(&self.entry, &self.index, self.pos, key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["attr", "attrs", "id", "dn", "groups"])
    }
}

fn entry_field(
    entry: &EntryHandle,
    index: &Arc<Index>,
    pos: Option<usize>,
    key: &str,
) -> Option<Value> {
    Some(match key {
        "attr" => Value::from_object(AttrView {
            entry: entry.clone(),
            all: false,
        }),
        "attrs" => Value::from_object(AttrView {
            entry: entry.clone(),
            all: true,
        }),
        "id" => Value::from(entry.get().id.as_str()),
        "dn" => Value::from(entry.get().locator.as_str()),
        "groups" => {
            let names: Vec<Value> = pos
                .map(|p| index.groups_of(p))
                .unwrap_or(&[])
                .iter()
                .filter_map(|g| index.entry(*g))
                .map(|e| Value::from(group_name(e)))
                .collect();
            Value::from(names)
        }
        _ => return None,
    })
}

/// The root of one evaluation: the entry, the snapshot tables and the run time.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub index: Arc<Index>,
    pub entry: EntryHandle,
    /// The entry's position in the index, when it is part of the snapshot.
    pub pos: Option<usize>,
    pub now: Value,
    attr: Value,
    /// 0: not known yet, 1: false, 2: true.
    disabled: AtomicU8,
}

/// The internal function that records the `disabled` condition during the one-pass
/// evaluation. Names starting with `__` are refused in mapping files.
pub(crate) const REMEMBER_DISABLED: &str = "__ironbridge_remember_disabled";

/// The hidden variable through which functions reach the evaluation root. Not a legal
/// identifier in a mapping (load rejects unknown variables), so expressions cannot use it.
const CTX_VAR: &str = "__ironbridge_ctx";

impl Ctx {
    pub(crate) fn new(
        index: Arc<Index>,
        entry: EntryHandle,
        pos: Option<usize>,
        now: Value,
    ) -> Arc<Ctx> {
        let attr = Value::from_object(AttrView {
            entry: entry.clone(),
            all: false,
        });
        Arc::new(Ctx {
            index,
            entry,
            pos,
            now,
            attr,
            disabled: AtomicU8::new(0),
        })
    }

    pub(crate) fn set_disabled(&self, d: bool) {
        self.disabled
            .store(if d { 2 } else { 1 }, Ordering::Relaxed);
    }

    pub(crate) fn value(self: &Arc<Self>) -> Value {
        Value::from_dyn_object(self.clone())
    }
}

impl Object for Ctx {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        match key {
            "attr" => Some(self.attr.clone()),
            "now" => Some(self.now.clone()),
            "disabled" => match self.disabled.load(Ordering::Relaxed) {
                1 => Some(Value::from(false)),
                2 => Some(Value::from(true)),
                _ => None,
            },
            CTX_VAR => Some(Value::from_dyn_object(self.clone())),
            k => entry_field(&self.entry, &self.index, self.pos, k),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["attr", "attrs", "id", "dn", "now", "groups", "disabled"])
    }
}

fn ctx_of(state: &State) -> Result<Arc<Ctx>, Error> {
    state
        .lookup(CTX_VAR)
        .and_then(|v| v.downcast_object::<Ctx>())
        .ok_or_else(|| invalid("this function needs an entry to work on".to_string()))
}

// ---------------------------------------------------------------------------------------------
// Text helpers: diacritics, DNs, times, GUIDs.
// ---------------------------------------------------------------------------------------------

/// Removes diacritics: compatibility decomposition with combining marks dropped, plus the
/// letters that do not decompose (ß→ss, ø→o, æ→ae, œ→oe, ł→l, đ→d, ð→d, þ→th, ı→i).
pub(crate) fn fold_diacritics(s: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization as _;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let special = match c {
            'ß' => Some("ss"),
            'ẞ' => Some("SS"),
            'ø' => Some("o"),
            'Ø' => Some("O"),
            'æ' => Some("ae"),
            'Æ' => Some("AE"),
            'œ' => Some("oe"),
            'Œ' => Some("OE"),
            'ł' => Some("l"),
            'Ł' => Some("L"),
            'đ' => Some("d"),
            'Đ' => Some("D"),
            'ð' => Some("d"),
            'Ð' => Some("D"),
            'þ' => Some("th"),
            'Þ' => Some("TH"),
            'ı' => Some("i"),
            _ => None,
        };
        match special {
            Some(r) => out.push_str(r),
            None if c.is_ascii() => out.push(c),
            None => out.extend(std::iter::once(c).nfkd().filter(|d| !is_combining_mark(*d))),
        }
    }
    out
}

/// One attribute type and value of an RDN, the value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ava {
    pub typ: String,
    pub value: String,
}

/// One RDN: its attribute-value assertions and where it starts in the DN text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rdn {
    pub avas: Vec<Ava>,
    pub start: usize,
}

/// Parses a DN (RFC 4514: `,` or `;` between RDNs, `+` inside one, `\,` and `\2C` escapes,
/// `"quoted"` values, `#hex` values kept as written).
pub(crate) fn dn_rdns(dn: &str) -> Result<Vec<Rdn>, String> {
    let b = dn.as_bytes();
    let mut i = 0;
    let mut out: Vec<Rdn> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i] == b' ' {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if i >= b.len() {
        return Ok(out);
    }
    let mut rdn = Rdn {
        avas: Vec::new(),
        start: i,
    };
    loop {
        skip_ws(&mut i);
        let ts = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' && b[i] != b'+' && b[i] != b';' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return Err(format!("`{dn}` is not a DN: expected `type=value`"));
        }
        let typ = dn[ts..i].trim().to_string();
        if typ.is_empty() {
            return Err(format!("`{dn}` is not a DN: an attribute type is empty"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut bytes: Vec<u8> = Vec::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                bytes.push(b[i]);
                i += 1;
            }
            if i >= b.len() {
                return Err(format!("`{dn}` is not a DN: unclosed quote"));
            }
            i += 1;
            skip_ws(&mut i);
        } else {
            // Trailing unescaped spaces are not part of the value.
            let mut keep = 0;
            while i < b.len() && !matches!(b[i], b',' | b'+' | b';') {
                if b[i] == b'\\' {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (b.get(i + 1), b.get(i + 2)) {
                        (Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                            let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                            bytes.push(v as u8);
                            i += 3;
                        }
                        (Some(&c), _) => {
                            bytes.push(c);
                            i += 2;
                        }
                        (None, _) => {
                            return Err(format!("`{dn}` is not a DN: it ends with `\\`"));
                        }
                    }
                    keep = bytes.len();
                } else {
                    bytes.push(b[i]);
                    if b[i] != b' ' {
                        keep = bytes.len();
                    }
                    i += 1;
                }
            }
            bytes.truncate(keep);
        }
        let value = String::from_utf8(bytes)
            .map_err(|_| format!("`{dn}` is not a DN: an escaped value is not UTF-8"))?;
        rdn.avas.push(Ava { typ, value });
        if i >= b.len() {
            out.push(rdn);
            return Ok(out);
        }
        match b[i] {
            b'+' => i += 1,
            b',' | b';' => {
                i += 1;
                out.push(rdn);
                skip_ws(&mut i);
                rdn = Rdn {
                    avas: Vec::new(),
                    start: i,
                };
            }
            _ => return Err(format!("`{dn}` is not a DN: unexpected text after a value")),
        }
    }
}

/// A DN in a form two spellings of the same DN share: types and values lower-cased, spaces
/// and escapes normalized, multi-valued RDNs sorted. Text that is not a DN is lower-cased.
pub(crate) fn normalize_dn(dn: &str) -> String {
    match dn_rdns(dn) {
        Ok(rdns) if !rdns.is_empty() => {
            let mut out = String::with_capacity(dn.len());
            for (i, r) in rdns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let ava = |a: &Ava| {
                    let mut s = String::with_capacity(a.typ.len() + a.value.len() + 1);
                    s.push_str(&a.typ.to_ascii_lowercase());
                    s.push('=');
                    for c in a.value.chars().flat_map(char::to_lowercase) {
                        if matches!(c, ',' | '+' | '\\') {
                            s.push('\\');
                        }
                        s.push(c);
                    }
                    s
                };
                if let [one] = r.avas.as_slice() {
                    out.push_str(&ava(one));
                } else {
                    let mut avas: Vec<String> = r.avas.iter().map(ava).collect();
                    avas.sort();
                    out.push_str(&avas.join("+"));
                }
            }
            out
        }
        _ => dn.trim().to_lowercase(),
    }
}

fn iso(dt: DateTime<Utc>) -> String {
    dt.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The run time as expressions see it.
pub(crate) fn now_value(now: DateTime<Utc>) -> Value {
    Value::from(iso(now))
}

/// AD FILETIME (100 ns intervals since 1601-01-01 UTC) to `YYYY-MM-DDTHH:MM:SSZ`. `0` and
/// the largest value mean "never" and give `None`.
pub(crate) fn filetime_to_iso(ft: i64) -> Option<String> {
    if ft <= 0 || ft == i64::MAX {
        return None;
    }
    let secs = ft / 10_000_000 - 11_644_473_600;
    DateTime::<Utc>::from_timestamp(secs, 0).map(iso)
}

/// LDAP generalized time (`YYYYMMDDHH[MM[SS]][.fff][Z|±HHMM]`) to UTC
/// `YYYY-MM-DDTHH:MM:SSZ`. A time without a zone is taken as UTC.
pub(crate) fn generalized_to_iso(s: &str) -> Option<String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if !(digits == 10 || digits == 12 || digits >= 14) {
        return None;
    }
    let main = &s[..digits.min(14)];
    let mut rest = &s[digits.min(14)..];
    if digits > 14 {
        return None;
    }
    if let Some(r) = rest.strip_prefix(['.', ',']) {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &r[n..];
    }
    let padded = format!("{main:0<14}");
    let naive = NaiveDateTime::parse_from_str(&padded, "%Y%m%d%H%M%S").ok()?;
    let offset_secs: i32 = match rest {
        "" | "Z" | "z" => 0,
        tz if (tz.len() == 5 || tz.len() == 3) && (tz.starts_with('+') || tz.starts_with('-')) => {
            let h: i32 = tz.get(1..3)?.parse().ok()?;
            let m: i32 = if tz.len() == 5 {
                tz.get(3..5)?.parse().ok()?
            } else {
                0
            };
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let utc = Utc.from_utc_datetime(&naive) - chrono::Duration::seconds(i64::from(offset_secs));
    Some(iso(utc))
}

/// The date part (`YYYY-MM-DD`) of an RFC 3339 time, a generalized time or a date.
pub(crate) fn iso_date(s: &str) -> Option<String> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc).format("%Y-%m-%d").to_string());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.format("%Y-%m-%d").to_string());
    }
    generalized_to_iso(s).map(|t| t[..10].to_string())
}

/// A 16-byte Microsoft GUID (objectGUID) in its text form: the first three groups are
/// little-endian.
pub(crate) fn guid_text(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15]
    ))
}

// ---------------------------------------------------------------------------------------------
// Load-time checks.
// ---------------------------------------------------------------------------------------------

/// What an identifier in an expression is, by where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Variable,
    Filter,
    Test,
    Function,
}

/// A compile or check problem at a byte offset of the expression text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExprProblem {
    pub offset: usize,
    pub message: String,
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None",
];

/// Compiles `src` and checks every name in it: variables against `vars`, filters, tests and
/// functions against the environment, and literal regular expressions given to the regex
/// filters. Returns the first problem, at its offset in `src`.
pub(crate) fn check_expression(
    env: &Environment<'static>,
    src: &str,
    vars: &[&str],
) -> Result<(), ExprProblem> {
    if src.len() > MAX_EXPRESSION_BYTES {
        return Err(ExprProblem {
            offset: 0,
            message: format!("expression longer than {MAX_EXPRESSION_BYTES} bytes"),
        });
    }
    if src.trim().is_empty() {
        return Err(ExprProblem {
            offset: 0,
            message: "empty expression".to_string(),
        });
    }
    let compiled = env.compile_expression(src).map_err(|e| {
        let offset = e
            .range()
            .map(|r| r.start)
            .or_else(|| e.line().map(|l| line_offset(src, l)))
            .unwrap_or(0);
        ExprProblem {
            offset: offset.min(src.len()),
            message: format!(
                "invalid expression: {}",
                e.detail()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.kind().to_string())
            ),
        }
    })?;
    let tokens = tokenize(src);
    if let Some(t) = tokens
        .iter()
        .find(|t| t.role.is_some() && t.text.starts_with("__"))
    {
        return Err(ExprProblem {
            offset: t.start,
            message: format!("`{}`: names starting with `__` are reserved", t.text),
        });
    }
    let undeclared = compiled.undeclared_variables(false);
    let globals: Vec<String> = env.globals().map(|(n, _)| n.to_string()).collect();
    for name in &undeclared {
        if !vars.contains(&name.as_str()) && !globals.contains(name) {
            let tok = tokens.iter().find(|t| {
                matches!(t.role, Some(Role::Variable) | Some(Role::Function))
                    && t.text == name.as_str()
            });
            let message = match tok.and_then(|t| t.role) {
                Some(Role::Function) => format!(
                    "unknown function `{name}` (see the expression reference in docs/mapping.md)"
                ),
                _ => format!(
                    "unknown variable `{name}`; available here: {}",
                    vars.join(", ")
                ),
            };
            return Err(ExprProblem {
                offset: tok.map(|t| t.start).unwrap_or(0),
                message,
            });
        }
    }
    for (i, t) in tokens.iter().enumerate() {
        let known = match t.role {
            Some(Role::Filter) => env_has(env, "filter", t.text),
            Some(Role::Test) => env_has(env, "test", t.text),
            Some(Role::Function) => globals.iter().any(|g| g == t.text),
            _ => true,
        };
        if !known {
            let what = match t.role {
                Some(Role::Filter) => "filter",
                Some(Role::Test) => "test",
                _ => "function",
            };
            return Err(ExprProblem {
                offset: t.start,
                message: format!(
                    "unknown {what} `{}` (see the expression reference in docs/mapping.md)",
                    t.text
                ),
            });
        }
        // A literal pattern given to a regex filter or test is compiled now.
        if matches!(t.role, Some(Role::Filter) | Some(Role::Test))
            && matches!(
                t.text,
                "regex_match" | "regex_capture" | "regex_replace" | "matching"
            )
        {
            let mut j = i + 1;
            if tokens.get(j).map(|t| t.text) == Some("(") {
                j += 1;
            }
            if let Some(lit) = tokens.get(j).filter(|t| t.literal.is_some()) {
                if let Some(p) = &lit.literal {
                    compile_regex(p).map_err(|message| ExprProblem {
                        offset: lit.start,
                        message,
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// The attribute name when `src` is nothing but `attr.NAME`, `attr['NAME']` or
/// `attr["NAME"]`.
pub(crate) fn direct_attribute(src: &str) -> Option<String> {
    let s = src.trim();
    let rest = s.strip_prefix("attr")?;
    let name = if let Some(n) = rest.strip_prefix('.') {
        n
    } else {
        let inner = rest.strip_prefix('[')?.strip_suffix(']')?.trim();
        let quote = inner.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        inner.strip_prefix(quote)?.strip_suffix(quote)?
    };
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | ';'));
    let identifier = rest.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    (plain && (identifier || rest.starts_with('['))).then(|| name.to_string())
}

fn line_offset(src: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    src.match_indices('\n')
        .nth(line - 2)
        .map(|(i, _)| i + 1)
        .unwrap_or(0)
}

fn env_has(env: &Environment<'static>, kind: &str, name: &str) -> bool {
    env.compile_expression_owned(format!("n is {kind}"))
        .and_then(|e| e.eval(minijinja::context!(n => name)))
        .map(|v| v.is_true())
        .unwrap_or(false)
}

#[derive(Debug)]
struct Token<'a> {
    text: &'a str,
    start: usize,
    role: Option<Role>,
    /// For a string literal: its value (escapes resolved).
    literal: Option<String>,
}

/// Splits an expression into identifiers, string literals and punctuation, and gives each
/// identifier its role. Only used to find names and their positions; the compiler has the
/// final word on syntax.
fn tokenize(src: &str) -> Vec<Token<'_>> {
    let b = src.as_bytes();
    let mut toks: Vec<Token<'_>> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'"' || c == b'\'' {
            let start = i;
            i += 1;
            let mut lit = String::new();
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                    lit.push(match b[i] {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        other => other as char,
                    });
                    i += 1;
                    continue;
                }
                let ch_len = utf8_len(b[i]);
                lit.push_str(src.get(i..i + ch_len).unwrap_or(""));
                i += ch_len;
            }
            i = (i + 1).min(b.len());
            toks.push(Token {
                text: src.get(start..i).unwrap_or(""),
                start,
                role: None,
                literal: Some(lit),
            });
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            toks.push(Token {
                text: &src[start..i],
                start,
                role: None,
                literal: None,
            });
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
        } else {
            let len = utf8_len(c);
            let start = i;
            // `==` and friends stay one token so a keyword argument (`x=1`) can be told apart.
            let two = src.get(i..i + 2).unwrap_or("");
            let n = if matches!(two, "==" | "!=" | "<=" | ">=" | "//" | "**") {
                2
            } else {
                len
            };
            i += n;
            toks.push(Token {
                text: src.get(start..i).unwrap_or(""),
                start,
                role: None,
                literal: None,
            });
        }
    }
    let is_ident = |t: &Token<'_>| {
        t.literal.is_none()
            && t.text
                .bytes()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
    };
    for k in 0..toks.len() {
        if !is_ident(&toks[k]) || KEYWORDS.contains(&toks[k].text) {
            continue;
        }
        let prev = k.checked_sub(1).map(|p| toks[p].text);
        let prev2 = k.checked_sub(2).map(|p| toks[p].text);
        let next = toks.get(k + 1).map(|t| t.text);
        let role = if prev == Some("|") {
            Some(Role::Filter)
        } else if prev == Some("is") || (prev == Some("not") && prev2 == Some("is")) {
            Some(Role::Test)
        } else if prev == Some(".") || next == Some("=") {
            None // attribute name or keyword argument
        } else if next == Some("(") {
            Some(Role::Function)
        } else {
            Some(Role::Variable)
        };
        toks[k].role = role;
    }
    toks
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attributes, Entry, Group, Snapshot};

    fn env() -> Environment<'static> {
        environment(FUEL_PER_EXPRESSION)
    }

    fn snapshot() -> Snapshot {
        let mut boss = Attributes::new();
        boss.push("mail", "Boss@Example.com");
        boss.push("cn", "Big Boss");
        let mut jo = Attributes::new();
        jo.push("mail", "Jo.Doe@Example.com");
        jo.push("userAccountControl", "514");
        jo.push("manager", "CN=Big Boss, OU=People,DC=example,DC=com");
        jo.push("proxyAddresses", "SMTP:jo@example.com");
        jo.push("proxyAddresses", "smtp:jd@example.com");
        jo.set(
            "objectGUID",
            vec![crate::model::Value::binary(vec![
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff,
            ])],
        );
        let mut legal = Attributes::new();
        legal.push("cn", "Legal");
        let mut all = Attributes::new();
        all.push("cn", "Everyone");
        Snapshot {
            source: "t".into(),
            read_at: Utc::now(),
            users: vec![
                Entry {
                    id: "boss".into(),
                    locator: "CN=Big Boss,OU=People,DC=example,DC=com".into(),
                    attrs: boss,
                },
                Entry {
                    id: "jo".into(),
                    locator: "CN=Doe\\, Jo,OU=People,DC=example,DC=com".into(),
                    attrs: jo,
                },
            ],
            groups: vec![
                Group {
                    entry: Entry {
                        id: "g-legal".into(),
                        locator: "CN=Legal,OU=Groups,DC=example,DC=com".into(),
                        attrs: legal,
                    },
                    members: vec!["jo".into()],
                },
                Group {
                    entry: Entry {
                        id: "g-all".into(),
                        locator: "CN=Everyone,OU=Groups,DC=example,DC=com".into(),
                        attrs: all,
                    },
                    members: vec!["g-legal".into(), "boss".into()],
                },
            ],
        }
    }

    fn eval_on(src: &str, id: &str) -> Result<Value, Error> {
        let env = env();
        check_expression(&env, src, ENTRY_VARS_WITH_DISABLED)
            .unwrap_or_else(|p| panic!("{src}: {p:?}"));
        let index = Arc::new(Index::build(Arc::new(snapshot())));
        let pos = index.find(id).unwrap();
        let ctx = Ctx::new(
            index.clone(),
            EntryHandle::InSnapshot(index.clone(), pos),
            Some(pos),
            now_value(
                DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
                    .unwrap()
                    .into(),
            ),
        );
        ctx.set_disabled(false);
        env.compile_expression(src).unwrap().eval(ctx.value())
    }

    fn eval(src: &str) -> Value {
        eval_on(src, "jo").unwrap_or_else(|e| panic!("{src}: {e:#}"))
    }

    #[test]
    fn attributes_are_case_insensitive_first_or_all() {
        assert_eq!(eval("attr.MAIL").as_str(), Some("Jo.Doe@Example.com"));
        assert_eq!(eval("attr['mail']").as_str(), Some("Jo.Doe@Example.com"));
        assert_eq!(eval("attrs.proxyaddresses | length").as_i64(), Some(2));
        assert!(eval("attr.nothing").is_undefined());
        assert_eq!(eval("attrs.nothing | length").as_i64(), Some(0));
        assert_eq!(eval("id").as_str(), Some("jo"));
        assert_eq!(eval("dn | rdn_value").as_str(), Some("Doe, Jo"));
        assert_eq!(eval("now").as_str(), Some("2024-05-01T12:00:00Z"));
        assert!(!eval("disabled").is_true());
    }

    #[test]
    fn string_filters() {
        assert_eq!(
            eval("attr.mail | lower").as_str(),
            Some("jo.doe@example.com")
        );
        assert_eq!(
            eval("attr.mail | upper").as_str(),
            Some("JO.DOE@EXAMPLE.COM")
        );
        assert_eq!(eval("'  a ' | trim").as_str(), Some("a"));
        assert_eq!(eval("'a-b' | replace('-', '.')").as_str(), Some("a.b"));
        assert_eq!(eval("'jo doe' | title").as_str(), Some("Jo Doe"));
        assert_eq!(eval("attr.mail | email_local").as_str(), Some("Jo.Doe"));
        assert_eq!(
            eval("attr.mail | email_domain").as_str(),
            Some("Example.com")
        );
        assert!(eval("'nodomain' | email_domain").is_undefined());
        assert_eq!(
            eval("'a,b,c' | split(',') | join('+')").as_str(),
            Some("a+b+c")
        );
        assert_eq!(eval("attr.nothing | split(',') | length").as_i64(), Some(0));
        assert_eq!(eval("'a,b' | split(',') | last").as_str(), Some("b"));
        assert_eq!(
            eval("coalesce(attr.nothing, '', attr.mail)").as_str(),
            Some("Jo.Doe@Example.com")
        );
        assert_eq!(eval("attr.nothing | default('x')").as_str(), Some("x"));
    }

    #[test]
    fn diacritics_are_folded() {
        assert_eq!(
            fold_diacritics("Zoë Ærøskøbing Straße Łódź ﬁn Ñandú"),
            "Zoe AEroskobing Strasse Lodz fin Nandu"
        );
        assert_eq!(
            eval("'Jürgen Ødegård' | normalize_diacritics | lower").as_str(),
            Some("jurgen odegard")
        );
    }

    #[test]
    fn regex_filters_and_test() {
        assert!(eval("attr.mail | regex_match('(?i)@example\\\\.com$')").is_true());
        assert!(eval("attr.mail is matching('^Jo')").is_true());
        assert!(!eval("attr.nothing is matching('.')").is_true());
        assert_eq!(
            eval("attrs.proxyAddresses | first | regex_capture('^SMTP:(.*)$')").as_str(),
            Some("jo@example.com")
        );
        assert_eq!(
            eval("'ab12' | regex_capture('(?P<n>[0-9]+)', 'n')").as_str(),
            Some("12")
        );
        assert_eq!(
            eval("attr.mail | regex_replace('@.*$', '@corp.example')").as_str(),
            Some("Jo.Doe@corp.example")
        );
        assert!(eval("'x' | regex_capture('y(.)')").is_undefined());
    }

    #[test]
    fn direct_attributes_are_recognized() {
        assert_eq!(direct_attribute(" attr.title ").as_deref(), Some("title"));
        assert_eq!(
            direct_attribute("attr['name.givenName']").as_deref(),
            Some("name.givenName")
        );
        assert_eq!(
            direct_attribute("attr[\"urn:x:User:department\"]").as_deref(),
            Some("urn:x:User:department")
        );
        for not_direct in [
            "attr.title | lower",
            "attr.a or attr.b",
            "attr.x.y",
            "attrs.title",
            "attr['a'] ~ attr['b']",
            "attr[x]",
            "attr.",
        ] {
            assert_eq!(direct_attribute(not_direct), None, "{not_direct}");
        }
    }

    #[test]
    fn as_bool_is_strict() {
        assert!(eval("'Yes' | as_bool").is_true());
        assert!(!eval("attr.nothing | as_bool").is_true());
        assert!(eval_on("'maybe' | as_bool", "jo").is_err());
    }

    #[test]
    fn bits() {
        assert!(eval("attr.userAccountControl | has_bit(2)").is_true());
        assert!(!eval("attr.userAccountControl | has_bit(16)").is_true());
        assert_eq!(
            eval("attr.userAccountControl | bitand(0x202)").as_i64(),
            Some(514)
        );
        assert_eq!(eval("'0x10' | bitand(16)").as_i64(), Some(16));
        assert!(!eval("attr.nothing | has_bit(2)").is_true());
        assert!(eval_on("'abc' | has_bit(2)", "jo").is_err());
    }

    #[test]
    fn dn_parsing() {
        let r = dn_rdns("CN=Doe\\, Jo+UID=jd ,OU=People,DC=example,DC=com").unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].avas[0].value, "Doe, Jo");
        assert_eq!(r[0].avas[1].value, "jd");
        assert_eq!(r[1].start, 20);
        assert_eq!(
            dn_rdns("cn=J\\C3\\BCrgen,dc=x").unwrap()[0].avas[0].value,
            "Jürgen"
        );
        assert_eq!(dn_rdns("cn=\"a,b\",dc=x").unwrap()[0].avas[0].value, "a,b");
        assert!(dn_rdns("not a dn").is_err());
        assert!(dn_rdns("").unwrap().is_empty());
        assert_eq!(
            eval("dn | parent_dn").as_str(),
            Some("OU=People,DC=example,DC=com")
        );
        assert_eq!(
            eval("dn | dn_values('dc') | join('.')").as_str(),
            Some("example.com")
        );
        assert_eq!(eval("dn | rdn_type").as_str(), Some("CN"));
        assert!(eval("'cn=top' | parent_dn").is_undefined());
        assert_eq!(
            normalize_dn("CN=Big Boss, OU=People,dc=Example,DC=com"),
            normalize_dn("cn=big boss,ou=people,dc=example,dc=com")
        );
    }

    #[test]
    fn times() {
        assert_eq!(
            filetime_to_iso(133_000_000_000_000_000).as_deref(),
            Some("2022-06-18T04:26:40Z")
        );
        assert_eq!(filetime_to_iso(0), None);
        assert_eq!(filetime_to_iso(i64::MAX), None);
        assert_eq!(
            generalized_to_iso("20240102030405Z").as_deref(),
            Some("2024-01-02T03:04:05Z")
        );
        assert_eq!(
            generalized_to_iso("20240102030405.5+0100").as_deref(),
            Some("2024-01-02T02:04:05Z")
        );
        assert_eq!(
            generalized_to_iso("2024010203Z").as_deref(),
            Some("2024-01-02T03:00:00Z")
        );
        assert_eq!(generalized_to_iso("2024"), None);
        assert_eq!(generalized_to_iso("20241302030405Z"), None);
        assert_eq!(
            iso_date("2024-01-02T03:04:05Z").as_deref(),
            Some("2024-01-02")
        );
        assert_eq!(iso_date("20240102030405Z").as_deref(), Some("2024-01-02"));
        assert_eq!(
            eval("'133000000000000000' | filetime | iso_date").as_str(),
            Some("2022-06-18")
        );
        assert!(eval("'0' | filetime").is_undefined());
        assert!(eval("'20200101000000Z' | generalized_time < now").is_true());
        assert!(eval_on("'garbage' | generalized_time", "jo").is_err());
    }

    #[test]
    fn guid_and_base64() {
        assert_eq!(
            eval("attr.objectGUID | guid").as_str(),
            Some("00112233-4455-6677-8899-aabbccddeeff")
        );
        assert_eq!(eval("'AbC' | guid").as_str(), Some("abc"));
        assert_eq!(eval("'hi' | b64").as_str(), Some("aGk="));
    }

    #[test]
    fn lookups_and_membership() {
        assert_eq!(
            eval("lookup(attr.manager, 'mail') | lower").as_str(),
            Some("boss@example.com")
        );
        assert_eq!(eval("lookup(attr.manager).id").as_str(), Some("boss"));
        assert_eq!(eval("lookup('boss').attr.cn").as_str(), Some("Big Boss"));
        assert!(eval("lookup('nobody', 'mail')").is_undefined());
        assert!(eval("lookup(attr.nothing, 'mail')").is_undefined());
        assert!(eval("member_of('Legal')").is_true());
        assert!(eval("member_of('cn=everyone,ou=groups,dc=example,dc=com')").is_true());
        assert!(eval("member_of('g-all')").is_true());
        assert!(!eval("member_of('Nope')").is_true());
        assert_eq!(
            eval("groups | sort | join(',')").as_str(),
            Some("Everyone,Legal")
        );
        assert!(!eval_on("member_of('Legal')", "boss").unwrap().is_true());
    }

    #[test]
    fn fuel_bounds_evaluation() {
        let e = eval_on("range(10000) | map('string') | join(',') | length", "jo").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfFuel);
        let e = eval_on("'abc' * 100000000", "jo").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfFuel);
    }

    fn problem(src: &str) -> ExprProblem {
        check_expression(&env(), src, ENTRY_VARS).unwrap_err()
    }

    #[test]
    fn checks_name_the_offending_word() {
        let p = problem("attr.mail | lowr");
        assert_eq!(p.offset, 12);
        assert!(p.message.contains("unknown filter `lowr`"), "{p:?}");
        let p = problem("atr.mail | lower");
        assert_eq!(p.offset, 0);
        assert!(p.message.contains("unknown variable `atr`"), "{p:?}");
        let p = problem("attr.mail is sameish('x')");
        assert_eq!(p.offset, 13);
        let p = problem("coalesce(attr.a) ~ frobnicate(1)");
        assert_eq!(p.offset, 19);
        assert!(p.message.contains("unknown function"), "{p:?}");
        let p = problem("attr.mail | regex_match('(')");
        assert_eq!(p.offset, 24);
        assert!(p.message.contains("regular expression"), "{p:?}");
        let p = problem("attr.mail |");
        assert_eq!(p.offset, 10);
        let p = problem("disabled");
        assert!(p.message.contains("unknown variable `disabled`"), "{p:?}");
        let p = problem("attr.mail | safe");
        assert!(p.message.contains("unknown filter"), "{p:?}");
        let p = problem("__ironbridge_remember_disabled(true)");
        assert!(p.message.contains("reserved"), "{p:?}");
        let p = problem("  ");
        assert!(p.message.contains("empty"), "{p:?}");
        // Words inside strings, attribute names and keyword arguments are not names.
        check_expression(
            &env(),
            "'x | lowr' ~ attr.lowr ~ (attr.a | default('b', true)) ~ (attrs.x | join(d='y') if attr.q is defined else 'z') ~ (attr.b is not none)",
            ENTRY_VARS,
        )
        .unwrap();
    }
}

/// The expression reference in docs/mapping.md is checked against the environment: every
/// filter, test and function it names exists, every filter this module adds is documented, and
/// every example made only of literals gives the result the document shows.
#[cfg(test)]
mod doc_tests {
    use super::*;

    fn reference() -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mapping.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let start = doc.find("## Expression reference").unwrap();
        let end = doc[start..].find("\n## JSON entries").unwrap() + start;
        doc[start..end].to_string()
    }

    /// Table rows: (names, kind, example cell).
    fn rows(doc: &str) -> Vec<(Vec<String>, String, String)> {
        let mut out = Vec::new();
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<String> = line
                .replace("\\|", "\u{1}")
                .split('|')
                .map(|c| c.trim().replace('\u{1}', "|"))
                .collect();
            let names = cells[1]
                .split(',')
                .map(|n| n.trim().trim_matches('`').to_string())
                .collect();
            out.push((names, cells[2].clone(), cells[4].clone()));
        }
        out
    }

    #[test]
    fn every_documented_name_exists() {
        let env = environment(FUEL_PER_EXPRESSION);
        let globals: Vec<String> = env.globals().map(|(n, _)| n.to_string()).collect();
        let rows = rows(&reference());
        assert!(rows.len() > 40, "{}", rows.len());
        for (names, kind, _) in &rows {
            for n in names {
                let ok = match kind.as_str() {
                    "filter" => env_has(&env, "filter", n),
                    "test" => env_has(&env, "test", n),
                    "function" => globals.contains(n),
                    "variable" => ENTRY_VARS.contains(&n.as_str()),
                    other => panic!("unknown kind {other} for {n}"),
                };
                assert!(ok, "documented {kind} `{n}` does not exist");
            }
        }
        for custom in [
            "split",
            "regex_match",
            "regex_capture",
            "regex_replace",
            "as_bool",
            "normalize_diacritics",
            "email_local",
            "email_domain",
            "bitand",
            "has_bit",
            "rdn_value",
            "rdn_type",
            "parent_dn",
            "dn_values",
            "filetime",
            "generalized_time",
            "iso_date",
            "guid",
            "b64",
            "coalesce",
            "lookup",
            "member_of",
            "matching",
        ] {
            assert!(
                rows.iter()
                    .any(|(names, _, _)| names.iter().any(|n| n == custom)),
                "`{custom}` is not documented"
            );
        }
    }

    #[test]
    fn literal_examples_give_the_documented_result() {
        let env = environment(FUEL_PER_EXPRESSION);
        let mut checked = 0;
        for (_, _, example) in rows(&reference()) {
            // `expr` → `result`; examples reading entries are checked by other tests.
            let parts: Vec<&str> = example.split(" → ").collect();
            let [expr, result] = parts.as_slice() else {
                continue;
            };
            let expr = expr.trim().trim_matches('`').replace("\\\\", "\\");
            let result = result
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('`');
            if check_expression(&env, &expr, &[]).is_err() {
                continue;
            }
            let got = env.compile_expression(&expr).unwrap().eval(()).unwrap();
            let shown = match got.kind() {
                minijinja::value::ValueKind::Bool => got.to_string().to_lowercase(),
                _ => got.to_string().replace('"', "'"),
            };
            assert_eq!(shown, result, "example `{expr}`");
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} examples checked");
    }
}
