//! Scanning a folder tree of DICOM files and grouping the slices into
//! series and stackable volumes.
//!
//! Files may have any names and sit at any depth; studies and series may be
//! mixed. Every image frame (one per classic file, several per enhanced
//! multi-frame file) becomes a [`SliceHeader`]. Slices are grouped by
//! SeriesInstanceUID and then split, as dcm2niix does, wherever stacking
//! them would be wrong: different image size, orientation, pixel spacing,
//! echo, stack, temporal position or localizer flag. Localizers (ImageType
//! contains `LOCALIZER`) are kept as their own series and never converted.
//! Files that are not DICOM, or DICOM objects without an image plane
//! (reports, presentation states, segmentations), are reported as skipped.

use super::geometry::{self, SeriesGeometry};
use super::DicomError;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemDicomObject;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Patient and study attributes of a slice (copied into derived objects).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientStudy {
    /// PatientName.
    pub patient_name: String,
    /// PatientID.
    pub patient_id: String,
    /// PatientBirthDate.
    pub patient_birth_date: String,
    /// PatientSex.
    pub patient_sex: String,
    /// StudyInstanceUID.
    pub study_uid: String,
    /// StudyDate.
    pub study_date: String,
    /// StudyTime.
    pub study_time: String,
    /// StudyID.
    pub study_id: String,
    /// AccessionNumber.
    pub accession_number: String,
    /// ReferringPhysicianName.
    pub referring_physician: String,
    /// StudyDescription.
    pub study_description: String,
}

/// The header facts of one image frame (a classic single-frame file, or one
/// frame of an enhanced multi-frame file).
#[derive(Debug, Clone, PartialEq)]
pub struct SliceHeader {
    /// The file.
    pub path: PathBuf,
    /// Frame index in the file (0-based; 0 for single-frame files).
    pub frame: u32,
    /// NumberOfFrames of the file (1 for single-frame files).
    pub number_of_frames: u32,
    /// SOPClassUID.
    pub sop_class_uid: String,
    /// SOPInstanceUID.
    pub sop_instance_uid: String,
    /// Transfer syntax UID of the file.
    pub transfer_syntax: String,
    /// Patient and study attributes.
    pub study: PatientStudy,
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// SeriesNumber.
    pub series_number: Option<i64>,
    /// SeriesDescription (empty when absent).
    pub series_description: String,
    /// Modality (MR, CT, ...).
    pub modality: String,
    /// FrameOfReferenceUID (empty when absent).
    pub frame_of_reference_uid: String,
    /// InstanceNumber (informative only: never used for sorting).
    pub instance_number: Option<i64>,
    /// ImageType values (FrameType for enhanced frames).
    pub image_type: Vec<String>,
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub columns: u32,
    /// PixelSpacing: distance between rows, then between columns (mm).
    pub pixel_spacing: [f64; 2],
    /// ImageOrientationPatient: row cosine then column cosine (LPS).
    pub orientation: [f64; 6],
    /// ImagePositionPatient: centre of the first transmitted pixel (LPS, mm).
    pub position: [f64; 3],
    /// RescaleSlope (1 when absent).
    pub rescale_slope: f64,
    /// RescaleIntercept (0 when absent).
    pub rescale_intercept: f64,
    /// EchoNumbers.
    pub echo_number: Option<i64>,
    /// EchoTime (or EffectiveEchoTime), ms.
    pub echo_time: Option<f64>,
    /// StackID of enhanced frames.
    pub stack_id: Option<String>,
    /// TemporalPositionIdentifier / TemporalPositionIndex.
    pub temporal_position: Option<i64>,
    /// SliceThickness (informative: spacing always comes from positions).
    pub slice_thickness: Option<f64>,
    /// SamplesPerPixel.
    pub samples_per_pixel: u16,
    /// BitsAllocated.
    pub bits_allocated: u16,
}

impl SliceHeader {
    /// True when ImageType marks the frame as a localizer (scout).
    pub(crate) fn is_localizer(&self) -> bool {
        self.image_type
            .iter()
            .any(|t| t.eq_ignore_ascii_case("LOCALIZER"))
    }
}

/// One stackable group of slices: a whole DICOM series, or the part of one
/// that shares size, orientation, spacing, echo and stack (see [`Series::part`]).
#[derive(Debug, Clone)]
pub struct Series {
    /// Patient and study attributes (of the first slice).
    pub study: PatientStudy,
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// SeriesNumber.
    pub number: Option<i64>,
    /// SeriesDescription.
    pub description: String,
    /// Modality.
    pub modality: String,
    /// FrameOfReferenceUID.
    pub frame_of_reference_uid: String,
    /// Why this group was split from the rest of its DICOM series (e.g.
    /// `echo 2`), `None` when it is the whole series.
    pub part: Option<String>,
    /// True for localizers (never stacked into volumes).
    pub localizer: bool,
    /// The slices, sorted by position along the slice normal.
    pub slices: Vec<SliceHeader>,
    /// The volume geometry, or why the slices do not form a volume.
    pub geometry: Result<SeriesGeometry, geometry::NotAVolume>,
}

