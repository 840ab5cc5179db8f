//! `clisc dicom ...`: list DICOM studies and series, convert them to NIfTI,
//! and work with a PACS: `serve` (a DICOM node that segments every study it
//! receives and sends the SEG on), `pull` (C-FIND + C-MOVE) and `push`
//! (C-STORE with retries).

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use clisc_dicom::{convert::ConvertOptions, select::describe_all, ModalityRules};
use clisc_dicom_node::net::{self, Peer, StudyQuery};
use clisc_dicom_node::scp::{ScpLimits, StoreScp, StoredInstance};
use clisc_dicom_node::studies::{Recovery, StudyStore, Take};
use clisc_dicom_node::tls::{self, TlsFiles};
use clisc_inference::engine::{LoadOptions, Segmenter};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// DICOM subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DicomCommand {
    /// List the studies and series under a folder, with their geometry.
    Ls(LsArgs),
    /// Convert the series under a folder to NIfTI (same voxels and affine as dcm2niix).
    Convert(ConvertArgs),
    /// Run a DICOM node: receive studies by C-STORE, segment each complete
    /// study, send the SEG to a destination (kept and retried until it is
    /// accepted).
    Serve(ServeArgs),
    /// Query a PACS (C-FIND) and retrieve the matching studies (C-MOVE to
    /// this node, which receives them on `--listen`).
    Pull(PullArgs),
    /// Send DICOM files (e.g. SEG results) to a PACS by C-STORE, with retries.
    Push(PushArgs),
}

/// This node's identity on the network (shared by serve, pull and push).
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// This node's AE title.
    #[arg(long, default_value = "CLISC")]
    pub ae_title: String,
    /// Use TLS with this PEM certificate (chain) of the node; needs
    /// --tls-key and --tls-ca. Both directions then use TLS and peers must
    /// present a certificate signed by the CA.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate of the authority that signs the peers' certificates.
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl NodeArgs {
    fn tls_files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }

    /// `text` (`AE@HOST:PORT`, from --`flag`) reached with this node's TLS
    /// settings.
    fn peer(&self, text: &str, flag: &str) -> anyhow::Result<Peer> {
        let tls = self
            .tls_files()
            .map(|f| tls::client_config(&f))
            .transpose()?;
        Ok(parse_peer(text, flag)?.with_tls(tls))
    }

    /// The server side of this node's TLS settings.
    fn server_tls(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        Ok(self
            .tls_files()
            .map(|f| tls::server_config(&f))
            .transpose()?)
    }
}

/// Arguments of `clisc dicom serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Address to listen on for associations.
    #[arg(long, default_value = "127.0.0.1:11112")]
    pub listen: String,
    /// Calling AE title allowed to send studies (repeat for several); any
    /// other caller, or an association addressed to another AE title, is
    /// rejected.
    #[arg(long = "allow", value_name = "AE", required = true)]
    pub allow: Vec<String>,
    /// Model file (from a pipeline run) that segments each study's FLAIR.
    #[arg(long)]
    pub model: PathBuf,
    /// Working folder: `inbox/` (received), `processed/`, `failed/`,
    /// `results/<study>/seg.dcm` and `outbox/` (SEGs waiting to be sent).
    #[arg(long)]
    pub storage: PathBuf,
    /// Where to send each SEG (`AE@HOST:PORT`); without it SEGs are only
    /// written under `results/`.
    #[arg(long)]
    pub destination: Option<String>,
    /// A study is complete when no instance of it arrived for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub settle: f64,
    /// Seconds before the first resend of a failed send (doubling, at most 60 s).
    #[arg(long, default_value_t = 5.0)]
    pub retry_delay: f64,
    /// Modality rules choosing the FLAIR series (TOML file or `brain`;
    /// default: the built-in `flair` rule alone).
    #[arg(long)]
    pub rules: Option<String>,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    #[command(flatten)]
    pub plugins: super::PluginPathArgs,
    /// Stop after this many studies were processed and every SEG was
    /// delivered (default: run until killed).
    #[arg(long)]
    pub max_studies: Option<usize>,
    /// Associations served at once; a further one is rejected as transient
    /// (local limit exceeded) and the sender may try again.
    #[arg(long, default_value_t = ScpLimits::default().max_associations)]
    pub max_associations: usize,
    /// Studies waiting in the inbox; an instance of a further study is
    /// answered with status 0xA700 (out of resources).
    #[arg(long, default_value_t = ScpLimits::default().max_waiting_studies)]
    pub max_waiting_studies: usize,
    /// Seconds an association may stay silent before it is dropped.
    #[arg(long, default_value_t = ScpLimits::default().idle_timeout.as_secs_f64())]
    pub idle_timeout: f64,
}

