//! Choosing a study's input series: TOML rules that map series to
//! modalities (`flair`, `t1`, `t1ce`, `t2`, ...) by SeriesDescription
//! regular expressions.
//!
//! ```toml
//! on_ambiguity = "error"        # or "highest_number" / "lowest_number"
//! [modalities.flair]
//! include = ["flair"]
//! [modalities.t1ce]
//! include = ["t1.*(post|gad|\\+c|contrast)", "t1ce", "t1c\\b"]
//! [modalities.t1]
//! include = ["t1"]
//! exclude = ["post", "gad", "\\+c", "contrast", "t1ce", "t1c\\b"]
//! [modalities.t2]
//! include = ["t2"]
//! exclude = ["flair", "star", "\\*"]
//! required = false
//! ```
//!
//! A modality's series must match at least one `include` pattern and no
//! `exclude` pattern (case-insensitive unless `case_sensitive = true`).
//! Localizers and series that are not volumes are never candidates. A
//! missing required modality, or a series claimed by two modalities, is an
//! error that lists every series found, so the rules can be fixed at once.

use super::scan::Series;
use super::DicomError;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What to do when several series match one modality.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ambiguity {
    /// Refuse, listing the candidates (default: never guess silently).
    #[default]
    Error,
    /// Take the series with the highest SeriesNumber (the latest repeat).
    HighestNumber,
    /// Take the series with the lowest SeriesNumber.
    LowestNumber,
}

/// How one modality is recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalityRule {
    /// SeriesDescription regexes; one must match.
    pub include: Vec<String>,
    /// SeriesDescription regexes; none may match.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// When false, a missing series is not an error.
    #[serde(default = "yes")]
    pub required: bool,
    /// Match case-sensitively (default: case-insensitive).
    #[serde(default)]
    pub case_sensitive: bool,
}

fn yes() -> bool {
    true
}

/// The rules: modality name -> rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalityRules {
    /// What to do when several series match one modality.
    #[serde(default)]
    pub on_ambiguity: Ambiguity,
    /// The modalities, by name (`flair`, `t1`, `t1ce`, `t2`, ...).
    pub modalities: BTreeMap<String, ModalityRule>,
}

struct Compiled {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

fn compile(modality: &str, rule: &ModalityRule) -> Result<Compiled, DicomError> {
    let build = |p: &String| {
        RegexBuilder::new(p)
            .case_insensitive(!rule.case_sensitive)
            .build()
            .map_err(|e| {
                DicomError::Select(format!(
                    "modality rules: `{modality}`: invalid pattern `{p}`: {e}"
                ))
            })
    };
    if rule.include.is_empty() {
        return Err(DicomError::Select(format!(
            "modality rules: `{modality}` has no `include` pattern"
        )));
    }
    Ok(Compiled {
        include: rule.include.iter().map(build).collect::<Result<_, _>>()?,
        exclude: rule.exclude.iter().map(build).collect::<Result<_, _>>()?,
    })
}

impl ModalityRules {
    /// Built-in rules for the four BraTS MRI modalities (flair, t1, t1ce,
    /// t2) from common SeriesDescription wording.
    pub fn brain_mri() -> Self {
        Self::from_toml_str(
            r#"
[modalities.flair]
include = ["flair"]
[modalities.t1ce]
include = ["t1.*(post|gad|\\+ ?c\\b|contrast|\\bce\\b)", "t1ce", "t1c\\b", "t1\\+c"]
[modalities.t1]
include = ["t1"]
exclude = ["post", "gad", "\\+ ?c\\b", "contrast", "\\bce\\b", "t1ce", "t1c\\b", "flair"]
[modalities.t2]
include = ["t2"]
exclude = ["flair", "star", "\\*", "t2\\s*map", "\\bpd\\b", "dual"]
"#,
        )
        .expect("built-in modality rules are valid")
    }

    /// Parses rules from TOML text (see the module documentation).
    pub fn from_toml_str(text: &str) -> Result<Self, DicomError> {
        let rules: Self = toml::from_str(text)
            .map_err(|e| DicomError::Select(format!("modality rules: {}", e.message())))?;
        for (m, r) in &rules.modalities {
            compile(m, r)?;
        }
        Ok(rules)
    }

    /// Reads rules from a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, DicomError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            DicomError::Select(format!(
                "cannot read modality rules {}: {e}",
                path.display()
            ))
        })?;
        Self::from_toml_str(&text)
            .map_err(|e| DicomError::Select(format!("{}: {e}", path.display())))
    }

    /// Picks one series per modality among `series` (in modality-name
    /// order; optional modalities without a match are left out).
    pub fn select<'a>(
        &self,
        series: &'a [Series],
    ) -> Result<Vec<(String, &'a Series)>, DicomError> {
        let candidates: Vec<&Series> = series.iter().filter(|s| s.is_volume()).collect();
        let mut chosen: Vec<(String, &Series)> = Vec::new();
        let mut problems = Vec::new();
        for (modality, rule) in &self.modalities {
            let c = compile(modality, rule)?;
            let mut matches: Vec<&Series> = candidates
                .iter()
                .copied()
                .filter(|s| {
                    c.include.iter().any(|r| r.is_match(&s.description))
                        && !c.exclude.iter().any(|r| r.is_match(&s.description))
                })
                .collect();
            matches.sort_by_key(|s| s.number.unwrap_or(i64::MIN));
            let pick = match (matches.len(), self.on_ambiguity) {
                (0, _) => {
                    if rule.required {
                        problems.push(format!(
                            "no series for `{modality}` (include {:?}, exclude {:?})",
                            rule.include, rule.exclude
                        ));
                    }
                    None
                }
                (1, _) | (_, Ambiguity::LowestNumber) => Some(matches[0]),
                (_, Ambiguity::HighestNumber) => matches.last().copied(),
                (_, Ambiguity::Error) => {
                    let names: Vec<String> = matches.iter().map(|s| s.label()).collect();
                    problems.push(format!(
                        "{} series match `{modality}`: {} (tighten the patterns or set on_ambiguity)",
                        matches.len(),
                        names.join(", ")
                    ));
                    None
                }
            };
            if let Some(s) = pick {
                if let Some((other, _)) = chosen.iter().find(|(_, t)| std::ptr::eq(*t, s)) {
                    problems.push(format!(
                        "series {} matches both `{other}` and `{modality}`",
                        s.label()
                    ));
                }
                chosen.push((modality.clone(), s));
            }
        }
        if problems.is_empty() {
            return Ok(chosen);
        }
        Err(DicomError::Select(format!(
            "cannot choose the input series: {}.\nSeries found:\n{}",
            problems.join("; "),
            describe_all(series)
        )))
    }
}

