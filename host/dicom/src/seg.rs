//! DICOM SEG output: a [`LabelVolume`] on a source series' grid becomes a
//! binary Segmentation object (SOP class 1.2.840.10008.5.1.4.1.1.66.4)
//! that PACS viewers and standard tools (highdicom, DCMTK, 3D Slicer,
//! OHIF) read.
//!
//! One segment per label value; each segment has coded category and type
//! (SNOMED CT), an anatomic region, and algorithm identification (name,
//! version, family "Artificial Intelligence"). Frames are stored only for
//! slices where a segment has voxels, each with its own plane position,
//! the shared plane orientation and pixel measures of the source, a
//! dimension index (segment, position) and a reference to the source
//! image it was derived from. The object references the source series and
//! its frame of reference, and is written in the source's patient and
//! study, so a PACS files it next to the images.
//!
//! SEG frames use the source images' own pixel layout (first row on top),
//! so the label volume (in the bottom-up layout of [`super::geometry`]) is
//! flipped back row by row.

use super::scan::Series;
use super::DicomError;
use clisc_sdk::LabelVolume;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use std::path::{Path, PathBuf};

/// SOP class UID of Segmentation Storage.
pub(crate) const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// A coded concept (code value, coding scheme designator, code meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// CodeValue, e.g. `108369006`.
    pub value: String,
    /// CodingSchemeDesignator, e.g. `SCT`.
    pub scheme: String,
    /// CodeMeaning, e.g. `Neoplasm`.
    pub meaning: String,
}

impl Code {
    /// A code from its three parts.
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Self {
        Self {
            value: value.into(),
            scheme: scheme.into(),
            meaning: meaning.into(),
        }
    }
    /// SCT 49755003 "Morphologically Abnormal Structure" (segment category).
    pub(crate) fn morphologically_abnormal_structure() -> Self {
        Self::new("49755003", "SCT", "Morphologically Abnormal Structure")
    }
    /// SCT 108369006 "Neoplasm" (segment type of a tumour).
    pub(crate) fn neoplasm() -> Self {
        Self::new("108369006", "SCT", "Neoplasm")
    }
    /// SCT 12738006 "Brain" (anatomic region).
    pub fn brain() -> Self {
        Self::new("12738006", "SCT", "Brain")
    }
}

/// Description of one segment (one label value).
#[derive(Debug, Clone, PartialEq)]
pub struct SegSegment {
    /// The label value in the [`LabelVolume`] (1..=255).
    pub label: u8,
    /// SegmentLabel, e.g. `Tumor`.
    pub name: String,
    /// SegmentedPropertyCategoryCodeSequence.
    pub category: Code,
    /// SegmentedPropertyTypeCodeSequence.
    pub property_type: Code,
    /// AnatomicRegionSequence (omitted when `None`).
    pub anatomic_region: Option<Code>,
}

impl SegSegment {
    /// A brain tumour segment for `label`.
    pub fn tumor(label: u8, name: &str) -> Self {
        Self {
            label,
            name: name.into(),
            category: Code::morphologically_abnormal_structure(),
            property_type: Code::neoplasm(),
            anatomic_region: Some(Code::brain()),
        }
    }
}

/// What to write besides the voxels.
#[derive(Debug, Clone, PartialEq)]
pub struct SegOptions {
    /// The segments, by label value. Label values present in the volume but
    /// not listed are written as tumour segments named `Label N`; listed
    /// labels without voxels get one empty frame so that they still exist.
    pub segments: Vec<SegSegment>,
    /// Algorithm name (SegmentAlgorithmName, AlgorithmName).
    pub algorithm_name: String,
    /// Algorithm version (AlgorithmVersion).
    pub algorithm_version: String,
    /// SeriesDescription of the SEG.
    pub series_description: String,
    /// SeriesNumber of the SEG (default: the source's plus 1000).
    pub series_number: Option<i64>,
    /// ContentLabel (upper case, at most 16 characters).
    pub content_label: String,
    /// ContentCreatorName.
    pub content_creator: String,
}

