//! Sizes (`512MiB`) and durations (`60s`) as they are written in specs and profiles.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A size in bytes, written `512MiB`, `1GiB`, Kubernetes-style `512Mi`/`2Gi`, `4MB`, `64k` or a
/// plain number of bytes. A bare letter (`512m`, `1G`) is binary, as in `docker run -m`, not
/// decimal as in Kubernetes; `MB`/`GB` are decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("k", 1 << 10),
    ("kb", 1000),
    ("kib", 1 << 10),
    ("ki", 1 << 10),
    ("m", 1 << 20),
    ("mb", 1000 * 1000),
    ("mib", 1 << 20),
    ("mi", 1 << 20),
    ("g", 1 << 30),
    ("gb", 1000 * 1000 * 1000),
    ("gib", 1 << 30),
    ("gi", 1 << 30),
    ("t", 1 << 40),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("tib", 1 << 40),
    ("ti", 1 << 40),
];

/// A number of CPUs as written in a spec or profile: `1.5`, `"2"`, or Kubernetes-style
/// millicores `"500m"` (= 0.5). Range checks are the caller's (they name the field).
pub fn parse_cpus(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = match t.strip_suffix('m') {
        Some(n) => (n, 1000.0),
        None => (t, 1.0),
    };
    let value: f64 = num.parse().map_err(|_| {
        format!(
            "`{s}` is not a number of CPUs: write 1, 1.5 or Kubernetes-style millicores like 500m"
        )
    })?;
    Ok(value / scale)
}

/// Deserializes an optional CPU count written as a number or as a string [`parse_cpus`] reads.
pub fn cpus_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number of CPUs such as 1, 1.5 or \"500m\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_cpus(v).map(Some).map_err(E::custom)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_option(V)
}

/// Deserializes a required CPU count (see [`cpus_opt`]).
pub fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    cpus_opt(d)?.ok_or_else(|| de::Error::custom("a number of CPUs is required here"))
}

impl Size {
    pub const fn mib(n: u64) -> Size {
        Size(n << 20)
    }

    pub const fn gib(n: u64) -> Size {
        Size(n << 30)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        if num.is_empty() {
            return Err(format!(
                "`{s}` is not a size: expected a number with an optional unit, like 512MiB, 512Mi or 1GiB"
            ));
        }
        let factor = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, f)| *f)
                .ok_or_else(|| {
                    format!("`{s}` has an unknown size unit `{unit}`: use B, KiB, MiB, GiB (or Ki, Mi, Gi) or KB, MB, GB")
                })?
        };
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size: `{num}` is not a number"))?;
        let bytes = value * factor as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("`{s}` is too large"));
        }
        Ok(Size(bytes.round() as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= factor && b.is_multiple_of(factor) {
                return write!(f, "{}{unit}", b / factor);
            }
        }
        if b >= 1 << 30 {
            return write!(f, "{:.1}GiB", b as f64 / (1u64 << 30) as f64);
        }
        if b >= 1 << 20 {
            return write!(f, "{:.1}MiB", b as f64 / (1u64 << 20) as f64);
        }
        if b >= 1 << 10 {
            return write!(f, "{:.1}KiB", b as f64 / (1u64 << 10) as f64);
        }
        write!(f, "{b}B")
    }
}

impl Serialize for Size {
    /// Exact: a whole number of GiB, MiB or KiB as such (`1GiB`), anything else in bytes. The
    /// service stores specs this way, so what runs is what was validated, not a rounding of it.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.0;
        if b > 0 && b.is_multiple_of(1 << 10) {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_str(&format!("{b}B"))
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 512MiB, 1GiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written the humantime way: `60s`, `5m`, `1h 30m`, `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 60s, 5m or 1h")
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Span, E> {
                Err(E::custom(
                    "a duration needs a unit: write 60s, 5m or 1h, not a bare number",
                ))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                humantime::parse_duration(v.trim()).map(Span).map_err(|e| {
                    E::custom(format!(
                        "`{v}` is not a duration ({e}): write 60s, 5m or 1h"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        let cases = [
            ("512MiB", 512 << 20),
            ("1GiB", 1 << 30),
            ("1 GiB", 1 << 30),
            ("4MB", 4_000_000),
            ("64k", 64 << 10),
            ("1.5GiB", 3 << 29),
            ("1000", 1000),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<Size>(), Ok(Size(bytes)), "{text}");
        }
    }

    #[test]
    fn kubernetes_binary_suffixes_are_sizes_too() {
        for (text, bytes) in [
            ("512Mi", 512u64 << 20),
            ("2Gi", 2 << 30),
            ("64Ki", 64 << 10),
            ("1Ti", 1 << 40),
            ("1.5Gi", 3 << 29),
        ] {
            assert_eq!(text.parse::<Size>(), Ok(Size(bytes)), "{text}");
        }
        assert!("1Pi".parse::<Size>().unwrap_err().contains("Mi, Gi"));
    }

    #[test]
    fn cpus_read_numbers_and_millicores() {
        assert_eq!(parse_cpus("500m"), Ok(0.5));
        assert_eq!(parse_cpus("1.5"), Ok(1.5));
        assert_eq!(parse_cpus(" 2 "), Ok(2.0));
        assert!(parse_cpus("two").unwrap_err().contains("500m"));
        assert!(parse_cpus("m").is_err());
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert!(
            "12 parsecs"
                .parse::<Size>()
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!("MiB".parse::<Size>().unwrap_err().contains("not a size"));
        assert!(
            "1.2.3MiB"
                .parse::<Size>()
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn sizes_display_in_the_largest_whole_unit() {
        assert_eq!(Size(512 << 20).to_string(), "512MiB");
        assert_eq!(Size(1 << 30).to_string(), "1GiB");
        assert_eq!(Size(100).to_string(), "100B");
    }

    #[test]
    fn sizes_serialize_exactly() {
        for text in [
            "1.04GiB", "1GiB", "1500B", "0", "3KiB", "1.5MiB", "16777217",
        ] {
            let size: Size = text.parse().expect(text);
            let json = serde_json::to_string(&size).expect("serialize");
            let back: Size = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, size, "{text} came back as {json}");
        }
    }

    #[test]
    fn durations_need_units() {
        let ok: Span = serde_yaml_ng::from_str("90s").unwrap();
        assert_eq!(ok.0, Duration::from_secs(90));
        let err = serde_yaml_ng::from_str::<Span>("90")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a unit"), "{err}");
    }
}
