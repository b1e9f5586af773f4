//! Small builders for the hclspec protobuf values Nomad converts into `hcldec` specs.
//!
//! The rules these helpers encode (nomad-protocol.md §3.4, §4.1):
//! - Every [`attr`] carries its `name` explicitly. Nomad only implies the name from the object key
//!   when the attribute sits directly under an object; under a [`default`] it would be empty and
//!   hcldec would look for an attribute called `""`.
//! - A [`literal`] is an HCL *expression*: a string literal needs quotes. Use [`hcl_string`] to
//!   quote a Rust string.
//! - Types are HCL type expressions (`string`, `number`, `bool`, `list(string)`,
//!   `list(map(string))`, ...). Map-like task options are `list(map(string))` because jobspec
//!   blocks arrive as lists of objects.
//! - A [`block_map`] needs at least one label (asserted).

use crate::pb::hashicorp::nomad::plugins::shared::hclspec as pb;
use pb::spec::Block as Kind;

pub use pb::Spec;

fn spec(kind: Kind) -> Spec {
    Spec { block: Some(kind) }
}

/// An attribute `name` of HCL type expression `ty`.
pub fn attr(name: &str, ty: &str, required: bool) -> Spec {
    spec(Kind::Attr(pb::Attr {
        name: name.to_owned(),
        r#type: ty.to_owned(),
        required,
    }))
}

/// `primary`, or `default` when `primary` decodes to null.
pub fn default(primary: Spec, default: Spec) -> Spec {
    spec(Kind::Default(Box::new(pb::Default {
        primary: Some(Box::new(primary)),
        default: Some(Box::new(default)),
    })))
}

/// A constant given as an HCL expression, e.g. `true`, `3`, `"\"100m\""`.
pub fn literal(hcl_expr: &str) -> Spec {
    spec(Kind::Literal(pb::Literal {
        value: hcl_expr.to_owned(),
    }))
}

/// A single nested block `name { ... }`; decodes to null when absent.
pub fn block(name: &str, required: bool, nested: Spec) -> Spec {
    spec(Kind::BlockValue(Box::new(pb::Block {
        name: name.to_owned(),
        required,
        nested: Some(Box::new(nested)),
    })))
}

/// Repeated labelled blocks `name "<label>" { ... }`; decodes to a map keyed by the label(s),
/// empty when absent.
///
/// # Panics
/// If `labels` is empty: Nomad rejects such a spec, which would stop the agent from starting.
pub fn block_map(name: &str, labels: &[&str], nested: Spec) -> Spec {
    assert!(
        !labels.is_empty(),
        "block_map {name:?} needs at least one label"
    );
    spec(Kind::BlockMap(Box::new(pb::BlockMap {
        name: name.to_owned(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        nested: Some(Box::new(nested)),
    })))
}

/// An object whose keys are the output names of its attributes.
pub fn object<'a>(attributes: impl IntoIterator<Item = (&'a str, Spec)>) -> Spec {
    spec(Kind::Object(pb::Object {
        attributes: attributes
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }))
}

/// Quotes `s` as an HCL string literal expression, escaping `"`, `\`, control characters and
/// template sequences (`${`, `%{`).
pub fn hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
pub(crate) mod checks {
    //! Structural checks on specs, shared by the plugin and task schema tests.
    use super::{Kind, Spec};

    /// Is `ty` one of the HCL type expressions polydev allows itself: the primitives `string`,
    /// `number`, `bool`, nested in `list(..)`, `set(..)` or `map(..)`. (`any` is excluded on
    /// purpose: it brings cty's dynamic wrapper onto the wire.)
    pub(crate) fn is_whitelisted_type(ty: &str) -> bool {
        match ty {
            "string" | "number" | "bool" => true,
            _ => ["list(", "set(", "map("].iter().any(|open| {
                ty.strip_prefix(open)
                    .and_then(|rest| rest.strip_suffix(')'))
                    .is_some_and(is_whitelisted_type)
            }),
        }
    }

    /// Every problem found in `spec`, as readable strings; empty means sound.
    pub(crate) fn problems(spec: &Spec) -> Vec<String> {
        let mut out = Vec::new();
        walk(spec, None, false, &mut out);
        out
    }