/// Arguments of `clisc dicom pull`.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The PACS, `AE@HOST:PORT`; it must know this node's AE title and
    /// `--listen` address as a C-MOVE destination.
    #[arg(long)]
    pub from: String,
    /// Address this node listens on while the PACS sends the studies.
    #[arg(long, default_value = "127.0.0.1:11112")]
    pub listen: String,
    /// Match this StudyInstanceUID.
    #[arg(long)]
    pub study: Option<String>,
    /// Match this PatientID.
    #[arg(long)]
    pub patient_id: Option<String>,
    /// Match this AccessionNumber.
    #[arg(long)]
    pub accession: Option<String>,
    /// Match this StudyDate (`YYYYMMDD` or `FROM-TO`).
    #[arg(long)]
    pub date: Option<String>,
    /// Retrieve every study the PACS holds (when no filter is given).
    #[arg(long)]
    pub all: bool,
    /// Output folder: `<StudyInstanceUID>/<SOPInstanceUID>.dcm`.
    #[arg(long)]
    pub out: PathBuf,
    /// Print PatientName and PatientID of the retrieved studies (hidden by
    /// default, so terminals and logs do not collect them).
    #[arg(long)]
    pub show_patient: bool,
}

/// Arguments of `clisc dicom push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The receiver, `AE@HOST:PORT`.
    #[arg(long)]
    pub to: String,
    /// DICOM files, or folders searched recursively.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Attempts before giving up on a file.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Seconds before the first retry (doubling, at most 60 s).
    #[arg(long, default_value_t = 2.0)]
    pub retry_delay: f64,
}

/// Arguments of `clisc dicom ls`.
#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Folder searched recursively (any file names, mixed studies and series).
    pub dir: PathBuf,
    /// Also list the files that were skipped, and why.
    #[arg(long)]
    pub skipped: bool,
    /// Show which series these modality rules (TOML) select; `brain` = the
    /// built-in flair/t1/t1ce/t2 rules.
    #[arg(long)]
    pub rules: Option<String>,
    /// Print PatientName and PatientID (hidden by default, so terminals and
    /// logs do not collect them).
    #[arg(long)]
    pub show_patient: bool,
}

/// Arguments of `clisc dicom convert`.
#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// Folder searched recursively.
    pub dir: PathBuf,
    /// Output folder for the NIfTI files.
    pub out: PathBuf,
    /// Write `.nii` instead of `.nii.gz`.
    #[arg(long)]
    pub uncompressed: bool,
    /// Convert only the series selected by these modality rules (TOML file,
    /// or `brain` for the built-in flair/t1/t1ce/t2 rules), written as
    /// `<modality>.nii.gz`.
    #[arg(long)]
    pub rules: Option<String>,
}

fn load_rules(spec: &str) -> anyhow::Result<ModalityRules> {
    if spec == "brain" {
        return Ok(ModalityRules::brain_mri());
    }
    Ok(ModalityRules::from_file(std::path::Path::new(spec))?)
}

/// Runs a DICOM subcommand.
pub(crate) fn run(cmd: DicomCommand) -> anyhow::Result<()> {
    match cmd {
        DicomCommand::Ls(args) => ls(args),
        DicomCommand::Convert(args) => convert(args),
        DicomCommand::Serve(args) => serve(args),
        DicomCommand::Pull(args) => pull(args),
        DicomCommand::Push(args) => push(args),
    }
}

fn fmt3(v: [f64; 3]) -> String {
    format!("{:.3} {:.3} {:.3}", v[0], v[1], v[2])
}