impl Series {
    /// A short human name: `#number 'description' [part]`.
    pub fn label(&self) -> String {
        let number = self
            .number
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into());
        match &self.part {
            Some(p) => format!("#{number} '{}' [{p}]", self.description),
            None => format!("#{number} '{}'", self.description),
        }
    }
    /// True when the series can be converted to a volume.
    pub fn is_volume(&self) -> bool {
        !self.localizer && self.geometry.is_ok()
    }
    /// The geometry, or an error saying why this series is not a volume.
    pub(crate) fn require_geometry(&self) -> Result<&SeriesGeometry, DicomError> {
        if self.localizer {
            return Err(DicomError::Series {
                series: self.label(),
                message: "is a localizer; localizers are never stacked into volumes".into(),
            });
        }
        self.geometry.as_ref().map_err(|why| DicomError::Series {
            series: self.label(),
            message: why.to_string(),
        })
    }
}

/// A file that was not used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// Everything found under a folder.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// The series, ordered by study, series number, description and part.
    pub series: Vec<Series>,
    /// Files that were not used (not DICOM, no image plane, duplicates, ...).
    pub skipped: Vec<SkippedFile>,
}

impl ScanReport {
    /// The series that can be converted to volumes.
    pub fn volumes(&self) -> impl Iterator<Item = &Series> {
        self.series.iter().filter(|s| s.is_volume())
    }
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?;
    let s = s
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    Some(s)
}

fn text_or_empty(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    text(obj, tag).unwrap_or_default()
}

fn floats(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.get(tag)?.to_multi_float64().ok()
}

