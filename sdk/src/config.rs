//! Plugin settings: a schema each plugin declares, and typed access to the
//! resolved values.
//!
//! The schema is the single source of truth for a plugin's settings. The
//! host validates a stage's TOML table against it (unknown keys, wrong
//! types, values outside the allowed choices are errors with file, line and
//! column), fills in the defaults, and hands the plugin the resolved table
//! as TOML text. The plugin reads it back with [`Settings`].

use crate::error::PluginError;
use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;
use std::path::PathBuf;

/// The TOML type a setting must have.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    /// `true` / `false`.
    Bool,
    /// A TOML integer.
    Integer,
    /// A TOML float (integers are accepted and widened).
    Float,
    /// A string.
    String,
    /// A file or folder path (a string, resolved relative to the pipeline file).
    Path,
    /// An array of floats.
    FloatList,
    /// An array of strings.
    StringList,
    /// A TOML table the plugin passes on as it is (e.g. a process
    /// plugin's own settings, checked by that process).
    Table,
}

impl ConfigKind {
    /// The name used in error messages and `clisc plugins list`.
    pub fn name(self) -> &'static str {
        match self {
            ConfigKind::Bool => "boolean",
            ConfigKind::Integer => "integer",
            ConfigKind::Float => "float",
            ConfigKind::String => "string",
            ConfigKind::Path => "path",
            ConfigKind::FloatList => "array of floats",
            ConfigKind::StringList => "array of strings",
            ConfigKind::Table => "table",
        }
    }
}

/// One setting of a plugin.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ConfigField {
    /// Key in the stage's TOML table.
    pub name: RString,
    /// Required TOML type.
    pub kind: ConfigKind,
    /// Default as a TOML value literal (`"0.6"`, `"\"layer3\""`); `RNone`
    /// means the key is required unless `optional` is set.
    pub default: ROption<RString>,
    /// The key may be absent and has no default.
    pub optional: bool,
    /// For strings: the allowed values (empty = any).
    pub choices: RVec<RString>,
    /// What the setting does, for `clisc plugins list` and docs.
    pub doc: RString,
    /// `RSome` for a weight file ([`ConfigField::weights_file`]): where to
    /// download it (the official URL or a sentence; may be empty). The
    /// host checks that such files exist before a run starts.
    pub weights_download: ROption<RString>,
}