/// How a listing names the patient: only with `--show-patient`.
fn patient(name: &str, id: &str, show: bool) -> String {
    if show {
        format!("patient '{name}' id {id}")
    } else {
        "patient hidden (--show-patient)".into()
    }
}

fn ls(args: LsArgs) -> anyhow::Result<()> {
    let report = clisc_dicom::scan_dir(&args.dir)
        .with_context(|| format!("scanning {}", args.dir.display()))?;
    let mut last_study = None;
    for s in &report.series {
        if last_study.as_ref() != Some(&s.study.study_uid) {
            println!(
                "study {} {} date {} '{}'",
                s.study.study_uid,
                patient(
                    &s.study.patient_name,
                    &s.study.patient_id,
                    args.show_patient
                ),
                s.study.study_date,
                s.study.study_description
            );
            last_study = Some(s.study.study_uid.clone());
        }
        let first = &s.slices[0];
        println!(
            "  {} {} ({} files, {})",
            s.label(),
            s.modality,
            s.slices
                .iter()
                .map(|x| &x.path)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            clisc_dicom::pixels::transfer_syntax_name(&first.transfer_syntax)
        );
        println!("    uid {}", s.series_uid);
        if s.localizer {
            println!("    localizer ({} image(s)): not converted", s.slices.len());
            continue;
        }
        match &s.geometry {
            Ok(g) => {
                let a = g.grid.affine;
                println!(
                    "    {}x{}x{} voxels, spacing {} mm, orientation {}",
                    g.grid.shape[0],
                    g.grid.shape[1],
                    g.grid.shape[2],
                    fmt3(g.grid.spacing),
                    clisc_dicom::geometry::orientation_code(&g.grid)
                );
                println!("    origin (RAS) {}", fmt3([a[0][3], a[1][3], a[2][3]]));
                for w in &g.warnings {
                    println!("    warning: {w}");
                }
            }
            Err(e) => println!("    not a volume: {e}"),
        }
    }
    if report.series.is_empty() {
        println!("no DICOM image series under {}", args.dir.display());
    }
    if !report.skipped.is_empty() {
        println!("{} file(s) skipped", report.skipped.len());
        if args.skipped {
            for f in &report.skipped {
                println!("  {}: {}", f.path.display(), f.reason);
            }
        }
    }
    if let Some(spec) = &args.rules {
        let rules = load_rules(spec)?;
        match rules.select(&report.series) {
            Ok(chosen) => {
                for (m, s) in chosen {
                    println!("{m} = {}", s.label());
                }
            }
            Err(e) => bail!("{e}"),
        }
    }
    Ok(())
}

fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    let rules = args.rules.as_deref().map(load_rules).transpose()?;
    let options = ConvertOptions {
        uncompressed: args.uncompressed,
        rules,
    };
    let summary = clisc_dicom::convert_dir(&args.dir, &args.out, &options)
        .with_context(|| format!("converting {}", args.dir.display()))?;
    for c in &summary.converted {
        println!("{} -> {}", c.series, c.path.display());
        for w in &c.warnings {
            println!("  warning: {w}");
        }
    }
    if !summary.report.skipped.is_empty() {
        println!(
            "{} file(s) skipped (see `clisc dicom ls --skipped`)",
            summary.report.skipped.len()
        );
    }
    if !summary.failed.is_empty() {
        let lines: Vec<String> = summary
            .failed
            .iter()
            .map(|(s, e)| format!("  {s}: {e}"))
            .collect();
        bail!(
            "{} series could not be converted:\n{}",
            summary.failed.len(),
            lines.join("\n")
        );
    }
    if summary.converted.is_empty() {
        bail!(
            "no volume to convert under {}.\nSeries found:\n{}",
            args.dir.display(),
            describe_all(&summary.report.series)
        );
    }
    Ok(())
}

fn parse_peer(text: &str, flag: &str) -> anyhow::Result<Peer> {
    text.parse::<Peer>().with_context(|| format!("--{flag}"))
}

fn check_ae(ae: &str, flag: &str) -> anyhow::Result<()> {
    net::validate_ae_title(ae).map_err(|e| anyhow!("--{flag}: {e}"))
}

fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).with_context(|| format!("listening on {listen} (--listen)"))
}