fn float(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    floats(obj, tag)?.first().copied()
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

fn strings(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Vec<String> {
    text(obj, tag)
        .map(|s| s.split('\\').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default()
}

/// First item of sequence `tag`.
fn item(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

/// Functional-group lookup of an enhanced frame: the per-frame item first,
/// then the shared one.
struct Groups<'a> {
    per_frame: Option<&'a InMemDicomObject>,
    shared: Option<&'a InMemDicomObject>,
}

impl<'a> Groups<'a> {
    fn find(&self, seq: dicom_core::Tag) -> Option<&'a InMemDicomObject> {
        self.per_frame
            .and_then(|p| item(p, seq))
            .or_else(|| self.shared.and_then(|s| item(s, seq)))
    }
}

fn read_err(path: &Path, message: impl Into<String>) -> DicomError {
    DicomError::Read {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Opens a DICOM file's header (everything before the pixel data).
pub(crate) fn open_header(path: &Path) -> Result<DefaultDicomObject, DicomError> {
    super::guard::check_lengths(path)?;
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| read_err(path, e.to_string()))
}

/// Reads the image frames of one file. `Ok(vec![])` never happens: a file
/// without an image plane is an error explaining why (reported as skipped).
pub(crate) fn read_slices(path: &Path) -> Result<Vec<SliceHeader>, DicomError> {
    let file = open_header(path)?;
    let transfer_syntax = file
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let obj: &InMemDicomObject = &file;
    let modality = text_or_empty(obj, tags::MODALITY);
    let sop_class_uid = text_or_empty(obj, tags::SOP_CLASS_UID);
    if modality == "SEG" || modality == "RTSTRUCT" || modality == "SR" || modality == "PR" {
        return Err(read_err(path, format!("a {modality} object, not an image")));
    }
    let rows = int(obj, tags::ROWS).ok_or_else(|| read_err(path, "no Rows: not an image"))?;
    let columns =
        int(obj, tags::COLUMNS).ok_or_else(|| read_err(path, "no Columns: not an image"))?;
    for (name, value) in [("Rows", rows), ("Columns", columns)] {
        if !(1..=65535).contains(&value) {
            return Err(read_err(
                path,
                format!("{name} = {value} (expected 1..65535)"),
            ));
        }
    }
    let series_uid = text(obj, tags::SERIES_INSTANCE_UID)
        .ok_or_else(|| read_err(path, "no SeriesInstanceUID"))?;
    let number_of_frames = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32;
    let study = PatientStudy {
        patient_name: text_or_empty(obj, tags::PATIENT_NAME),
        patient_id: text_or_empty(obj, tags::PATIENT_ID),
        patient_birth_date: text_or_empty(obj, tags::PATIENT_BIRTH_DATE),
        patient_sex: text_or_empty(obj, tags::PATIENT_SEX),
        study_uid: text_or_empty(obj, tags::STUDY_INSTANCE_UID),
        study_date: text_or_empty(obj, tags::STUDY_DATE),
        study_time: text_or_empty(obj, tags::STUDY_TIME),
        study_id: text_or_empty(obj, tags::STUDY_ID),
        accession_number: text_or_empty(obj, tags::ACCESSION_NUMBER),
        referring_physician: text_or_empty(obj, tags::REFERRING_PHYSICIAN_NAME),
        study_description: text_or_empty(obj, tags::STUDY_DESCRIPTION),
    };
    let base = SliceHeader {
        path: path.to_path_buf(),
        frame: 0,
        number_of_frames,
        sop_class_uid,
        sop_instance_uid: text_or_empty(obj, tags::SOP_INSTANCE_UID),
        transfer_syntax,
        study,
        series_uid,
        series_number: int(obj, tags::SERIES_NUMBER),
        series_description: text_or_empty(obj, tags::SERIES_DESCRIPTION),
        modality,
        frame_of_reference_uid: text_or_empty(obj, tags::FRAME_OF_REFERENCE_UID),
        instance_number: int(obj, tags::INSTANCE_NUMBER),
        image_type: strings(obj, tags::IMAGE_TYPE),
        rows: rows as u32,
        columns: columns as u32,
        pixel_spacing: [0.0; 2],
        orientation: [0.0; 6],
        position: [0.0; 3],
        rescale_slope: float(obj, tags::RESCALE_SLOPE).unwrap_or(1.0),
        rescale_intercept: float(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
        echo_number: int(obj, tags::ECHO_NUMBERS),
        echo_time: float(obj, tags::ECHO_TIME),
        stack_id: None,
        temporal_position: int(obj, tags::TEMPORAL_POSITION_IDENTIFIER),
        slice_thickness: float(obj, tags::SLICE_THICKNESS),
        samples_per_pixel: int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
        bits_allocated: int(obj, tags::BITS_ALLOCATED).unwrap_or(16) as u16,
    };
    let per_frame = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items());
    let shared = item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    if per_frame.is_none() && shared.is_none() {
        if number_of_frames > 1 {
            return Err(read_err(
                path,
                format!("{number_of_frames} frames without per-frame functional groups (no geometry per frame)"),
            ));
        }
        let mut s = base;
        s.position = vec3(
            floats(obj, tags::IMAGE_POSITION_PATIENT),
            path,
            "ImagePositionPatient",
        )?;
        s.orientation = vec6(
            floats(obj, tags::IMAGE_ORIENTATION_PATIENT),
            path,
            "ImageOrientationPatient",
        )?;
        s.pixel_spacing = spacing(floats(obj, tags::PIXEL_SPACING), path)?;
        return Ok(vec![s]);
    }
    // Enhanced multi-frame: one header per frame from the functional groups.
    let per_frame = per_frame.unwrap_or(&[]);
    if per_frame.len() != number_of_frames as usize {
        return Err(read_err(
            path,
            format!(
                "PerFrameFunctionalGroupsSequence has {} items for NumberOfFrames {number_of_frames}",
                per_frame.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(per_frame.len());
    for (f, pf) in per_frame.iter().enumerate() {
        let g = Groups {
            per_frame: Some(pf),
            shared,
        };
        let mut s = base.clone();
        s.frame = f as u32;
        let what = |name: &str| format!("{name} of frame {}", f + 1);
        let pos = g
            .find(tags::PLANE_POSITION_SEQUENCE)
            .and_then(|i| floats(i, tags::IMAGE_POSITION_PATIENT));
        s.position = vec3(pos, path, &what("ImagePositionPatient"))?;
        let ori = g
            .find(tags::PLANE_ORIENTATION_SEQUENCE)
            .and_then(|i| floats(i, tags::IMAGE_ORIENTATION_PATIENT));
        s.orientation = vec6(ori, path, &what("ImageOrientationPatient"))?;
        let measures = g.find(tags::PIXEL_MEASURES_SEQUENCE);
        s.pixel_spacing = spacing(measures.and_then(|i| floats(i, tags::PIXEL_SPACING)), path)?;
        if let Some(t) = measures.and_then(|i| float(i, tags::SLICE_THICKNESS)) {
            s.slice_thickness = Some(t);
        }
        if let Some(pvt) = g.find(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE) {
            s.rescale_slope = float(pvt, tags::RESCALE_SLOPE).unwrap_or(1.0);
            s.rescale_intercept = float(pvt, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
        }
        if let Some(echo) = g
            .find(tags::MR_ECHO_SEQUENCE)
            .and_then(|i| float(i, tags::EFFECTIVE_ECHO_TIME))
        {
            s.echo_time = Some(echo);
        }
        if let Some(fc) = g.find(tags::FRAME_CONTENT_SEQUENCE) {
            s.stack_id = text(fc, tags::STACK_ID);
            s.temporal_position = int(fc, tags::TEMPORAL_POSITION_INDEX).or(s.temporal_position);
        }
        if let Some(ft) = g
            .find(tags::MR_IMAGE_FRAME_TYPE_SEQUENCE)
            .or_else(|| g.find(tags::CT_IMAGE_FRAME_TYPE_SEQUENCE))
        {
            let t = strings(ft, tags::FRAME_TYPE);
            if !t.is_empty() {
                s.image_type = t;
            }
        }
        out.push(s);
    }
    Ok(out)
}

fn vec3(v: Option<Vec<f64>>, path: &Path, what: &str) -> Result<[f64; 3], DicomError> {
    match v {
        Some(v) if v.len() >= 3 && v.iter().all(|x| x.is_finite()) => Ok([v[0], v[1], v[2]]),
        Some(v) => Err(read_err(
            path,
            format!("{what} has {} values ({v:?}); 3 expected", v.len()),
        )),
        None => Err(read_err(
            path,
            format!("no {what}: not a slice with a known position"),
        )),
    }
}

fn vec6(v: Option<Vec<f64>>, path: &Path, what: &str) -> Result<[f64; 6], DicomError> {
    match v {
        Some(v) if v.len() >= 6 && v.iter().all(|x| x.is_finite()) => {
            Ok([v[0], v[1], v[2], v[3], v[4], v[5]])
        }
        Some(v) => Err(read_err(
            path,
            format!("{what} has {} values ({v:?}); 6 expected", v.len()),
        )),
        None => Err(read_err(
            path,
            format!("no {what}: not a slice with a known orientation"),
        )),
    }
}

fn spacing(v: Option<Vec<f64>>, path: &Path) -> Result<[f64; 2], DicomError> {
    match v {
        Some(v) if v.len() >= 2 && v[0] > 0.0 && v[1] > 0.0 => Ok([v[0], v[1]]),
        Some(v) => Err(read_err(
            path,
            format!("PixelSpacing {v:?}: two positive values expected"),
        )),
        None => Err(read_err(path, "no PixelSpacing")),
    }
}

/// All regular files under `dir` (recursively, sorted, hidden files too).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        let ft = std::fs::metadata(&p)?.file_type();
        if ft.is_dir() {
            walk(&p, out)?;
        } else if ft.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

/// True when two slices may be stacked into one volume (same size,
/// orientation within 1e-3, pixel spacing within 1e-4 mm, echo, stack,
/// temporal position, localizer flag).
pub(crate) fn stackable(a: &SliceHeader, b: &SliceHeader) -> bool {
    let close = |x: f64, y: f64, tol: f64| (x - y).abs() <= tol;
    a.series_uid == b.series_uid
        && a.rows == b.rows
        && a.columns == b.columns
        && a.samples_per_pixel == b.samples_per_pixel
        && a.orientation
            .iter()
            .zip(&b.orientation)
            .all(|(x, y)| close(*x, *y, 1e-3))
        && a.pixel_spacing
            .iter()
            .zip(&b.pixel_spacing)
            .all(|(x, y)| close(*x, *y, 1e-4))
        && a.echo_number == b.echo_number
        && match (a.echo_time, b.echo_time) {
            (Some(x), Some(y)) => close(x, y, 1e-3),
            (None, None) => true,
            _ => false,
        }
        && a.stack_id == b.stack_id
        && a.temporal_position == b.temporal_position
        && a.is_localizer() == b.is_localizer()
}

/// Describes what sets group `g` apart from the other groups of its series.
fn part_name(g: &[SliceHeader], others: &[&[SliceHeader]], index: usize, count: usize) -> String {
    let s = &g[0];
    let mut parts = Vec::new();
    let differs = |f: &dyn Fn(&SliceHeader) -> String| others.iter().any(|o| f(&o[0]) != f(s));
    let echo = |h: &SliceHeader| {
        format!(
            "{:?}/{:?}",
            h.echo_number,
            h.echo_time.map(|t| (t * 1000.0).round())
        )
    };
    if differs(&echo) {
        match (s.echo_number, s.echo_time) {
            (Some(n), Some(t)) => parts.push(format!("echo {n} (TE {t} ms)")),
            (Some(n), None) => parts.push(format!("echo {n}")),
            (None, Some(t)) => parts.push(format!("TE {t} ms")),
            (None, None) => parts.push("no echo".into()),
        }
    }
    if differs(&|h| format!("{}x{}", h.columns, h.rows)) {
        parts.push(format!("{}x{} pixels", s.columns, s.rows));
    }
    if differs(&|h| format!("{:?}", h.stack_id)) {
        parts.push(format!("stack {}", s.stack_id.as_deref().unwrap_or("-")));
    }
    if differs(&|h| format!("{:?}", h.temporal_position)) {
        parts.push(format!(
            "time {}",
            s.temporal_position
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into())
        ));
    }
    if differs(&|h| h.is_localizer().to_string()) && s.is_localizer() {
        parts.push("localizer".into());
    }
    if parts.is_empty() {
        parts.push(format!("part {} of {count}", index + 1));
    }
    parts.join(", ")
}

/// Scans `dir` recursively and groups everything found into series.
///
/// Unreadable or non-image files never abort the scan: they are listed in
/// [`ScanReport::skipped`] (and logged). Fails only when `dir` itself
/// cannot be listed.
pub fn scan_dir(dir: &Path) -> Result<ScanReport, DicomError> {
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| read_err(dir, format!("listing the folder: {e}")))?;
    let mut report = ScanReport::default();
    let mut slices = Vec::new();
    for path in files {
        match read_slices(&path) {
            Ok(s) => slices.extend(s),
            Err(e) => {
                let reason = match &e {
                    DicomError::Read { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                tracing::debug!("skipping {}: {reason}", path.display());
                report.skipped.push(SkippedFile { path, reason });
            }
        }
    }
    report.series = group(slices, &mut report.skipped);
    for s in &report.series {
        if let Err(why) = &s.geometry {
            if !s.localizer {
                tracing::warn!("series {} is not a volume: {why}", s.label());
            }
        }
        if let Ok(g) = &s.geometry {
            for w in &g.warnings {
                tracing::warn!("series {}: {w}", s.label());
            }
        }
    }
    Ok(report)
}

/// Groups slices into series (see the module documentation); duplicates
/// (same SOPInstanceUID and frame) are dropped into `skipped`.
pub fn group(slices: Vec<SliceHeader>, skipped: &mut Vec<SkippedFile>) -> Vec<Series> {
    let mut seen = HashSet::new();
    let mut groups: Vec<Vec<SliceHeader>> = Vec::new();
    for s in slices {
        if !s.sop_instance_uid.is_empty() && !seen.insert((s.sop_instance_uid.clone(), s.frame)) {
            skipped.push(SkippedFile {
                path: s.path.clone(),
                reason: format!(
                    "duplicate of SOPInstanceUID {} frame {}",
                    s.sop_instance_uid,
                    s.frame + 1
                ),
            });
            continue;
        }
        match groups.iter_mut().find(|g| stackable(&g[0], &s)) {
            Some(g) => g.push(s),
            None => groups.push(vec![s]),
        }
    }
    // Name the parts of series that were split.
    let mut series = Vec::with_capacity(groups.len());
    for (i, g) in groups.iter().enumerate() {
        let siblings: Vec<usize> = (0..groups.len())
            .filter(|&j| groups[j][0].series_uid == groups[i][0].series_uid)
            .collect();
        let part = if siblings.len() > 1 {
            let others: Vec<&[SliceHeader]> = siblings
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| &groups[j][..])
                .collect();
            let index = siblings.iter().position(|&j| j == i).unwrap_or(0);
            Some(part_name(g, &others, index, siblings.len()))
        } else {
            None
        };
        series.push((part, g.clone()));
    }
    let mut out: Vec<Series> = series
        .into_iter()
        .map(|(part, mut slices)| {
            let localizer = slices[0].is_localizer();
            let geometry = geometry::sort_and_measure(&mut slices);
            let first = &slices[0];
            Series {
                study: first.study.clone(),
                series_uid: first.series_uid.clone(),
                number: first.series_number,
                description: first.series_description.clone(),
                modality: first.modality.clone(),
                frame_of_reference_uid: first.frame_of_reference_uid.clone(),
                part,
                localizer,
                geometry,
                slices,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (
            &a.study.study_uid,
            a.number.unwrap_or(i64::MAX),
            &a.description,
            &a.series_uid,
            &a.part,
        )
            .cmp(&(
                &b.study.study_uid,
                b.number.unwrap_or(i64::MAX),
                &b.description,
                &b.series_uid,
                &b.part,
            ))
    });
    out
}
