//! Reading cty-msgpack payloads (nomad-protocol.md §4.3) with errors that name the field.
//!
//! Nomad encodes a decoded config as `msgpack.Marshal(val, val.Type())`: objects are maps holding
//! **every** declared key (null → nil), numbers are the smallest int encoding, else float64, else
//! a decimal string, lists are arrays, maps are maps, and an unknown value is a msgpack extension.
//!
//! Why a walk over [`rmpv::Value`] instead of `rmp_serde` into `#[derive(Deserialize)]` structs:
//! serde errors do not say *which* field was wrong, and this module's whole job is telling an
//! operator or job author which field to fix. The walk also sees extensions directly (rmp-serde
//! turns them into an opaque newtype). The semantics are those of the serde route:
//! - nil or absent → `None` for scalars and lists ([`Obj::strings`]), so the caller applies its
//!   default; [`Obj::labelled_objects`] and [`Obj::string_maps`] return empty (the
//!   `null_as_default` rule);
//! - a number is accepted as any int width (signed or unsigned), float64/float32, or a decimal
//!   string, and must be a whole number where an integer is wanted;
//! - every other type mismatch, invalid UTF-8, a null list element and an unknown value is an
//!   error naming the field;
//! - unknown object keys are ignored (hcldec never produces keys outside the schema).
//!
//! Parsing is total: any byte string yields a value or an error, never a panic. rmpv caps nesting
//! depth and never pre-allocates from a length prefix.

use rmpv::Value;

use super::ConfigError;

/// Parses exactly one msgpack value from `bytes`.
pub(crate) fn parse(bytes: &[u8], what: &'static str) -> Result<Value, ConfigError> {
    let mut rest = bytes;
    let value = rmpv::decode::read_value(&mut rest).map_err(|e| ConfigError::Malformed {
        what,
        detail: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(ConfigError::Malformed {
            what,
            detail: format!("{} trailing bytes after the value", rest.len()),
        });
    }
    Ok(value)
}

/// A short description of a value for error messages. It never includes a string's contents,
/// which may be a prompt.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Nil => "null".to_owned(),
        Value::Boolean(b) => format!("the bool {b}"),
        Value::Integer(i) => format!("the number {i}"),
        Value::F32(f) => format!("the number {f}"),
        Value::F64(f) => format!("the number {f}"),
        Value::String(_) => "a string".to_owned(),
        Value::Binary(b) => format!("{} bytes of binary data", b.len()),
        Value::Array(a) => format!("a list of {} items", a.len()),
        Value::Map(m) => format!("an object or map of {} entries", m.len()),
        Value::Ext(t, _) => format!("an unknown value (msgpack extension type {t})"),
    }
}

fn wrong_type(field: &str, expected: &'static str, found: &Value) -> ConfigError {
    ConfigError::WrongType {
        field: field.to_owned(),
        expected,
        found: describe(found),
    }
}

/// `None` for nil, the value otherwise; an unknown value is an error.
fn known<'v>(v: &'v Value, field: &str) -> Result<Option<&'v Value>, ConfigError> {
    match v {
        Value::Nil => Ok(None),
        Value::Ext(ext_type, _) => Err(ConfigError::UnknownValue {
            field: field.to_owned(),
            ext_type: *ext_type,
        }),
        v => Ok(Some(v)),
    }
}

/// Like [`known`] for places where null is not allowed (list elements, map values).
fn present<'v>(v: &'v Value, field: &str, fix: &str) -> Result<&'v Value, ConfigError> {
    known(v, field)?.ok_or_else(|| ConfigError::invalid(field, "is null", fix))
}

fn as_string(v: &Value, field: &str) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => s.as_str().map(str::to_owned).ok_or_else(|| {
            ConfigError::invalid(field, "is not valid UTF-8", "write the value as UTF-8 text")
        }),
        other => Err(wrong_type(field, "a string", other)),
    }
}