impl Default for SegOptions {
    fn default() -> Self {
        Self {
            segments: vec![SegSegment::tumor(1, "Tumor")],
            algorithm_name: "clisc".into(),
            algorithm_version: env!("CARGO_PKG_VERSION").into(),
            series_description: "clisc tumor segmentation".into(),
            series_number: None,
            content_label: "TUMOR".into(),
            content_creator: "clisc".into(),
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct SegSummary {
    /// The file.
    pub path: PathBuf,
    /// SOPInstanceUID of the SEG.
    pub sop_instance_uid: String,
    /// SeriesInstanceUID of the SEG.
    pub series_instance_uid: String,
    /// Number of frames.
    pub frames: usize,
    /// Segment number, label value, name and voxel count of each segment.
    pub segments: Vec<(u16, u8, String, usize)>,
}

/// A fresh UID under the `2.25` (UUID-derived) root.
pub(crate) fn new_uid() -> String {
    format!("2.25.{}", rand::random::<u128>())
}

/// Formats a decimal string (VR DS) within its 16-character limit.
pub fn ds(v: f64) -> String {
    for prec in (0..=10).rev() {
        let mut s = format!("{v:.prec$}");
        if s.contains('.') {
            s = s.trim_end_matches('0').trim_end_matches('.').to_string();
        }
        if s == "-0" {
            s = "0".into();
        }
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.3e}")
}

fn ds_multi(v: &[f64]) -> String {
    v.iter().map(|x| ds(*x)).collect::<Vec<_>>().join("\\")
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn code_item(code: &Code) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    put(&mut o, tags::CODE_VALUE, VR::SH, &code.value);
    put(&mut o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, &code.scheme);
    put(&mut o, tags::CODE_MEANING, VR::LO, &code.meaning);
    o
}

/// Writes `labels` (on the grid of `series`) as a binary DICOM SEG file.
///
/// Fails when the label grid is not the series' grid (shape, or affine
/// beyond 1e-3 mm), when the series is not a volume, or on write errors.
pub fn write_seg(
    series: &Series,
    labels: &LabelVolume,
    options: &SegOptions,
    path: &Path,
) -> Result<SegSummary, DicomError> {
    let geometry = series.require_geometry()?;
    let grid = geometry.grid;
    if !clisc_nifti::same_geometry(&grid, &labels.grid, 1e-3) {
        return Err(DicomError::Input(format!(
            "label volume grid {:?} with affine {:?} is not the grid of series {} ({:?}, affine {:?})",
            labels.grid.shape,
            labels.grid.affine,
            series.label(),
            grid.shape,
            grid.affine
        )));
    }
    if labels.data.len() != grid.len() {
        return Err(DicomError::Input(format!(
            "label volume has {} voxels, its grid {:?} needs {}",
            labels.data.len(),
            grid.shape,
            grid.len()
        )));
    }
    let [nx, ny, nz] = grid.dims();
    let slice_len = nx * ny;

    // Segments: the listed ones, then any other label value present.
    let mut present = [0usize; 256];
    for &v in labels.data.iter() {
        present[v as usize] += 1;
    }
    let mut segments: Vec<SegSegment> = options
        .segments
        .iter()
        .filter(|s| s.label != 0)
        .cloned()
        .collect();
    for v in 1..=255u8 {
        if present[v as usize] > 0 && !segments.iter().any(|s| s.label == v) {
            segments.push(SegSegment::tumor(v, &format!("Label {v}")));
        }
    }
    if segments.is_empty() {
        segments.push(SegSegment::tumor(1, "Tumor"));
    }

    let first = &series.slices[0];
    let now = chrono::Local::now();
    let (date, time) = (
        now.format("%Y%m%d").to_string(),
        now.format("%H%M%S").to_string(),
    );
    let sop_instance_uid = new_uid();
    let series_instance_uid = new_uid();
    let dimension_uid = new_uid();

    let mut obj = InMemDicomObject::new_empty();
    // SOP common, patient, study.
    put(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE);
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &sop_instance_uid);
    let st = &series.study;
    put(&mut obj, tags::PATIENT_NAME, VR::PN, &st.patient_name);
    put(&mut obj, tags::PATIENT_ID, VR::LO, &st.patient_id);
    put(
        &mut obj,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        &st.patient_birth_date,
    );
    put(&mut obj, tags::PATIENT_SEX, VR::CS, &st.patient_sex);
    put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &st.study_uid);
    put(&mut obj, tags::STUDY_DATE, VR::DA, &st.study_date);
    put(&mut obj, tags::STUDY_TIME, VR::TM, &st.study_time);
    put(&mut obj, tags::STUDY_ID, VR::SH, &st.study_id);
    put(
        &mut obj,
        tags::ACCESSION_NUMBER,
        VR::SH,
        &st.accession_number,
    );
    put(
        &mut obj,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &st.referring_physician,
    );
    put(
        &mut obj,
        tags::STUDY_DESCRIPTION,
        VR::LO,
        &st.study_description,
    );
    // Series, frame of reference, equipment.
    put(&mut obj, tags::MODALITY, VR::CS, "SEG");
    put(
        &mut obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &series_instance_uid,
    );
    let number = options
        .series_number
        .unwrap_or(series.number.unwrap_or(0) + 1000);
    put(&mut obj, tags::SERIES_NUMBER, VR::IS, &number.to_string());
    put(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &options.series_description,
    );
    put(&mut obj, tags::SERIES_DATE, VR::DA, &date);
    put(&mut obj, tags::SERIES_TIME, VR::TM, &time);
    put(
        &mut obj,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &series.frame_of_reference_uid,
    );
    put(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    put(&mut obj, tags::MANUFACTURER, VR::LO, "clisc");
    put(&mut obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, "clisc");
    put(&mut obj, tags::DEVICE_SERIAL_NUMBER, VR::LO, "0");
    put(
        &mut obj,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    // Image and segmentation image modules.
    put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put(&mut obj, tags::CONTENT_DATE, VR::DA, &date);
    put(&mut obj, tags::CONTENT_TIME, VR::TM, &time);
    put(&mut obj, tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY");
    put(
        &mut obj,
        tags::CONTENT_LABEL,
        VR::CS,
        &options.content_label.to_uppercase(),
    );
    put(
        &mut obj,
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        &options.series_description,
    );
    put(
        &mut obj,
        tags::CONTENT_CREATOR_NAME,
        VR::PN,
        &options.content_creator,
    );
    put(&mut obj, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    obj.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    put(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    obj.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(ny as u16),
    ));
    obj.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(nx as u16),
    ));
    obj.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    obj.put(DataElement::new(
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    obj.put(DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    ));

    // Segment sequence.
    let mut segment_items = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        let mut item = InMemDicomObject::new_empty();
        obj_put_us(&mut item, tags::SEGMENT_NUMBER, (i + 1) as u16);
        put(&mut item, tags::SEGMENT_LABEL, VR::LO, &s.name);
        put(&mut item, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
        put(
            &mut item,
            tags::SEGMENT_ALGORITHM_NAME,
            VR::LO,
            &options.algorithm_name,
        );
        let mut algo = InMemDicomObject::new_empty();
        put_seq(
            &mut algo,
            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
            vec![code_item(&Code::new(
                "123110",
                "DCM",
                "Artificial Intelligence",
            ))],
        );
        put(
            &mut algo,
            tags::ALGORITHM_NAME,
            VR::LO,
            &options.algorithm_name,
        );
        put(
            &mut algo,
            tags::ALGORITHM_VERSION,
            VR::LO,
            &options.algorithm_version,
        );
        put_seq(
            &mut item,
            tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
            vec![algo],
        );
        put_seq(
            &mut item,
            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
            vec![code_item(&s.category)],
        );
        put_seq(
            &mut item,
            tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
            vec![code_item(&s.property_type)],
        );
        if let Some(region) = &s.anatomic_region {
            put_seq(
                &mut item,
                tags::ANATOMIC_REGION_SEQUENCE,
                vec![code_item(region)],
            );
        }
        segment_items.push(item);
    }
    put_seq(&mut obj, tags::SEGMENT_SEQUENCE, segment_items);

    // Dimensions: segment number, then position.
    let mut org = InMemDicomObject::new_empty();
    put(
        &mut org,
        tags::DIMENSION_ORGANIZATION_UID,
        VR::UI,
        &dimension_uid,
    );
    put_seq(&mut obj, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org]);
    put(&mut obj, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
    let dim = |index: Tag, group: Tag, label: &str| {
        let mut d = InMemDicomObject::new_empty();
        put(
            &mut d,
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            &dimension_uid,
        );
        d.put(DataElement::new(
            tags::DIMENSION_INDEX_POINTER,
            VR::AT,
            PrimitiveValue::Tags(vec![index].into()),
        ));
        d.put(DataElement::new(
            tags::FUNCTIONAL_GROUP_POINTER,
            VR::AT,
            PrimitiveValue::Tags(vec![group].into()),
        ));
        put(&mut d, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        d
    };
    put_seq(
        &mut obj,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dim(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    );

    // Shared functional groups: orientation and pixel measures of the source.
    let mut shared = InMemDicomObject::new_empty();
    let mut orientation = InMemDicomObject::new_empty();
    put(
        &mut orientation,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        &ds_multi(&first.orientation),
    );
    put_seq(
        &mut shared,
        tags::PLANE_ORIENTATION_SEQUENCE,
        vec![orientation],
    );
    let mut measures = InMemDicomObject::new_empty();
    put(
        &mut measures,
        tags::PIXEL_SPACING,
        VR::DS,
        &ds_multi(&first.pixel_spacing),
    );
    put(
        &mut measures,
        tags::SLICE_THICKNESS,
        VR::DS,
        &ds(grid.spacing[2]),
    );
    put(
        &mut measures,
        tags::SPACING_BETWEEN_SLICES,
        VR::DS,
        &ds(grid.spacing[2]),
    );
    put_seq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    put_seq(
        &mut obj,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared],
    );

    // Frames: for each segment, every slice where it has voxels.
    let mut per_frame = Vec::new();
    let mut bits: Vec<bool> = Vec::new();
    let mut summary_segments = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        let number = (i + 1) as u16;
        let mut count = 0usize;
        let mut frames_of_segment = 0usize;
        for k in 0..nz {
            let slice = &labels.data[k * slice_len..(k + 1) * slice_len];
            let n = slice.iter().filter(|&&v| v == s.label).count();
            let last_chance = k + 1 == nz && frames_of_segment == 0;
            if n == 0 && !last_chance {
                continue;
            }
            count += n;
            frames_of_segment += 1;
            // Source layout: DICOM row r is label row ny - 1 - r.
            for r in 0..ny {
                let row = &slice[(ny - 1 - r) * nx..(ny - r) * nx];
                bits.extend(row.iter().map(|&v| v == s.label));
            }
            let src = &series.slices[k];
            let mut item = InMemDicomObject::new_empty();
            let mut content = InMemDicomObject::new_empty();
            content.put(DataElement::new(
                tags::DIMENSION_INDEX_VALUES,
                VR::UL,
                PrimitiveValue::U32(vec![number as u32, (k + 1) as u32].into()),
            ));
            put_seq(&mut item, tags::FRAME_CONTENT_SEQUENCE, vec![content]);
            let mut position = InMemDicomObject::new_empty();
            put(
                &mut position,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &ds_multi(&src.position),
            );
            put_seq(&mut item, tags::PLANE_POSITION_SEQUENCE, vec![position]);
            let mut ident = InMemDicomObject::new_empty();
            obj_put_us(&mut ident, tags::REFERENCED_SEGMENT_NUMBER, number);
            put_seq(
                &mut item,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                vec![ident],
            );
            let mut source = InMemDicomObject::new_empty();
            put(
                &mut source,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                &src.sop_class_uid,
            );
            put(
                &mut source,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &src.sop_instance_uid,
            );
            if src.number_of_frames > 1 {
                put(
                    &mut source,
                    tags::REFERENCED_FRAME_NUMBER,
                    VR::IS,
                    &(src.frame + 1).to_string(),
                );
            }
            put_seq(
                &mut source,
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code_item(&Code::new(
                    "121322",
                    "DCM",
                    "Source image for image processing operation",
                ))],
            );
            let mut derivation = InMemDicomObject::new_empty();
            put_seq(
                &mut derivation,
                tags::DERIVATION_CODE_SEQUENCE,
                vec![code_item(&Code::new("113076", "DCM", "Segmentation"))],
            );
            put_seq(&mut derivation, tags::SOURCE_IMAGE_SEQUENCE, vec![source]);
            put_seq(&mut item, tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]);
            per_frame.push(item);
        }
        summary_segments.push((number, s.label, s.name.clone(), count));
    }
    let frames = per_frame.len();
    put(
        &mut obj,
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        &frames.to_string(),
    );
    put_seq(
        &mut obj,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        per_frame,
    );

    // The source series and instances.
    let mut instances = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in &series.slices {
        if seen.insert(s.sop_instance_uid.clone()) {
            let mut i = InMemDicomObject::new_empty();
            put(
                &mut i,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                &s.sop_class_uid,
            );
            put(
                &mut i,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &s.sop_instance_uid,
            );
            instances.push(i);
        }
    }
    let mut referenced = InMemDicomObject::new_empty();
    put(
        &mut referenced,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &series.series_uid,
    );
    put_seq(
        &mut referenced,
        tags::REFERENCED_INSTANCE_SEQUENCE,
        instances,
    );
    put_seq(&mut obj, tags::REFERENCED_SERIES_SEQUENCE, vec![referenced]);

    // Pixel data: 1 bit per pixel, frames back to back, LSB first, even length.
    let mut packed = vec![0u8; bits.len().div_ceil(8)];
    for (i, _) in bits.iter().enumerate().filter(|(_, b)| **b) {
        packed[i / 8] |= 1 << (i % 8);
    }
    if packed.len() % 2 == 1 {
        packed.push(0);
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(packed.into()),
    ));