impl ConfigField {
    fn make(name: &str, kind: ConfigKind, default: Option<String>, doc: &str) -> Self {
        Self {
            name: name.into(),
            kind,
            default: default.map(RString::from).into(),
            optional: false,
            choices: RVec::new(),
            doc: doc.into(),
            weights_download: ROption::RNone,
        }
    }
    /// A boolean setting with a default.
    pub fn bool(name: &str, default: bool, doc: &str) -> Self {
        Self::make(name, ConfigKind::Bool, Some(default.to_string()), doc)
    }
    /// An integer setting with a default.
    pub fn integer(name: &str, default: i64, doc: &str) -> Self {
        Self::make(name, ConfigKind::Integer, Some(default.to_string()), doc)
    }
    /// A float setting with a default.
    pub fn float(name: &str, default: f64, doc: &str) -> Self {
        Self::make(
            name,
            ConfigKind::Float,
            Some(toml::Value::Float(default).to_string()),
            doc,
        )
    }
    /// A string setting with a default.
    pub fn string(name: &str, default: &str, doc: &str) -> Self {
        Self::make(
            name,
            ConfigKind::String,
            Some(toml::Value::from(default).to_string()),
            doc,
        )
    }
    /// A string setting restricted to `choices`, with a default among them.
    pub fn choice(name: &str, default: &str, choices: &[&str], doc: &str) -> Self {
        let mut f = Self::string(name, default, doc);
        f.choices = choices.iter().map(|c| RString::from(*c)).collect();
        f
    }
    /// A list of floats with a default.
    pub fn float_list(name: &str, default: &[f64], doc: &str) -> Self {
        let v = toml::Value::Array(default.iter().map(|f| toml::Value::Float(*f)).collect());
        Self::make(name, ConfigKind::FloatList, Some(v.to_string()), doc)
    }
    /// A list of strings with a default.
    pub fn string_list(name: &str, default: &[&str], doc: &str) -> Self {
        let v = toml::Value::Array(default.iter().map(|s| toml::Value::from(*s)).collect());
        Self::make(name, ConfigKind::StringList, Some(v.to_string()), doc)
    }
    /// A table passed on as it is, empty by default.
    pub fn table(name: &str, doc: &str) -> Self {
        Self::make(name, ConfigKind::Table, Some("{}".into()), doc)
    }
    /// A path that must be given (e.g. a weight file).
    pub fn required_path(name: &str, doc: &str) -> Self {
        Self::make(name, ConfigKind::Path, None, doc)
    }
    /// A path that may be absent.
    pub fn optional_path(name: &str, doc: &str) -> Self {
        let mut f = Self::make(name, ConfigKind::Path, None, doc);
        f.optional = true;
        f
    }
    /// A weight file that must be given. `download` says where to get it
    /// (the official URL, or a sentence); the host checks that the file
    /// exists before a run starts and, when it does not, names the setting,
    /// the path and `download` in one error with every other missing file.
    pub fn weights_file(name: &str, doc: &str, download: &str) -> Self {
        let mut f = Self::required_path(name, doc);
        f.weights_download = ROption::RSome(download.trim().into());
        f
    }
    /// A weight file that may be absent (e.g. optional pretrained weights);
    /// when it is given, it is checked like [`ConfigField::weights_file`].
    pub fn optional_weights_file(name: &str, doc: &str, download: &str) -> Self {
        let mut f = Self::optional_path(name, doc);
        f.weights_download = ROption::RSome(download.trim().into());
        f
    }
    /// Whether this setting is a weight file declared with
    /// [`ConfigField::weights_file`] or [`ConfigField::optional_weights_file`].
    pub fn is_weights_file(&self) -> bool {
        self.kind == ConfigKind::Path && self.weights_download.is_some()
    }
    /// Where to download a weight file (empty when the plugin gave no hint);
    /// `None` for settings that are not weight files.
    pub fn download_hint(&self) -> Option<&str> {
        match &self.weights_download {
            ROption::RSome(hint) if self.kind == ConfigKind::Path => Some(hint.as_str()),
            _ => None,
        }
    }
    /// What the setting does.
    pub fn description(&self) -> &str {
        self.doc.as_str()
    }
}

/// Checks one value against a field; returns a message naming the expected type.
pub fn check_value(field: &ConfigField, value: &toml::Value) -> Result<(), String> {
    let ok = match field.kind {
        ConfigKind::Bool => value.is_bool(),
        ConfigKind::Integer => value.is_integer(),
        ConfigKind::Float => value.is_float() || value.is_integer(),
        ConfigKind::String | ConfigKind::Path => value.is_str(),
        ConfigKind::FloatList => value
            .as_array()
            .is_some_and(|a| a.iter().all(|v| v.is_float() || v.is_integer())),
        ConfigKind::StringList => value
            .as_array()
            .is_some_and(|a| a.iter().all(|v| v.is_str())),
        ConfigKind::Table => value.is_table(),
    };
    if !ok {
        return Err(format!(
            "`{}` must be a {}, found {}",
            field.name,
            field.kind.name(),
            value.type_str()
        ));
    }
    if !field.choices.is_empty() {
        let s = value.as_str().unwrap_or_default();
        if !field.choices.iter().any(|c| c.as_str() == s) {
            let allowed: Vec<&str> = field.choices.iter().map(|c| c.as_str()).collect();
            return Err(format!(
                "`{}` must be one of {allowed:?}, found {s:?}",
                field.name
            ));
        }
    }
    Ok(())
}

/// A problem with one key of a stage's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldProblem {
    /// The key concerned.
    pub key: String,
    /// Which kind of problem (where an error points: the key or its value).
    pub kind: ProblemKind,
    /// What is wrong and what is expected.
    pub message: String,
}

/// What is wrong with one key of a stage's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The schema has no such key.
    Unknown,
    /// The value has the wrong type or is not an allowed choice.
    BadValue,
    /// A required key without a default is absent.
    Missing,
    /// Anything else (the schema itself, a null value).
    Other,
}

