//! # clisc DICOM node
//!
//! What a clisc node needs to work with a PACS over the network:
//!
//! * [`net`]: DIMSE services over `dicom-ul` associations: C-ECHO, C-STORE,
//!   study-level C-FIND and C-MOVE as a user (SCU), and a storage provider
//!   (SCP) that writes received instances into an inbox.
//! * [`tls`]: both ends over TLS with certificates signed by one authority
//!   (the DICOM secure transport connection profiles).
//! * [`outbox`]: files waiting to be sent, kept until the receiver
//!   confirmed them, across failures and restarts.
//!
//! Reading, converting and writing DICOM files is `clisc-dicom`'s job.

pub mod net;
pub mod outbox;
pub mod tls;