    let werr = |m: String| DicomError::Write {
        path: path.to_path_buf(),
        message: m,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| werr(format!("creating {}: {e}", dir.display())))?;
    }
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LE))
        .map_err(|e| werr(e.to_string()))?;
    // Write to a temporary name, then rename: a reader never sees half a file.
    let tmp = path.with_extension("dcm.part");
    if let Err(e) = file.write_to_file(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(with_causes(&e)));
    }
    std::fs::rename(&tmp, path).map_err(|e| werr(format!("renaming {}: {e}", tmp.display())))?;
    tracing::info!(
        "wrote DICOM SEG {} ({frames} frames, {} segments)",
        path.display(),
        segments.len()
    );
    Ok(SegSummary {
        path: path.to_path_buf(),
        sop_instance_uid,
        series_instance_uid,
        frames,
        segments: summary_segments,
    })
}

/// An error and its causes (`Could not print data set: ... : No space
/// left on device`): dicom-object's top-level message alone hides the
/// system's reason.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

fn obj_put_us(obj: &mut InMemDicomObject, tag: Tag, v: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(0.5), "0.5");
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(-123.456789012345), "-123.4567890123");
        assert!(ds(-123.456789012345).len() <= 16);
        assert_eq!(ds(2.0), "2");
        assert!(ds(1.0e20).len() <= 16);
        assert!(new_uid().starts_with("2.25.") && new_uid().len() <= 64);
    }
}