/// Validates `table` against `schema` and returns it with defaults filled in.
/// All problems are reported, not only the first.
pub fn resolve(
    schema: &[ConfigField],
    table: &toml::Table,
) -> Result<toml::Table, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    for key in table.keys() {
        if !schema.iter().any(|f| f.name.as_str() == key) {
            let known: Vec<&str> = schema.iter().map(|f| f.name.as_str()).collect();
            problems.push(FieldProblem {
                key: key.clone(),
                kind: ProblemKind::Unknown,
                message: format!("unknown setting `{key}` (known: {known:?})"),
            });
        }
    }
    let mut resolved = toml::Table::new();
    for field in schema {
        let name = field.name.as_str();
        match table.get(name) {
            Some(v) => match check_value(field, v) {
                Ok(()) => {
                    resolved.insert(name.to_string(), v.clone());
                }
                Err(message) => problems.push(FieldProblem {
                    key: name.to_string(),
                    kind: ProblemKind::BadValue,
                    message,
                }),
            },
            None => match &field.default {
                ROption::RSome(lit) => {
                    let v = parse_literal(lit.as_str()).expect("plugin default is valid TOML");
                    resolved.insert(name.to_string(), v);
                }
                ROption::RNone if field.optional => {}
                ROption::RNone => problems.push(FieldProblem {
                    key: name.to_string(),
                    kind: ProblemKind::Missing,
                    message: match field.download_hint() {
                        Some(hint) if !hint.is_empty() => format!(
                            "missing required setting `{name}` ({}): {} (a weight file; download: {hint})",
                            field.kind.name(),
                            field.description()
                        ),
                        _ => format!(
                            "missing required setting `{name}` ({}): {}",
                            field.kind.name(),
                            field.description()
                        ),
                    },
                }),
            },
        }
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

fn parse_literal(lit: &str) -> Option<toml::Value> {
    let t: toml::Table = toml::from_str(&format!("v = {lit}")).ok()?;
    t.get("v").cloned()
}

/// The resolved settings a plugin receives, with typed getters.
#[derive(Debug, Clone)]
pub struct Settings {
    plugin: String,
    table: toml::Table,
}

impl Settings {
    /// Parses the resolved TOML text handed to a plugin's constructor and
    /// validates it against `schema` again (a plugin may be driven by a
    /// host other than clisc).
    pub fn parse(plugin: &str, text: &str, schema: &[ConfigField]) -> Result<Self, PluginError> {
        let raw: toml::Table = toml::from_str(text)
            .map_err(|e| PluginError::config(format!("{plugin}: settings are not TOML: {e}")))?;
        let table = resolve(schema, &raw).map_err(|problems| {
            let lines: Vec<String> = problems.into_iter().map(|p| p.message).collect();
            PluginError::config(format!("{plugin}: {}", lines.join("; ")))
        })?;
        Ok(Self {
            plugin: plugin.to_string(),
            table,
        })
    }
    fn get(&self, key: &str) -> Result<&toml::Value, PluginError> {
        self.table.get(key).ok_or_else(|| self.missing(key))
    }
    /// The error for a required setting that is absent.
    pub(crate) fn missing(&self, key: &str) -> PluginError {
        PluginError::config(format!("{}: setting `{key}` is missing", self.plugin))
    }
    /// The error for a setting whose value is not `what`.
    pub(crate) fn wrong(&self, key: &str, what: &str) -> PluginError {
        PluginError::config(format!("{}: setting `{key}` must be {what}", self.plugin))
    }
    /// A boolean.
    pub fn bool(&self, key: &str) -> Result<bool, PluginError> {
        self.get(key)?
            .as_bool()
            .ok_or_else(|| self.wrong(key, "a boolean"))
    }
    /// A float (integers widen).
    pub fn f64(&self, key: &str) -> Result<f64, PluginError> {
        let v = self.get(key)?;
        v.as_float()
            .or_else(|| v.as_integer().map(|i| i as f64))
            .ok_or_else(|| self.wrong(key, "a float"))
    }
    /// An integer.
    pub fn i64(&self, key: &str) -> Result<i64, PluginError> {
        self.get(key)?
            .as_integer()
            .ok_or_else(|| self.wrong(key, "an integer"))
    }
    /// A non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize, PluginError> {
        let v = self.i64(key)?;
        usize::try_from(v)
            .map_err(|_| self.wrong(key, &format!("a non-negative integer, found {v}")))
    }
    /// A string.
    pub fn str(&self, key: &str) -> Result<&str, PluginError> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| self.wrong(key, "a string"))
    }
    /// An optional path (absent when not set).
    pub fn path(&self, key: &str) -> Result<Option<PathBuf>, PluginError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(PathBuf::from(s)))
                .ok_or_else(|| self.wrong(key, "a path")),
        }
    }
    /// A list of floats.
    pub fn f64_list(&self, key: &str) -> Result<Vec<f64>, PluginError> {
        let arr = self
            .get(key)?
            .as_array()
            .ok_or_else(|| self.wrong(key, "an array of floats"))?;
        arr.iter()
            .map(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.wrong(key, "an array of floats"))
    }
    /// A table (a [`ConfigKind::Table`] setting).
    pub fn table(&self, key: &str) -> Result<toml::Table, PluginError> {
        self.get(key)?
            .as_table()
            .cloned()
            .ok_or_else(|| self.wrong(key, "a table"))
    }
    /// An array of strings.
    pub fn str_list(&self, key: &str) -> Result<Vec<String>, PluginError> {
        let arr = self
            .get(key)?
            .as_array()
            .ok_or_else(|| self.wrong(key, "an array of strings"))?;
        arr.iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.wrong(key, "an array of strings"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Vec<ConfigField> {
        vec![
            ConfigField::float("threshold", 0.6, "keep slices above this probability"),
            ConfigField::choice(
                "cam",
                "layercam",
                &["layercam", "gradcam", "cam"],
                "CAM method",
            ),
            ConfigField::required_path("weights", "weight file"),
            ConfigField::optional_path("cache", "cache dir"),
        ]
    }

    #[test]
    fn fills_defaults_and_reads_typed_values() {
        let t: toml::Table = toml::from_str("weights = \"w.pt\"\nthreshold = 1").unwrap();
        let r = resolve(&schema(), &t).unwrap();
        let s = Settings::parse("p", &toml::to_string(&r).unwrap(), &schema()).unwrap();
        assert_eq!(s.f64("threshold").unwrap(), 1.0);
        assert_eq!(s.str("cam").unwrap(), "layercam");
        assert_eq!(s.path("weights").unwrap().unwrap(), PathBuf::from("w.pt"));
        assert_eq!(s.path("cache").unwrap(), None);
    }

    #[test]
    fn weight_files_carry_their_download_hint_in_the_doc() {
        let w =
            ConfigField::weights_file("weights", "SAM checkpoint", "https://example.org/sam.pth");
        assert_eq!(w.kind, ConfigKind::Path);
        assert!(w.is_weights_file() && !w.optional && w.default.is_none());
        assert_eq!(w.download_hint(), Some("https://example.org/sam.pth"));
        assert_eq!(w.description(), "SAM checkpoint");
        let o = ConfigField::optional_weights_file("pretrained", "backbone", "");
        assert!(o.is_weights_file() && o.optional);
        assert_eq!(o.download_hint(), Some(""));
        let p = ConfigField::required_path("model", "a TorchScript file");
        assert!(!p.is_weights_file());
        assert_eq!(p.download_hint(), None);
        assert_eq!(p.description(), "a TorchScript file");
        // Validation and resolution treat weight files as plain paths.
        let t: toml::Table = toml::from_str("weights = \"w.pth\"").unwrap();
        let r = resolve(&[w.clone(), o], &t).unwrap();
        assert_eq!(r.get("weights").and_then(|v| v.as_str()), Some("w.pth"));
        assert!(resolve(&[w], &toml::Table::new()).is_err());
    }

    #[test]
    fn reports_every_problem() {
        let t: toml::Table =
            toml::from_str("thresold = 0.5\ncam = \"saliency\"\nthreshold = \"x\"").unwrap();
        let problems = resolve(&schema(), &t).unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
        assert_eq!(problems.len(), 4, "{text:?}");
        assert!(text
            .iter()
            .any(|m| m.contains("unknown setting `thresold`")));
        assert!(text.iter().any(|m| m.contains("must be one of")));
        assert!(text
            .iter()
            .any(|m| m.contains("must be a float, found string")));
        assert!(text
            .iter()
            .any(|m| m.contains("missing required setting `weights`")));
    }
}
