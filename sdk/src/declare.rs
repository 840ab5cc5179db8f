//! Declaring a plugin's settings once: [`plugin_settings!`](crate::plugin_settings).
//!
//! A plugin's settings used to be written three times: the schema (name,
//! kind, default, description), the struct that holds them, and a
//! key-by-key reader. The macro takes one declaration per setting, a doc
//! comment, a typed field and its schema kind with the default, and
//! generates all three, so a setting cannot be in the schema and missing
//! from the struct, read under another key, or documented differently in
//! `clisc plugins list` and the code:
//!
//! ```
//! use clisc_sdk::plugin_settings;
//! use std::path::PathBuf;
//!
//! plugin_settings! {
//!     /// The settings of a thresholding labeler.
//!     #[derive(Debug, Clone, PartialEq)]
//!     pub struct ThresholdSettings {
//!         /// Keep a slice when its probability is at least this.
//!         pub threshold: f32 = float(0.6),
//!         /// Slices with less brain than this (pixels) are not labelled.
//!         pub min_brain_pixels: usize = integer(200),
//!         /// Intensity statistic.
//!         pub statistic: String = choice("median", &["median", "mean"]),
//!         /// A file of per-case thresholds; absent = the same for all.
//!         pub table: Option<PathBuf> = optional_path,
//!     }
//! }
//!
//! let schema = ThresholdSettings::schema();
//! assert_eq!(schema[0].name.as_str(), "threshold");
//! assert_eq!(schema[0].doc.as_str(), "Keep a slice when its probability is at least this.");
//! let settings = clisc_sdk::config::Settings::parse("example", "", &schema).unwrap();
//! let read = ThresholdSettings::read(&settings).unwrap();
//! assert_eq!((read.threshold, read.min_brain_pixels, read.table), (0.6, 200, None));
//! ```
//!
//! The schema kind is the name of a [`ConfigField`](crate::ConfigField)
//! constructor, with the constructor's arguments between the setting's
//! name and its description: `float(0.6)`, `integer(200)`, `bool(true)`,
//! `string("x")`, `choice("a", &["a", "b"])`, `float_list(&[1.0])`,
//! `string_list(&["a"])`, `table`, `required_path`, `optional_path`,
//! `weights_file("download hint")`, `optional_weights_file("hint")`. The
//! field's type says how the resolved value is read ([`FromSetting`]);
//! the plugin's own types implement it, and an enum of choices is
//! declared with [`setting_choice!`](crate::setting_choice), which
//! implements it from each value's name.
//! A field can also hold a group of settings that several plugins share:
//! `group(SCHEMA, READ)` adds the entries `SCHEMA` to the schema and fills
//! the field with `READ(&settings)` (the field's doc comment then only
//! documents the struct).
//! Checks across settings (ranges, one setting against another) stay in
//! the plugin, after [`read`](crate::plugin_settings).

use crate::config::Settings;
use crate::error::PluginError;
use std::path::PathBuf;

/// A type a resolved setting can be read into (the field types of
/// [`plugin_settings!`](crate::plugin_settings)).
pub trait FromSetting: Sized {
    /// Reads setting `key`; an error names the plugin, the key and what was expected.
    fn from_setting(settings: &Settings, key: &str) -> Result<Self, PluginError>;
}

/// `FromSetting` for types that one getter of [`Settings`] reads.
macro_rules! read_with {
    ($($ty:ty => $read:expr),* $(,)?) => {$(
        impl FromSetting for $ty {
            fn from_setting(s: &Settings, key: &str) -> Result<Self, PluginError> {
                $read(s, key)
            }
        }
    )*};
}

read_with! {
    bool => Settings::bool,
    f64 => Settings::f64,
    f32 => |s: &Settings, key| s.f64(key).map(|v| v as f32),
    i64 => Settings::i64,
    usize => Settings::usize,
    String => |s: &Settings, key| s.str(key).map(str::to_string),
    Option<PathBuf> => Settings::path,
    PathBuf => |s: &Settings, key| s.path(key)?.ok_or_else(|| s.missing(key)),
    Vec<f64> => Settings::f64_list,
    Vec<String> => Settings::str_list,
    toml::Table => Settings::table,
}

