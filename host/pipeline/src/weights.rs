//! Weight files a pipeline needs: which settings name one, where the
//! official files come from, and the check that every one exists before a
//! run starts.
//!
//! A setting is a weight file when its plugin declares it with
//! [`clisc_sdk::ConfigField::weights_file`] (or `optional_weights_file`),
//! which carries the plugin's download hint, or when the file it names is
//! one of the official checkpoints listed in `OFFICIAL` (recognised by
//! file name, whatever plugin names it). The check is the same for every
//! stage, built-in or external.

use clisc_sdk::{ConfigField, ConfigKind};
use std::path::{Path, PathBuf};

/// An official checkpoint clisc knows by its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfficialWeights {
    /// The file name as published.
    pub file_name: &'static str,
    /// What it is.
    pub what: &'static str,
    /// Where it is published: the file itself, or (`url_is_page`) the
    /// page that links it when the publisher gives no stable file URL.
    pub url: &'static str,
    /// `url` is a page, not the file.
    pub url_is_page: bool,
}

/// The official checkpoints the built-in plugins read (CLIP, torchvision
/// ResNets, Segment Anything, SAM 2, MedSAM, MedSAM2, BiomedCLIP), by file
/// name.
pub(crate) const OFFICIAL: &[OfficialWeights] = &[
    OfficialWeights {
        file_name: "ViT-B-32.pt",
        what: "OpenAI CLIP ViT-B/32 (TorchScript archive)",
        url: "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "ViT-B-16.pt",
        what: "OpenAI CLIP ViT-B/16 (TorchScript archive)",
        url: "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "ViT-L-14.pt",
        what: "OpenAI CLIP ViT-L/14 (TorchScript archive)",
        url: "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "resnet50-11ad3fa6.pth",
        what: "torchvision ResNet-50 ImageNet weights (IMAGENET1K_V2, the current default)",
        url: "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "resnet50-0676ba61.pth",
        what: "torchvision ResNet-50 ImageNet weights (IMAGENET1K_V1, `pretrained=True`)",
        url: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "resnet34-b627a593.pth",
        what: "torchvision ResNet-34 ImageNet weights (IMAGENET1K_V1)",
        url: "https://download.pytorch.org/models/resnet34-b627a593.pth",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "resnet18-f37072fd.pth",
        what: "torchvision ResNet-18 ImageNet weights (IMAGENET1K_V1)",
        url: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam_vit_b_01ec64.pth",
        what: "Meta Segment Anything ViT-B checkpoint",
        url: "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam_vit_l_0b3195.pth",
        what: "Meta Segment Anything ViT-L checkpoint",
        url: "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam_vit_h_4b8939.pth",
        what: "Meta Segment Anything ViT-H checkpoint",
        url: "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam2.1_hiera_tiny.pt",
        what: "Meta SAM 2.1 Hiera-tiny checkpoint (plugin `sam2`)",
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam2.1_hiera_small.pt",
        what: "Meta SAM 2.1 Hiera-small checkpoint (plugin `sam2`)",
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam2.1_hiera_base_plus.pt",
        what: "Meta SAM 2.1 Hiera-base-plus checkpoint (plugin `sam2`)",
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam2.1_hiera_large.pt",
        what: "Meta SAM 2.1 Hiera-large checkpoint (plugin `sam2`)",
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam2_hiera_tiny.pt",
        what: "Meta SAM 2 (July 2024) Hiera-tiny checkpoint (plugin `sam2`)",
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam2_hiera_small.pt",
        what: "Meta SAM 2 (July 2024) Hiera-small checkpoint (plugin `sam2`)",
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam2_hiera_base_plus.pt",
        what: "Meta SAM 2 (July 2024) Hiera-base-plus checkpoint (plugin `sam2`)",
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_base_plus.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "sam2_hiera_large.pt",
        what: "Meta SAM 2 (July 2024) Hiera-large checkpoint (plugin `sam2`)",
        url: "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "MedSAM2_latest.pt",
        what: "MedSAM2 checkpoint, SAM 2.1 Hiera-tiny at 512 px (plugin `sam2`)",
        url: "https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt",
        url_is_page: false,
    },
    OfficialWeights {
        file_name: "medsam_vit_b.pth",
        what: "MedSAM ViT-B checkpoint (plugin `sam` with preprocess = \"medsam\"; the authors' README links the file)",
        url: "https://github.com/bowang-lab/MedSAM",
        url_is_page: true,
    },
    OfficialWeights {
        file_name: "open_clip_pytorch_model.bin",
        what: "BiomedCLIP weights in open_clip's format (plugin `biomedclip`; get vocab.txt from the same page, it goes next to them)",
        url: "https://huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
        url_is_page: true,
    },
];

