//! Shared image-processing toolbox.