/// Whole numbers written as a float list (`[64, 64, 32]`; a schema
/// `float_list`), e.g. sizes and channel counts.
impl FromSetting for Vec<i64> {
    fn from_setting(s: &Settings, key: &str) -> Result<Self, PluginError> {
        let values = s.f64_list(key)?;
        values
            .iter()
            .map(|&v| {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(v as i64)
                } else {
                    Err(s.wrong(key, &format!("an array of whole numbers, found {values:?}")))
                }
            })
            .collect()
    }
}

/// Exactly `N` whole numbers (a size along x, y, z).
impl<const N: usize> FromSetting for [i64; N] {
    fn from_setting(s: &Settings, key: &str) -> Result<Self, PluginError> {
        let values = Vec::<i64>::from_setting(s, key)?;
        let found = values.len();
        values.try_into().map_err(|_| {
            s.wrong(
                key,
                &format!("an array of {N} whole numbers, found {found}"),
            )
        })
    }
}

/// The schema description of a setting: its doc comment's lines, trimmed
/// and joined with spaces.
#[doc(hidden)]
pub fn doc_text(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Declares a plugin's settings once: the struct, its schema and its
/// reader (see the [module docs](crate::declare)).
///
/// Every field needs a doc comment (the setting's description in the
/// schema, in `clisc plugins list` and in the struct's docs) and takes no
/// other attribute; the struct takes any (derives, docs).
#[macro_export]
macro_rules! plugin_settings {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $fvis:vis $field:ident : $ty:ty = $kind:ident $( ( $($arg:expr),* $(,)? ) )?
            ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        $vis struct $name {
            $(
                $(#[doc = $doc])+
                $fvis $field: $ty,
            )*
        }

        impl $name {
            /// The settings schema: key, kind, default and description of
            /// every field, in declaration order.
            #[allow(dead_code)]
            $vis fn schema() -> ::std::vec::Vec<$crate::ConfigField> {
                let mut fields = ::std::vec::Vec::new();
                $(
                    fields.extend($crate::__setting_fields!(
                        ::std::stringify!($field),
                        &$crate::declare::doc_text(&[$($doc),+]),
                        $kind $( ( $($arg),* ) )?
                    ));
                )*
                fields
            }

            /// The declared defaults; an error when a setting has none
            /// (a required path).
            #[allow(dead_code)]
            $vis fn defaults() -> ::std::result::Result<Self, $crate::PluginError> {
                Self::read(&$crate::config::Settings::parse(
                    ::std::stringify!($name),
                    "",
                    &Self::schema(),
                )?)
            }

            /// Reads every field from resolved settings (defaults already
            /// filled in by the host or [`Settings::parse`]).
            ///
            /// [`Settings::parse`]: $crate::config::Settings::parse
            #[allow(dead_code)]
            $vis fn read(
                settings: &$crate::config::Settings,
            ) -> ::std::result::Result<Self, $crate::PluginError> {
                ::std::result::Result::Ok(Self {
                    $(
                        $field: $crate::__setting_read!(
                            settings,
                            ::std::stringify!($field),
                            $ty,
                            $kind $( ( $($arg),* ) )?
                        )?,
                    )*
                })
            }
        }
    };
}

/// The schema entries of one field of [`plugin_settings!`]: the
/// [`ConfigField`](crate::ConfigField) constructor `kind` with the key
/// first and the description last (the weight-file constructors take their
/// download hint after it), or a group's own schema.
#[doc(hidden)]
#[macro_export]
macro_rules! __setting_fields {
    ($key:expr, $doc:expr, group($schema:expr, $read:expr)) => {
        $schema
    };
    ($key:expr, $doc:expr, weights_file($hint:expr)) => {
        [$crate::ConfigField::weights_file($key, $doc, $hint)]
    };
    ($key:expr, $doc:expr, optional_weights_file($hint:expr)) => {
        [$crate::ConfigField::optional_weights_file($key, $doc, $hint)]
    };
    ($key:expr, $doc:expr, $kind:ident ( $($arg:expr),* )) => {
        [$crate::ConfigField::$kind($key, $($arg,)* $doc)]
    };
    ($key:expr, $doc:expr, $kind:ident) => {
        [$crate::ConfigField::$kind($key, $doc)]
    };
}

/// How one field of [`plugin_settings!`] is read: through its type's
/// [`FromSetting`], or a group's reader.
#[doc(hidden)]
#[macro_export]
macro_rules! __setting_read {
    ($settings:expr, $key:expr, $ty:ty, group($schema:expr, $read:expr)) => {
        $read($settings)
    };
    ($settings:expr, $key:expr, $ty:ty, $($kind:tt)*) => {
        <$ty as $crate::declare::FromSetting>::from_setting($settings, $key)
    };
}

/// Declares an enum of choices once: each value with its name in the
/// settings. Generates `NAMES` (for the schema's `choice(...)`), `name()`,
/// `from_name()` and [`FromSetting`], which refuses a name that is not
/// declared (no fallback to some default value):
///
/// ```
/// use clisc_sdk::{plugin_settings, setting_choice};
///
/// setting_choice! {
///     /// How slices are summarised.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Statistic {
///         /// The median of the brain's intensities.
///         Median = "median",
///         /// Their mean.
///         Mean = "mean",
///     }
/// }
///
/// plugin_settings! {
///     /// The settings.
///     pub struct Example {
///         /// intensity statistic
///         pub statistic: Statistic = choice(Statistic::Median.name(), Statistic::NAMES),
///     }
/// }
///
/// assert_eq!(Statistic::NAMES, ["median", "mean"]);
/// assert_eq!(Statistic::from_name("mean"), Some(Statistic::Mean));
/// assert_eq!(Example::defaults().unwrap().statistic, Statistic::Median);
/// ```
#[macro_export]
macro_rules! setting_choice {
    (
        $(#[$attr:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vattr:meta])*
                $variant:ident = $text:literal
            ),+ $(,)?
        }
    ) => {
        $(#[$attr])*
        $vis enum $name {
            $(
                $(#[$vattr])*
                $variant,
            )+
        }

        impl $name {
            /// Every value's name in the settings, in declaration order.
            #[allow(dead_code)]
            $vis const NAMES: &'static [&'static str] = &[$($text),+];

            /// This value's name in the settings.
            #[allow(dead_code)]
            $vis const fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value called `text`, if there is one.
            #[allow(dead_code)]
            $vis fn from_name(text: &str) -> ::std::option::Option<Self> {
                match text {
                    $($text => ::std::option::Option::Some(Self::$variant),)+
                    _ => ::std::option::Option::None,
                }
            }
        }

        impl $crate::declare::FromSetting for $name {
            fn from_setting(
                settings: &$crate::config::Settings,
                key: &str,
            ) -> ::std::result::Result<Self, $crate::PluginError> {
                $crate::declare::read_choice(settings, key, Self::NAMES, Self::from_name)
            }
        }
    };
}

/// Reads a choice setting with a [`setting_choice!`] enum's `from_name`;
/// an undeclared name is an error that lists the declared ones.
#[doc(hidden)]
pub fn read_choice<T>(
    settings: &Settings,
    key: &str,
    names: &[&str],
    from_name: fn(&str) -> Option<T>,
) -> Result<T, PluginError> {
    let text = settings.str(key)?;
    from_name(text).ok_or_else(|| settings.wrong(key, &format!("one of {names:?}, found {text:?}")))
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use crate::{ConfigKind, ErrorKind};
    use std::path::PathBuf;

    crate::plugin_settings! {
        /// Every kind once.
        #[derive(Debug, Clone, PartialEq)]
        struct Example {
            /// A flag.
            flag: bool = bool(true),
            /// A count, written
            /// over two lines.
            count: usize = integer(3),
            /// A ratio.
            ratio: f32 = float(0.25),
            /// A method.
            method: String = choice("a", &["a", "b"]),
            /// Sizes.
            size: [i64; 3] = float_list(&[8.0, 8.0, 4.0]),
            /// Scales.
            scales: Vec<f64> = float_list(&[0.5]),
            /// Names.
            names: Vec<String> = string_list(&["x"]),
            /// Extra options.
            extra: toml::Table = table,
            /// The weights.
            weights: PathBuf = weights_file("https://example.org/w.pth"),
            /// A cache folder.
            cache: Option<PathBuf> = optional_path,
            /// Two shared settings.
            shared: (bool, i64) = group(shared_schema(), read_shared),
        }
    }

    fn shared_schema() -> Vec<crate::ConfigField> {
        vec![
            crate::ConfigField::bool("shared_on", false, "a switch"),
            crate::ConfigField::integer("shared_size", 2, "a size"),
        ]
    }

    fn read_shared(s: &Settings) -> Result<(bool, i64), crate::PluginError> {
        Ok((s.bool("shared_on")?, s.i64("shared_size")?))
    }

    fn parse(text: &str) -> Result<Example, crate::PluginError> {
        Example::read(&Settings::parse("example", text, &Example::schema())?)
    }

    #[test]
    fn the_schema_follows_the_declaration() {
        let schema = Example::schema();
        let names: Vec<&str> = schema.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "flag",
                "count",
                "ratio",
                "method",
                "size",
                "scales",
                "names",
                "extra",
                "weights",
                "cache",
                "shared_on",
                "shared_size"
            ]
        );
        assert_eq!(schema[1].kind, ConfigKind::Integer);
        assert_eq!(schema[1].doc.as_str(), "A count, written over two lines.");
        assert_eq!(schema[3].choices.len(), 2);
        assert_eq!(schema[4].kind, ConfigKind::FloatList);
        assert_eq!(schema[8].download_hint(), Some("https://example.org/w.pth"));
        assert_eq!(schema[8].description(), "The weights.");
        assert!(schema[9].optional);
    }

    #[test]
    fn reads_defaults_and_given_values_into_the_fields() {
        let e = parse("weights = \"w.pth\"").unwrap();
        assert!(e.flag);
        assert_eq!((e.count, e.ratio, e.method.as_str()), (3, 0.25, "a"));
        assert_eq!(
            (e.size, e.scales, e.names),
            ([8, 8, 4], vec![0.5], vec!["x".into()])
        );
        assert!(e.extra.is_empty());
        assert_eq!((e.weights, e.cache), (PathBuf::from("w.pth"), None));
        let e = parse("weights = \"w\"\ncount = 5\nsize = [16, 16, 8]\ncache = \"c\"").unwrap();
        assert_eq!((e.count, e.size), (5, [16, 16, 8]));
        assert_eq!(e.cache, Some(PathBuf::from("c")));
        assert_eq!(e.shared, (false, 2));
        assert!(
            parse(
                "weights = \"w\"
shared_on = true"
            )
            .unwrap()
            .shared
            .0
        );
    }

    #[test]
    fn wrong_values_name_the_plugin_and_the_key() {
        let err = parse("weights = \"w\"\nsize = [16, 16]").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("example") && err.message.contains("`size`"));
        assert!(err.message.contains("3 whole numbers"), "{}", err.message);
        let err = parse("weights = \"w\"\nsize = [16, 16, 8.5]").unwrap_err();
        assert!(err.message.contains("whole numbers"), "{}", err.message);
        let err = parse("weights = \"w\"\ncount = -1").unwrap_err();
        assert!(err.message.contains("`count`"), "{}", err.message);
        assert!(parse("").is_err(), "the weights file is required");
        assert!(
            Example::defaults().is_err(),
            "no default for the weights file"
        );
    }

    crate::setting_choice! {
        /// Two ways.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Way {
            /// The first.
            First = "first",
            /// The second.
            Second = "second-way",
        }
    }

    #[test]
    fn a_choice_enum_reads_its_declared_names_and_refuses_others() {
        use crate::declare::FromSetting;
        assert_eq!(Way::NAMES, ["first", "second-way"]);
        assert_eq!(Way::Second.name(), "second-way");
        // A schema that allows a name the enum does not declare: the read
        // fails instead of falling back to some value.
        let schema = [crate::ConfigField::choice(
            "way",
            "first",
            &["first", "second-way", "third"],
            "a way",
        )];
        let read = |text: &str| {
            let settings = Settings::parse("example", text, &schema).unwrap();
            Way::from_setting(&settings, "way")
        };
        assert_eq!(read("way = \"second-way\"").unwrap(), Way::Second);
        assert_eq!(read("").unwrap(), Way::First);
        let err = read("way = \"third\"").unwrap_err();
        assert_eq!(
            err.message.as_str(),
            "example: setting `way` must be one of [\"first\", \"second-way\"], found \"third\""
        );
    }
}
