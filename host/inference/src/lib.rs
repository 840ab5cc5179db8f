//! Trained networks outside a run: the model file a volumetric segmenter
//! leaves ([`model_file`]: its header metadata, the wrapping of a plugin's
//! own file, how new volumes are to be prepared) and the inference engine
//! ([`engine::Segmenter`]) that rebuilds the network's stage from such a
//! file and segments new FLAIR volumes, as `clisc infer` and the DICOM
//! node do. The runner writes model files with the same functions.
#![warn(unreachable_pub)]

pub mod engine;
pub mod model_file;