/// Why a value is not an `i64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotAnInteger {
    /// Not a number at all (nor a decimal string).
    NotANumber,
    /// A number with a fractional part; holds its text.
    Fractional(String),
    /// A whole number outside `i64`; holds its text.
    OutOfRange(String),
}

/// Reads a cty number as an `i64`: an int of any msgpack width, a float64 (or float32) with no
/// fractional part, or the decimal text cty writes for numbers neither fits exactly.
pub(crate) fn integer(v: &Value) -> Result<i64, NotAnInteger> {
    match v {
        Value::Integer(i) => i
            .as_i64()
            .ok_or_else(|| NotAnInteger::OutOfRange(i.to_string())),
        Value::F64(f) => float_integer(*f),
        Value::F32(f) => float_integer(f64::from(*f)),
        Value::String(s) => s
            .as_str()
            .ok_or(NotAnInteger::NotANumber)
            .and_then(decimal_integer),
        _ => Err(NotAnInteger::NotANumber),
    }
}

fn float_integer(f: f64) -> Result<i64, NotAnInteger> {
    // 2^63 is exactly representable; every integral f64 in [-2^63, 2^63) fits an i64.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() || (f.is_finite() && f.fract() != 0.0) {
        Err(NotAnInteger::Fractional(f.to_string()))
    } else if (-TWO_POW_63..TWO_POW_63).contains(&f) {
        // In range and integral: the cast is exact.
        Ok(f as i64)
    } else {
        Err(NotAnInteger::OutOfRange(f.to_string()))
    }
}

/// Parses cty's decimal text: `-?digits(.digits)?`.
fn decimal_integer(s: &str) -> Result<i64, NotAnInteger> {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (whole, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
        return Err(NotAnInteger::NotANumber);
    }
    if frac.bytes().any(|b| b != b'0') {
        return Err(NotAnInteger::Fractional(s.to_owned()));
    }
    let sign_and_whole = &s[..s.len() - unsigned.len() + whole.len()];
    sign_and_whole
        .parse::<i64>()
        .map_err(|_| NotAnInteger::OutOfRange(s.to_owned()))
}

/// A view of one cty object (a msgpack map with string keys) that knows its path for errors.
#[derive(Debug, Clone)]
pub(crate) struct Obj<'v> {
    /// Prefix for field paths, e.g. `plugin config: security.`.
    prefix: String,
    entries: &'v [(Value, Value)],
}

impl<'v> Obj<'v> {
    /// Views `value` as an object whose fields are named `<prefix><key>`; `field` names the
    /// object itself in errors.
    pub(crate) fn new(value: &'v Value, field: &str, prefix: String) -> Result<Self, ConfigError> {
        match value {
            Value::Map(entries) => Ok(Self { prefix, entries }),
            Value::Ext(ext_type, _) => Err(ConfigError::UnknownValue {
                field: field.to_owned(),
                ext_type: *ext_type,
            }),
            other => Err(wrong_type(field, "an object", other)),
        }
    }

    /// The full path of `key` in this object.
    pub(crate) fn field(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value under `key`: `None` when absent or nil.
    pub(crate) fn get(&self, key: &str) -> Result<Option<&'v Value>, ConfigError> {
        match self.entries.iter().find(|(k, _)| k.as_str() == Some(key)) {
            None => Ok(None),
            Some((_, v)) => known(v, &self.field(key)),
        }
    }