    fn walk(spec: &Spec, key: Option<&str>, under_default: bool, out: &mut Vec<String>) {
        let Some(kind) = &spec.block else {
            out.push(format!("{key:?}: empty spec"));
            return;
        };
        let nested_of = |n: &Option<Box<Spec>>, key: Option<&str>, out: &mut Vec<String>| match n {
            Some(n) => walk(n, key, false, out),
            None => out.push(format!("{key:?}: block without nested spec")),
        };
        match kind {
            Kind::Attr(a) => {
                if under_default && a.name.is_empty() {
                    out.push(format!("{key:?}: attr under a default has no name"));
                }
                if let Some(key) = key
                    && !a.name.is_empty()
                    && a.name != key
                {
                    out.push(format!("{key:?}: attr is named {:?}", a.name));
                }
                if !is_whitelisted_type(&a.r#type) {
                    out.push(format!("{key:?}: type {:?} not whitelisted", a.r#type));
                }
            }
            Kind::Default(d) => {
                match &d.primary {
                    Some(p) => walk(p, key, true, out),
                    None => out.push(format!("{key:?}: default without primary")),
                }
                match d.default.as_deref().and_then(|d| d.block.as_ref()) {
                    Some(Kind::Literal(l)) if !l.value.is_empty() => {}
                    _ => out.push(format!("{key:?}: default value is not a literal")),
                }
            }
            Kind::Literal(l) => {
                if l.value.is_empty() {
                    out.push(format!("{key:?}: empty literal"));
                }
            }
            Kind::Object(o) => {
                for (k, v) in &o.attributes {
                    walk(v, Some(k), false, out);
                }
            }
            Kind::BlockValue(b) => {
                check_name(key, &b.name, out);
                nested_of(&b.nested, None, out);
            }
            Kind::BlockMap(b) => {
                check_name(key, &b.name, out);
                if b.labels.is_empty() {
                    out.push(format!("{key:?}: block_map without labels"));
                }
                nested_of(&b.nested, None, out);
            }
            Kind::BlockList(b) => {
                check_name(key, &b.name, out);
                nested_of(&b.nested, None, out);
            }
            Kind::BlockSet(b) => {
                check_name(key, &b.name, out);
                nested_of(&b.nested, None, out);
            }
            Kind::BlockAttrs(b) => {
                check_name(key, &b.name, out);
                if !is_whitelisted_type(&b.r#type) {
                    out.push(format!("{key:?}: type {:?} not whitelisted", b.r#type));
                }
            }
            Kind::Array(a) => {
                for v in &a.values {
                    walk(v, None, false, out);
                }
            }
        }
    }

    fn check_name(key: Option<&str>, name: &str, out: &mut Vec<String>) {
        if name.is_empty() || key.is_some_and(|k| k != name) {
            out.push(format!("{key:?}: block is named {name:?}"));
        }
    }

    /// The keys of a top-level object spec, sorted.
    pub(crate) fn object_keys(spec: &Spec) -> Vec<String> {
        match &spec.block {
            Some(Kind::Object(o)) => {
                let mut keys: Vec<String> = o.attributes.keys().cloned().collect();
                keys.sort();
                keys
            }
            _ => panic!("not an object spec"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::checks::{is_whitelisted_type, problems};
    use super::*;

    #[test]
    fn attr_sets_every_field() {
        let Some(Kind::Attr(a)) = attr("x", "list(string)", true).block else {
            panic!("not an attr");
        };
        assert_eq!(
            (a.name.as_str(), a.r#type.as_str(), a.required),
            ("x", "list(string)", true)
        );
    }

    #[test]
    fn default_keeps_primary_and_default() {
        let d = default(attr("x", "bool", false), literal("true"));
        let Some(Kind::Default(d)) = d.block else {
            panic!("not a default");
        };
        assert_eq!(*d.primary.unwrap(), attr("x", "bool", false));
        assert_eq!(*d.default.unwrap(), literal("true"));
    }

    #[test]
    fn block_map_keeps_labels_and_nested() {
        let Some(Kind::BlockMap(b)) = block_map("p", &["name"], object([])).block else {
            panic!("not a block map");
        };
        assert_eq!(b.labels, vec!["name".to_owned()]);
        assert_eq!(*b.nested.unwrap(), object([]));
    }

    #[test]
    #[should_panic(expected = "at least one label")]
    fn block_map_without_labels_panics() {
        let _ = block_map("p", &[], object([]));
    }

    #[test]
    fn hcl_string_quotes_and_escapes() {
        assert_eq!(
            hcl_string("unix:///var/run/docker.sock"),
            "\"unix:///var/run/docker.sock\""
        );
        assert_eq!(hcl_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(hcl_string("${x} %{y} $z"), "\"$${x} %%{y} $z\"");
        assert_eq!(hcl_string("a\nb\u{1}"), "\"a\\nb\\u0001\"");
    }

    #[test]
    fn type_whitelist() {
        for ok in [
            "string",
            "number",
            "bool",
            "list(string)",
            "list(map(string))",
            "set(number)",
        ] {
            assert!(is_whitelisted_type(ok), "{ok}");
        }
        for bad in [
            "any",
            "",
            "list",
            "list()",
            "list(any)",
            "map(string",
            "object({})",
            "String",
        ] {
            assert!(!is_whitelisted_type(bad), "{bad}");
        }
    }

    #[test]
    fn checks_catch_unnamed_attr_under_default_and_bad_types() {
        let bad = object([
            ("a", default(attr("", "bool", false), literal("true"))),
            ("b", attr("b", "any", false)),
            ("c", attr("other", "string", false)),
        ]);
        let found = problems(&bad);
        assert_eq!(found.len(), 3, "{found:?}");
        let good = object([("a", default(attr("a", "bool", false), literal("true")))]);
        assert!(problems(&good).is_empty());
    }
}