/// Like [`seconds`], but 0 is refused (a socket timeout of 0 is an error).
fn positive_seconds(v: f64, flag: &str) -> anyhow::Result<Duration> {
    match seconds(v, flag)? {
        d if d.is_zero() => Err(anyhow!("--{flag} must be more than 0 seconds, got {v}")),
        d => Ok(d),
    }
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow!("--{flag} must be a number of seconds >= 0, got {v}"))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ae = args.node.ae_title.clone();
    check_ae(&ae, "ae-title")?;
    for a in &args.allow {
        check_ae(a, "allow")?;
    }
    let destination = args
        .destination
        .as_deref()
        .map(|d| args.node.peer(d, "destination"))
        .transpose()?;
    let settle = seconds(args.settle, "settle")?;
    let retry_delay = seconds(args.retry_delay, "retry-delay")?;
    let limits = ScpLimits {
        max_associations: args.max_associations.max(1),
        max_waiting_studies: args.max_waiting_studies.max(1),
        idle_timeout: positive_seconds(args.idle_timeout, "idle-timeout")?,
    };
    let rules = crate::commands::infer::flair_rules(args.rules.as_deref())?;
    let store = StudyStore::open(&args.storage)?;
    // Repair what a killed node left before anything else happens.
    let recovery = store.recover()?;
    if recovery != Recovery::default() {
        println!(
            "recovered {}: {} half-written instance(s) removed, {} study(ies) finished, {} study(ies) to segment again",
            args.storage.display(),
            recovery.partial_files_removed,
            recovery.finished.len(),
            recovery.requeued.len()
        );
    }
    let outbox = store.outbox.clone();
    // Load the model before accepting anything: a bad model fails at once.
    let registry = args.plugins.registry()?;
    let options = LoadOptions {
        device: &args.device,
        threads: args.threads,
        overrides: &[],
    };
    let mut segmenter = Segmenter::load(&args.model, &registry, &options)?;
    let listener = bind(&args.listen)?;
    println!(
        "clisc DICOM node {ae} listening on {} (callers: {})",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        args.allow.join(", ")
    );

    // Studies received, by the time their last instance arrived. Studies
    // left in the inbox by an earlier run are picked up too.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    for study in store.waiting()? {
        arrivals.lock().unwrap().insert(study, Instant::now());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let scp = StoreScp::new(&ae, args.allow.clone(), store.inbox.clone())
        .with_tls(args.node.server_tls()?)
        .with_limits(limits);
    let on_stored = {
        let arrivals = arrivals.clone();
        Arc::new(move |i: StoredInstance| {
            let folder = i
                .path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            arrivals.lock().unwrap().insert(folder, Instant::now());
        })
    };
    let scp_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || scp.serve(listener, stop, on_stored))
    };

    // The sender: flushes the outbox, backing off while the destination fails.
    let delivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = destination.clone().map(|peer| {
        let (outbox, stop, ae, delivered) =
            (outbox.clone(), stop.clone(), ae.clone(), delivered.clone());
        std::thread::spawn(move || {
            let mut wait = Duration::ZERO;
            let mut next = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                if Instant::now() >= next {
                    match outbox.flush(|files| net::store_files(&ae, &peer, files)) {
                        Ok(r) => {
                            for f in &r.sent {
                                println!("sent {} to {peer}", f.display());
                            }
                            delivered.fetch_add(r.sent.len(), Ordering::SeqCst);
                            if r.failed.is_empty() {
                                wait = Duration::ZERO;
                            } else {
                                wait = if wait.is_zero() {
                                    retry_delay
                                } else {
                                    (wait * 2).min(Duration::from_secs(60))
                                };
                                eprintln!(
                                    "{} SEG(s) not delivered to {peer} yet; next try in {:.1} s",
                                    r.failed.len(),
                                    wait.as_secs_f64()
                                );
                            }
                        }
                        Err(e) => {
                            eprintln!("outbox: {e}");
                            wait = retry_delay.max(Duration::from_secs(1));
                        }
                    }
                    next = Instant::now() + wait.max(Duration::from_millis(200));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });

    let mut processed_count = 0usize;
    let mut queued = 0usize;
    loop {
        let ready: Vec<String> = {
            let mut a = arrivals.lock().unwrap();
            let ready: Vec<String> = a
                .iter()
                .filter(|(_, t)| t.elapsed() >= settle)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &ready {
                a.remove(k);
            }
            ready
        };
        for study in ready {
            if !store.inbox.join(&study).is_dir() {
                continue;
            }
            // Take the study out of the inbox first: instances arriving
            // meanwhile start a new inbox folder (and a new take).
            let take = match store.take(&study) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("study {study} not taken for segmentation: {e}");
                    continue;
                }
            };
            processed_count += 1;
            let deliver = destination.is_some();
            match segment_take(&mut segmenter, &store, &take, &rules, deliver) {
                Ok(true) if deliver => queued += 1,
                Ok(_) => {}
                // Left in work/: the next start segments it again.
                Err(e) => eprintln!("study {study}: {e:#} (kept in {})", take.dir.display()),
            }
        }
        if let Some(max) = args.max_studies {
            let all_sent = destination.is_none()
                || delivered.load(Ordering::SeqCst) >= queued && outbox.pending()?.is_empty();
            if processed_count >= max && all_sent {
                break;
            }
        }
        if scp_thread.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    if let Some(s) = sender {
        let _ = s.join();
    }
    match scp_thread.join() {
        Ok(r) => r?,
        Err(_) => bail!("the DICOM listener thread panicked"),
    }
    println!("processed {processed_count} studies");
    Ok(())
}

/// Segments a take and files it: SEG queued (when `deliver`) and the
/// instances to `processed/`, or the instances to `failed/` with the
/// reason. `Ok(true)` when segmented.
fn segment_take(
    segmenter: &mut Segmenter,
    store: &StudyStore,
    take: &Take,
    rules: &ModalityRules,
    deliver: bool,
) -> anyhow::Result<bool> {
    match process_study(segmenter, &take.dir, rules, &store.results) {
        Ok(seg) => {
            store.complete(take, &seg, deliver)?;
            Ok(true)
        }
        Err(e) => {
            eprintln!("study {} not segmented: {e:#}", take.study);
            store.fail(take, &format!("{e:#}"))?;
            Ok(false)
        }
    }
}

/// Segments the study received in `dir`; returns the SEG written under
/// `results/<study>/`.
fn process_study(
    segmenter: &mut Segmenter,
    dir: &Path,
    rules: &ModalityRules,
    results: &Path,
) -> anyhow::Result<PathBuf> {
    let scan = clisc_dicom::scan_dir(dir).with_context(|| format!("scanning {}", dir.display()))?;
    for f in &scan.skipped {
        eprintln!("skipped {}: {}", f.path.display(), f.reason);
    }
    let studies: std::collections::BTreeSet<&str> = scan
        .series
        .iter()
        .map(|s| s.study.study_uid.as_str())
        .collect();
    if studies.len() != 1 {
        bail!(
            "{} holds {} studies, expected one (series found:\n{})",
            dir.display(),
            studies.len(),
            describe_all(&scan.series)
        );
    }
    let r = crate::commands::infer::segment_dicom_study(
        segmenter,
        &scan.series,
        rules,
        results,
        false,
    )?;
    println!(
        "study {}: {} -> {} ({} tumour voxels)",
        r.study_uid,
        r.series,
        r.seg.path.display(),
        r.tumour_voxels
    );
    Ok(r.seg.path)
}

fn pull(args: PullArgs) -> anyhow::Result<()> {
    let ae = args.node.ae_title.clone();
    check_ae(&ae, "ae-title")?;
    let peer = args.node.peer(&args.from, "from")?;
    let query = StudyQuery {
        study_uid: args.study.clone().unwrap_or_default(),
        patient_id: args.patient_id.clone().unwrap_or_default(),
        accession_number: args.accession.clone().unwrap_or_default(),
        study_date: args.date.clone().unwrap_or_default(),
    };
    if query == StudyQuery::default() && !args.all {
        bail!("give a filter (--study, --patient-id, --accession, --date) or --all");
    }
    let matches = net::find_studies(&ae, &peer, &query).context("querying the PACS (C-FIND)")?;
    if matches.is_empty() {
        bail!("{peer} holds no study matching {query:?}");
    }
    // Receive what the PACS sends while the moves run; accept only the PACS.
    let listener = bind(&args.listen)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let received: Arc<Mutex<Vec<StoredInstance>>> = Arc::default();
    // `--out` keeps every pulled study: no limit on the folders it holds.
    let scp = StoreScp::new(&ae, vec![peer.ae_title.clone()], args.out.clone())
        .with_tls(args.node.server_tls()?)
        .with_limits(ScpLimits {
            max_waiting_studies: usize::MAX,
            ..ScpLimits::default()
        });
    let scp_thread = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            scp.serve(
                listener,
                stop,
                Arc::new(move |i| received.lock().unwrap().push(i)),
            )
        })
    };
    let mut failures = Vec::new();
    for m in &matches {
        match net::move_study(&ae, &peer, &m.study_uid, &ae) {
            Ok(o) => println!(
                "study {} ({}, {} '{}'): {} instance(s) retrieved",
                m.study_uid,
                patient(&m.patient_name, &m.patient_id, args.show_patient),
                m.study_date,
                m.study_description,
                o.completed
            ),
            Err(e) => failures.push(format!("study {}: {e}", m.study_uid)),
        }
    }
    stop.store(true, Ordering::SeqCst);
    match scp_thread.join() {
        Ok(r) => r?,
        Err(_) => bail!("the DICOM listener thread panicked"),
    }
    let n = received.lock().unwrap().len();
    println!("{n} file(s) written under {}", args.out.display());
    if !failures.is_empty() {
        bail!(
            "{} of {} studies not retrieved:\n  {}",
            failures.len(),
            matches.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out)?;
            }
        } else {
            out.push(p.to_path_buf());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if !p.exists() {
            bail!("{} does not exist", p.display());
        }
        walk(p, &mut out).with_context(|| format!("listing {}", p.display()))?;
    }
    Ok(out)
}