    /// A `string` attribute.
    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(key)?
            .map(|v| as_string(v, &self.field(key)))
            .transpose()
    }

    /// A `bool` attribute.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key)? {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(&self.field(key), "a bool", other)),
        }
    }

    /// A `number` attribute that must be a whole number.
    pub(crate) fn integer(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        let Some(v) = self.get(key)? else {
            return Ok(None);
        };
        let field = self.field(key);
        integer(v).map(Some).map_err(|e| match e {
            NotAnInteger::NotANumber => wrong_type(&field, "a number", v),
            NotAnInteger::Fractional(n) => ConfigError::invalid(
                field,
                format!("{n} is not a whole number"),
                "write a whole number without a fraction",
            ),
            NotAnInteger::OutOfRange(n) => ConfigError::invalid(
                field,
                format!("{n} is out of range"),
                "write a whole number between -9223372036854775808 and 9223372036854775807",
            ),
        })
    }

    /// A `list(string)` attribute; `None` when null. Null elements are errors.
    pub(crate) fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(v) = self.get(key)? else {
            return Ok(None);
        };
        let field = self.field(key);
        let Value::Array(items) = v else {
            return Err(wrong_type(&field, "a list of strings", v));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_field = format!("{field}[{i}]");
                let item = present(item, &item_field, "remove the null element from the list")?;
                as_string(item, &item_field)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A nested block (an object or null); `None` when null. Its fields are named
    /// `<this field>.<key>`.
    pub(crate) fn object(&self, key: &str) -> Result<Option<Obj<'v>>, ConfigError> {
        let field = self.field(key);
        self.get(key)?
            .map(|v| Obj::new(v, &field, format!("{field}.")))
            .transpose()
    }

    /// A block map (`map(object)`): the label and the raw object value of each entry, in wire
    /// order; empty when null.
    pub(crate) fn labelled_objects(
        &self,
        key: &str,
    ) -> Result<Vec<(String, &'v Value)>, ConfigError> {
        let Some(v) = self.get(key)? else {
            return Ok(Vec::new());
        };
        let field = self.field(key);
        let Value::Map(entries) = v else {
            return Err(wrong_type(&field, "a map of blocks keyed by label", v));
        };
        entries
            .iter()
            .map(|(k, v)| {
                let label = as_string(k, &format!("{field} label"))?;
                let v = present(v, &format!("{field} {label:?}"), "remove the empty block")?;
                Ok((label, v))
            })
            .collect()
    }

    /// A `list(map(string))` attribute: one `(key, value)` list per element, in order; empty
    /// when null. Null elements and null values are errors.
    pub(crate) fn string_maps(&self, key: &str) -> Result<Vec<Vec<(String, String)>>, ConfigError> {
        let Some(v) = self.get(key)? else {
            return Ok(Vec::new());
        };
        let field = self.field(key);
        let Value::Array(items) = v else {
            return Err(wrong_type(&field, "a list of maps of strings", v));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{i}]");
            let item = present(item, &item_field, "remove the null element from the list")?;
            let Value::Map(entries) = item else {
                return Err(wrong_type(&item_field, "a map of strings", item));
            };
            let mut map = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let k = as_string(k, &format!("{item_field} key"))?;
                let value_field = format!("{item_field}.{k}");
                let v = present(
                    v,
                    &value_field,
                    "give the entry a string value or remove it",
                )?;
                map.push((k, as_string(v, &value_field)?));
            }
            out.push(map);
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Builders for payloads shaped exactly as cty writes them.
    use rmpv::Value;

    /// Encodes `v` as msgpack (rmpv writes the smallest int encoding, unsigned for
    /// non-negative values, like cty's compact ints).
    pub(crate) fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
        out
    }

    /// A cty object: a map with its keys sorted bytewise.
    pub(crate) fn obj(mut fields: Vec<(&str, Value)>) -> Value {
        fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Value::Map(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A cty map (keys in the given order).
    pub(crate) fn map(fields: Vec<(&str, Value)>) -> Value {
        Value::Map(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub(crate) fn s(v: &str) -> Value {
        Value::from(v)
    }

    pub(crate) fn strs(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|i| Value::from(*i)).collect())
    }

    /// cty's unknown value: fixext1, type 0, data 0.
    pub(crate) fn unknown() -> Value {
        Value::Ext(0, vec![0])
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    fn root(v: &Value) -> Obj<'_> {
        Obj::new(v, "test config", "test config: ".to_owned()).unwrap()
    }

    #[test]
    fn protocol_example_bytes_round_trip() {
        // nomad-protocol.md §4.3: {image="x", args=null}.
        let bytes = [
            0x82, 0xa4, 0x61, 0x72, 0x67, 0x73, 0xc0, 0xa5, 0x69, 0x6d, 0x61, 0x67, 0x65, 0xa1,
            0x78,
        ];
        assert_eq!(
            encode(&obj(vec![("image", s("x")), ("args", Value::Nil)])),
            bytes
        );
        let v = parse(&bytes, "test config").unwrap();
        let o = root(&v);
        assert_eq!(o.string("image").unwrap().as_deref(), Some("x"));
        assert_eq!(o.strings("args").unwrap(), None);
        assert_eq!(o.string("absent").unwrap(), None);
    }

    #[test]
    fn compact_int_encodings_decode() {
        // 5, 200 (cc), 300 (cd), 70000 (ce), 2^40 (cf), -1, -100 (d0), -1000 (d1), -2^40 (d3)
        let cases: &[(&[u8], i64)] = &[
            (&[0x05], 5),
            (&[0xcc, 0xc8], 200),
            (&[0xcd, 0x01, 0x2c], 300),
            (&[0xce, 0x00, 0x01, 0x11, 0x70], 70_000),
            (&[0xcf, 0, 0, 0x01, 0, 0, 0, 0, 0], 1 << 40),
            (&[0xff], -1),
            (&[0xd0, 0x9c], -100),
            (&[0xd1, 0xfc, 0x18], -1000),
            (&[0xd2, 0xff, 0xfe, 0xee, 0x90], -70_000),
            (&[0xd3, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0], -(1 << 40)),
            // float64 512.0 and float32 3.0
            (&[0xcb, 0x40, 0x80, 0, 0, 0, 0, 0, 0], 512),
            (&[0xca, 0x40, 0x40, 0, 0], 3),
            // decimal strings
            (&[0xa3, b'5', b'1', b'2'], 512),
            (&[0xa5, b'-', b'7', b'.', b'0', b'0'], -7),
        ];
        for (bytes, want) in cases {
            let v = parse(bytes, "t").unwrap();
            assert_eq!(integer(&v), Ok(*want), "{bytes:02x?}");
        }
    }

    #[test]
    fn integer_rejections() {
        let frac = parse(&[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0], "t").unwrap(); // 1.5
        assert_eq!(integer(&frac), Err(NotAnInteger::Fractional("1.5".into())));
        let huge = Value::from(u64::MAX);
        assert!(matches!(integer(&huge), Err(NotAnInteger::OutOfRange(_))));
        assert!(matches!(
            integer(&Value::F64(f64::INFINITY)),
            Err(NotAnInteger::OutOfRange(_))
        ));
        assert!(matches!(
            integer(&Value::F64(9.3e18)),
            Err(NotAnInteger::OutOfRange(_))
        ));
        assert_eq!(
            integer(&Value::F64(-9_223_372_036_854_775_808.0)),
            Ok(i64::MIN)
        );
        assert!(matches!(
            integer(&s("123456789012345678901234567890")),
            Err(NotAnInteger::OutOfRange(_))
        ));
        assert!(matches!(
            integer(&s("512.0000000000000000000001")),
            Err(NotAnInteger::Fractional(_))
        ));
        for bad in ["", "-", "1e3", "abc", "1.", ".5", "+5", " 5", "0x10"] {
            assert_eq!(integer(&s(bad)), Err(NotAnInteger::NotANumber), "{bad:?}");
        }
        assert_eq!(
            integer(&Value::Boolean(true)),
            Err(NotAnInteger::NotANumber)
        );
    }

    #[test]
    fn getter_errors_name_the_field() {
        let v = obj(vec![
            ("b", s("yes")),
            ("n", Value::F64(1.5)),
            ("l", strs(&["a"])),
            ("nl", Value::Array(vec![s("a"), Value::Nil])),
            ("u", unknown()),
            ("m", Value::Array(vec![map(vec![("k", Value::Nil)])])),
            (
                "x",
                Value::String(rmpv::Utf8String::from(
                    String::from_utf8_lossy(&[0xff]).into_owned(),
                )),
            ),
        ]);
        let o = root(&v);
        let msg = |e: ConfigError| e.to_string();
        assert_eq!(
            msg(o.bool("b").unwrap_err()),
            "test config: b: expected a bool, found a string; the schema Nomad decoded with does \
             not match this polydev binary, restart the Nomad client after upgrading polydev"
        );
        assert!(msg(o.integer("n").unwrap_err()).starts_with("test config: n: 1.5 is not a whole"));
        assert!(msg(o.string("l").unwrap_err()).contains("test config: l: expected a string"));
        assert!(
            msg(o.strings("nl").unwrap_err()).starts_with("test config: nl[1]: is null; remove")
        );
        assert!(
            matches!(o.string("u"), Err(ConfigError::UnknownValue { ref field, ext_type: 0 }) if field == "test config: u")
        );
        assert!(msg(o.string_maps("m").unwrap_err()).starts_with("test config: m[0].k: is null"));
        assert!(msg(o.labelled_objects("l").unwrap_err()).contains("expected a map of blocks"));
    }

    #[test]
    fn invalid_utf8_is_reported() {
        // fixstr of one byte 0xff
        let v = parse(&[0x81, 0xa1, b's', 0xa1, 0xff], "t").unwrap();
        let o = root(&v);
        let e = o.string("s").unwrap_err().to_string();
        assert!(e.starts_with("test config: s: is not valid UTF-8;"), "{e}");
    }

    #[test]
    fn parse_rejects_trailing_bytes_and_truncation() {
        assert!(matches!(
            parse(&[0xc0, 0xc0], "t"),
            Err(ConfigError::Malformed { .. })
        ));
        assert!(matches!(
            parse(&[0xa3, b'a'], "t"),
            Err(ConfigError::Malformed { .. })
        ));
        assert!(matches!(
            parse(&[], "t"),
            Err(ConfigError::Malformed { .. })
        ));
        // an array header claiming 2^32-1 items must fail quickly, not allocate
        assert!(parse(&[0xdd, 0xff, 0xff, 0xff, 0xff], "t").is_err());
    }

    #[test]
    fn nil_and_absent_mean_none_and_empty() {
        let v = obj(vec![
            ("a", Value::Nil),
            ("m", Value::Nil),
            ("l", Value::Nil),
        ]);
        let o = root(&v);
        assert_eq!(o.strings("a").unwrap(), None);
        assert!(o.labelled_objects("m").unwrap().is_empty());
        assert!(o.string_maps("l").unwrap().is_empty());
        assert!(o.string_maps("absent").unwrap().is_empty());
        assert_eq!(o.bool("a").unwrap(), None);
        assert_eq!(o.integer("a").unwrap(), None);
        assert!(o.object("a").unwrap().is_none());
    }

    proptest! {
        #[test]
        fn any_i64_decodes_from_its_cty_forms(n in any::<i64>()) {
            let compact = parse(&encode(&Value::from(n)), "t").unwrap();
            prop_assert_eq!(integer(&compact), Ok(n));
            prop_assert_eq!(integer(&s(&n.to_string())), Ok(n));
            prop_assert_eq!(integer(&s(&format!("{n}.000"))), Ok(n));
            #[allow(clippy::cast_precision_loss)]
            let f = n as f64;
            if f as i64 == n && f.abs() < 9.2e18 {
                prop_assert_eq!(integer(&Value::F64(f)), Ok(n));
            }
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes, "t");
        }
    }
}