/// One line per series: number, description, size, and why it is not a
/// candidate when it is not.
pub fn describe_all(series: &[Series]) -> String {
    if series.is_empty() {
        return "  (no DICOM image series)".into();
    }
    series
        .iter()
        .map(|s| {
            let what = match (&s.geometry, s.localizer) {
                (_, true) => format!("localizer, {} image(s)", s.slices.len()),
                (Ok(g), false) => format!(
                    "{}x{}x{}",
                    g.grid.shape[0], g.grid.shape[1], g.grid.shape[2]
                ),
                (Err(e), false) => format!("not a volume: {e}"),
            };
            format!("  {} {} ({what})", s.label(), s.modality)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::sort_and_measure;
    use crate::scan::{PatientStudy, SliceHeader};

    fn series(number: i64, description: &str) -> Series {
        let mut slices: Vec<SliceHeader> = (0..3)
            .map(|k| SliceHeader {
                path: format!("{number}/{k}").into(),
                frame: 0,
                number_of_frames: 1,
                sop_class_uid: String::new(),
                sop_instance_uid: format!("1.{number}.{k}"),
                transfer_syntax: String::new(),
                study: PatientStudy::default(),
                series_uid: format!("1.{number}"),
                series_number: Some(number),
                series_description: description.into(),
                modality: "MR".into(),
                frame_of_reference_uid: String::new(),
                instance_number: Some(k),
                image_type: vec![],
                rows: 2,
                columns: 2,
                pixel_spacing: [1.0, 1.0],
                orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                position: [0.0, 0.0, k as f64],
                rescale_slope: 1.0,
                rescale_intercept: 0.0,
                echo_number: None,
                echo_time: None,
                stack_id: None,
                temporal_position: None,
                slice_thickness: None,
                samples_per_pixel: 1,
                bits_allocated: 16,
            })
            .collect();
        let geometry = sort_and_measure(&mut slices);
        Series {
            study: PatientStudy::default(),
            series_uid: format!("1.{number}"),
            number: Some(number),
            description: description.into(),
            modality: "MR".into(),
            frame_of_reference_uid: String::new(),
            part: None,
            localizer: false,
            slices,
            geometry,
        }
    }

    #[test]
    fn built_in_rules_pick_the_four_modalities() {
        let found = vec![
            series(2, "AX FLAIR"),
            series(3, "AX T1 pre"),
            series(4, "AX T1 POST GAD"),
            series(5, "AX T2 TSE"),
            series(6, "AX T2* GRE"),
        ];
        let picked = ModalityRules::brain_mri().select(&found).unwrap();
        let names: Vec<(String, i64)> = picked
            .iter()
            .map(|(m, s)| (m.clone(), s.number.unwrap()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("flair".into(), 2),
                ("t1".into(), 3),
                ("t1ce".into(), 4),
                ("t2".into(), 5)
            ]
        );
    }

    #[test]
    fn missing_modality_lists_the_series_found() {
        let found = vec![series(2, "AX FLAIR"), series(3, "AX T1 pre")];
        let err = ModalityRules::brain_mri()
            .select(&found)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no series for `t1ce`"), "{err}");
        assert!(err.contains("no series for `t2`"), "{err}");
        assert!(err.contains("#2 'AX FLAIR' MR (2x2x3)"), "{err}");
        assert!(err.contains("#3 'AX T1 pre'"), "{err}");
    }

    #[test]
    fn ambiguity_policies() {
        let found = vec![series(2, "flair"), series(7, "flair repeat")];
        let mut rules =
            ModalityRules::from_toml_str("[modalities.flair]\ninclude = ['FLAIR']\n").unwrap();
        let err = rules.select(&found).unwrap_err().to_string();
        assert!(err.contains("2 series match `flair`"), "{err}");
        rules.on_ambiguity = Ambiguity::HighestNumber;
        assert_eq!(rules.select(&found).unwrap()[0].1.number, Some(7));
        rules.on_ambiguity = Ambiguity::LowestNumber;
        assert_eq!(rules.select(&found).unwrap()[0].1.number, Some(2));
    }

    #[test]
    fn invalid_rules_are_reported() {
        let err = ModalityRules::from_toml_str("[modalities.t1]\ninclude = ['(']\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`t1`: invalid pattern `(`"), "{err}");
        let err = ModalityRules::from_toml_str("[modalities.t1]\ninclde = ['t1']\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("inclde"), "{err}");
        let case = ModalityRules::from_toml_str(
            "[modalities.t1]\ninclude = ['T1']\ncase_sensitive = true\n",
        )
        .unwrap();
        assert!(case.select(&[series(1, "t1")]).is_err());
        assert!(case.select(&[series(1, "T1")]).is_ok());
    }
}