/// The official checkpoint published under `file_name`, if clisc knows it.
pub fn official(file_name: &str) -> Option<&'static OfficialWeights> {
    OFFICIAL.iter().find(|w| w.file_name == file_name)
}

/// A weight file named by a stage's settings that does not exist.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingWeights {
    /// The setting, as `[stages.SLOT] settings.KEY`.
    pub setting: String,
    /// The plugin that reads it.
    pub plugin: String,
    /// The resolved (absolute) path.
    pub path: PathBuf,
    /// Where to get the file.
    pub download: String,
}

/// Whether `field` with value `path` names a weight file, and where to
/// download it: the exact URL when the file name is an official checkpoint
/// (more precise than a plugin's general hint), else the plugin's hint.
pub(crate) fn weights_source(field: &ConfigField, path: &Path) -> Option<String> {
    if field.kind != ConfigKind::Path {
        return None;
    }
    let known = path.file_name().and_then(|n| n.to_str()).and_then(official);
    let from_known = known.map(|w| format!("{}: {}", w.what, w.url));
    match field.download_hint() {
        Some(hint) if !hint.is_empty() => Some(from_known.unwrap_or_else(|| hint.to_string())),
        Some(_) => Some(from_known.unwrap_or_else(no_hint)),
        None => from_known,
    }
}

fn no_hint() -> String {
    "the plugin declares no download location; see its documentation".to_string()
}

/// The message of one missing weight file (after its file:line prefix).
pub fn describe(m: &MissingWeights) -> String {
    format!(
        "{} (plugin `{}`): weight file {} does not exist\n    get it from {}",
        m.setting,
        m.plugin,
        lexically_normal(&m.path).display(),
        m.download
    )
}

/// `path` without `.` components and with `dir/..` pairs removed (no file
/// system access), for messages: `/a/configs/../weights/x` -> `/a/weights/x`.
pub(crate) fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_files_by_name_come_first_then_plugin_hints() {
        let declared = ConfigField::weights_file("weights", "a model", "https://example.org/m.pt");
        assert_eq!(
            weights_source(&declared, Path::new("/w/mine.pt")).as_deref(),
            Some("https://example.org/m.pt")
        );
        let exact = weights_source(&declared, Path::new("/w/ViT-B-32.pt")).unwrap();
        assert!(exact.contains("openaipublic.azureedge.net"), "{exact}");
        let plain = ConfigField::required_path("weights", "a model");
        let clip = weights_source(&plain, Path::new("/w/ViT-B-32.pt")).unwrap();
        assert!(clip.contains("openaipublic.azureedge.net"), "{clip}");
        assert_eq!(weights_source(&plain, Path::new("/w/other.pt")), None);
        let unhinted = ConfigField::weights_file("weights", "a model", "");
        assert!(weights_source(&unhinted, Path::new("/w/other.pt"))
            .unwrap()
            .contains("declares no download location"));
        let number = ConfigField::float("threshold", 0.5, "x");
        assert_eq!(
            weights_source(&number, Path::new("sam_vit_b_01ec64.pth")),
            None
        );
    }

    #[test]
    fn paths_in_messages_are_lexically_normal() {
        assert_eq!(
            lexically_normal(Path::new("/a/configs/../weights/./x.pt")),
            PathBuf::from("/a/weights/x.pt")
        );
        assert_eq!(
            lexically_normal(Path::new("../w/x.pt")),
            PathBuf::from("../w/x.pt")
        );
    }

    #[test]
    fn official_files_have_distinct_names_and_https_urls() {
        for (i, w) in OFFICIAL.iter().enumerate() {
            assert!(w.url.starts_with("https://"), "{}", w.url);
            // A direct link names the file; only a publisher without one
            // (MedSAM's files are behind its README) or whose file needs
            // others from the same page (BiomedCLIP's vocab.txt) gets a page.
            assert!(w.url_is_page || w.url.ends_with(w.file_name), "{}", w.url);
            assert_eq!(
                w.url_is_page,
                ["medsam_vit_b.pth", "open_clip_pytorch_model.bin"].contains(&w.file_name),
                "{}",
                w.file_name
            );
            assert!(OFFICIAL[..i].iter().all(|o| o.file_name != w.file_name));
        }
    }
}
