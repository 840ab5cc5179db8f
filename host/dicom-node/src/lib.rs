//! # clisc DICOM node
//!
//! What a clisc node needs to work with a PACS over the network:
//!
//! * [`net`]: DIMSE services over `dicom-ul` associations: C-ECHO, C-STORE,
//!   study-level C-FIND and C-MOVE as a user (SCU).
//! * [`scp`]: the storage provider (SCP) that writes received instances
//!   into an inbox, within limits on associations and waiting studies.
//! * [`tls`]: both ends over TLS with certificates signed by one authority
//!   (the DICOM secure transport connection profiles).
//! * [`outbox`]: files waiting to be sent, kept until the receiver
//!   confirmed them, across failures and restarts.
//! * [`studies`]: the storage folder of `clisc dicom serve` (inbox, work,
//!   processed, failed, results) and its repair after a kill.
//!
//! Reading, converting and writing DICOM files is `clisc-dicom`'s job.
#![warn(unreachable_pub)]

pub mod net;
pub mod outbox;
pub mod scp;
pub mod studies;
pub mod tls;
