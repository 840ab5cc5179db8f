#!/usr/bin/env bash
# Debian packages that the test suite needs, installed only when missing
# (idempotent; quick when everything is there). Run as root, e.g. from .ci/run.
#
#   dcm2niix  reference DICOM -> NIfTI converter (host/cli/tests/dicom_*.rs)
#   dcmtk     independent DICOM tools: JPEG/RLE compression of test series,
#             dcmdump to read our DICOM SEG back
#   chromium  headless browser that opens the run report and screenshots it
#             (host/cli/tests/report_browser.rs)
#   slurm-wlm, munge
#             a real Slurm for tests/slurm_cluster.rs: scripts/slurm-local.sh
#             starts a one-node cluster (munged, slurmctld, slurmd) on loopback
#   openssl   certificates for the DICOM TLS test (host/cli/tests/dicom_tls.rs)
#   orthanc   a real PACS for tests/dicom_pacs.rs, which starts it on loopback
#             with its own configuration (the packaged service is not used)
set -euo pipefail

packages=(dcm2niix dcmtk chromium slurm-wlm munge orthanc openssl)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "ci-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