fn push(args: PushArgs) -> anyhow::Result<()> {
    let ae = args.node.ae_title.clone();
    check_ae(&ae, "ae-title")?;
    let peer = args.node.peer(&args.to, "to")?;
    let delay = seconds(args.retry_delay, "retry-delay")?;
    let mut pending = collect_files(&args.paths)?;
    if pending.is_empty() {
        bail!("no file to send");
    }
    let total = pending.len();
    let mut wait = delay;
    // Files that are not readable DICOM never go: reported once, not retried.
    let mut unreadable: Vec<(PathBuf, String)> = Vec::new();
    let mut last_errors: Vec<(PathBuf, String)> = Vec::new();
    for attempt in 1..=args.retries.max(1) {
        last_errors.clear();
        match net::store_files(&ae, &peer, &pending) {
            Ok(outcomes) => {
                for o in outcomes {
                    match o.result {
                        Ok(()) => println!("sent {}", o.path.display()),
                        // A file that is not DICOM will never go: report it now.
                        Err(e @ net::NetError::File { .. }) => {
                            eprintln!("skipped: {e}");
                            pending.retain(|p| *p != o.path);
                            unreadable.push((o.path, e.to_string()));
                            continue;
                        }
                        Err(e) => {
                            last_errors.push((o.path.clone(), e.to_string()));
                            continue;
                        }
                    }
                    pending.retain(|p| *p != o.path);
                }
            }
            Err(e) => last_errors.extend(pending.iter().map(|p| (p.clone(), e.to_string()))),
        }
        if pending.is_empty() {
            break;
        }
        if attempt < args.retries {
            eprintln!(
                "{} file(s) not sent (attempt {attempt} of {}): {}; retrying in {:.1} s",
                pending.len(),
                args.retries,
                last_errors.last().map(|e| e.1.as_str()).unwrap_or(""),
                wait.as_secs_f64()
            );
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
    last_errors.extend(unreadable);
    if !last_errors.is_empty() {
        let lines: Vec<String> = last_errors
            .iter()
            .map(|(p, e)| format!("  {}: {e}", p.display()))
            .collect();
        bail!(
            "{} of {total} file(s) not sent to {peer}:\n{}",
            last_errors.len(),
            lines.join("\n")
        );
    }
    println!("{total} file(s) sent to {peer}");
    Ok(())
}
