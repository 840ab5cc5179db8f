//! The host side of one plugin process: start, handshake, configure,
//! request/reply with timeouts, and shutdown.
//!
//! Reading and writing happen on two helper threads so that a plugin that
//! stops reading its stdin or stops answering can never block the host:
//! the host waits for frames with a deadline, and on expiry kills the
//! process, which unblocks both threads.

use clisc_process_protocol::{
    read_frame, Buffer, Call, ErrorReport, Frame, Hello, HostMessage, MessageError, PluginMessage,
    ReadError, ResultFields, RunContext, SettingSpec, SettingType,
};
use clisc_sdk::config::{ConfigField, FieldProblem, ProblemKind};
use clisc_sdk::{HostContext, PluginError, ProgressSinkBox};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines of the plugin's stderr kept for error messages.
const STDERR_LINES: usize = 20;
/// How often the host looks at a running call's time and memory.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How long a plugin may take to exit after `shutdown` before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How to start a plugin process and what the adapter expects of it.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSpec {
    /// Name of the adapter plugin (`process-pseudo-labeler`, ...), for messages.
    pub adapter: &'static str,
    /// Stage kind the adapter implements; the process must announce it.
    pub kind: &'static str,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Working directory of the process (the host's when `None`).
    pub working_dir: Option<PathBuf>,
    /// Longest silence allowed while waiting for the handshake or a reply.
    pub timeout: Duration,
    /// Limits on each call, and how often a failed call is tried again.
    pub limits: CallLimits,
    /// The plugin's own settings as given by the user (validated against the
    /// schema the plugin announces).
    pub settings: Map<String, Value>,
}

/// Limits on each call of a plugin process. A process that exceeds one is
/// killed and the call fails naming the limit; a call whose process
/// crashed, hung or exceeded a limit is tried again on a fresh process up
/// to `retries` times (an exception the plugin reports is not retried).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CallLimits {
    /// Longest a call may take, progress or not (`None`: no limit).
    pub max_call: Option<Duration>,
    /// Largest resident memory of the process during a call, in MiB
    /// (`None`: no limit).
    pub memory_mb: Option<u64>,
    /// Fresh attempts after a failed one.
    pub retries: u32,
}

/// The answer to a call: the `result` frame's fields (read them with
/// [`Reply::read`] as the method's result type) and the frame, for its
/// buffers.
pub(crate) struct Reply {
    plugin: String,
    method: &'static str,
    fields: ResultFields,
    frame: Frame,
}

impl Reply {
    /// The fields as `T`, the method's result type.
    pub(crate) fn read<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
        self.fields.read(self.method).map_err(|e| self.invalid(e))
    }

    /// A protocol error in this answer, naming the plugin.
    pub(crate) fn invalid(&self, error: MessageError) -> PluginError {
        PluginError::internal(format!("process plugin `{}`: {error}", self.plugin))
    }

    /// The buffer called `name`, checked to hold `len` values.
    pub(crate) fn buffer(&self, name: &str, len: usize) -> Result<&Buffer, PluginError> {
        let b = self
            .frame
            .buffer(name)
            .ok_or_else(|| self.malformed(format!("no buffer `{name}`")))?;
        if b.len() != len {
            return Err(self.malformed(format!(
                "buffer `{name}` has {} values (shape {:?}), expected {len}",
                b.len(),
                b.shape
            )));
        }
        Ok(b)
    }

    /// An error about this answer: it is well-formed but does not fit the
    /// request (`what`).
    pub(crate) fn malformed(&self, what: String) -> PluginError {
        PluginError::internal(format!(
            "process plugin `{}`: malformed result of `{}`: {what}",
            self.plugin, self.method
        ))
    }
}

struct Running {
    child: Child,
    to_child: Option<Sender<Vec<u8>>>,
    from_child: Receiver<Result<Frame, ReadError>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    threads: Vec<JoinHandle<()>>,
}

/// A started (or restartable) plugin process.
pub(crate) struct PluginProcess {
    spec: ProcessSpec,
    context: RunContext,
    progress: ProgressSinkBox,
    running: Option<Running>,
    hello: Option<Hello>,
}

impl PluginProcess {
    /// Starts the process, checks its handshake and configures it.
    pub(crate) fn start(spec: ProcessSpec, ctx: &HostContext) -> Result<Self, PluginError> {
        if spec.command.is_empty() {
            return Err(PluginError::config(format!(
                "{}: setting `command` is empty",
                spec.adapter
            )));
        }
        let context = RunContext {
            device: ctx.device.to_string(),
            seed: ctx.seed,
            threads: ctx.threads,
            work_dir: ctx.work_dir.to_string(),
        };
        let mut process = Self {
            spec,
            context,
            progress: ctx.progress.clone(),
            running: None,
            hello: None,
        };
        process.ensure_running()?;
        Ok(process)
    }

    /// Sends `call` with its `buffers` and returns the answer. Restarts
    /// the process first if an earlier failure stopped it. A stateless
    /// call ([`Call::is_stateless`]: `label_slices`, `prompts`, `segment`,
    /// `select`) whose process was lost while it ran (crash, silence,
    /// broken limit) is tried again on a fresh process as
    /// [`CallLimits::retries`] allows.
    pub(crate) fn call(&mut self, call: Call, buffers: Vec<Buffer>) -> Result<Reply, PluginError> {
        let method = call.method();
        let retries = if call.is_stateless() {
            self.spec.limits.retries
        } else {
            0
        };
        let mut request = Frame::from_message(&HostMessage::Call(call));
        request.buffers = buffers;
        let mut failures = 0;
        loop {
            let (result, reached) = self.call_once(method, &request);
            // Start-up failures would only repeat, and a plugin that
            // reported an exception is still running: neither is retried.
            let lost = result.is_err() && reached && self.running.is_none();
            if !lost || failures >= retries {
                return result;
            }
            failures += 1;
            tracing::warn!(
                "{}: `{method}` failed; trying again on a fresh process ({failures} of {retries} retries): {}",
                self.spec.adapter,
                result.err().map(|e| e.message.to_string()).unwrap_or_default()
            );
        }
    }

    /// One attempt at a call, and whether it reached a running process.
    fn call_once(
        &mut self,
        method: &'static str,
        request: &Frame,
    ) -> (Result<Reply, PluginError>, bool) {
        if let Err(e) = self.ensure_running() {
            return (Err(e), false);
        }
        let reply = match self
            .send(request, method)
            .and_then(|()| self.receive_within_limits(method))
        {
            Ok(reply) => reply,
            Err(e) => return (Err(e), true),
        };
        // The type first, so that a frame of another type is named as such
        // rather than as a malformed result.
        if !matches!(reply.kind(), "result" | "error") {
            let found = reply.kind().to_string();
            let err = self.fail(&format!(
                "answered `{method}` with a frame of type {found:?} instead of \"result\""
            ));
            return (Err(err), true);
        }
        let result = match reply.message::<PluginMessage>(&format!("its answer to `{method}`")) {
            Ok(PluginMessage::Result(fields)) => Ok(Reply {
                plugin: self.plugin_name(),
                method,
                fields,
                frame: reply,
            }),
            Ok(PluginMessage::Error(error)) => Err(PluginError::internal(format!(
                "{} failed in `{method}`: {}",
                self.who(),
                error_text(&error)
            ))),
            Ok(_) => unreachable!("the frame's type is result or error"),
            Err(e) => Err(self.fail(&format!("answered `{method}` with a bad frame: {e}"))),
        };
        (result, true)
    }

    fn ensure_running(&mut self) -> Result<(), PluginError> {
        if self.running.is_some() {
            return Ok(());
        }
        let spec = &self.spec;
        let mut command = Command::new(&spec.command[0]);
        command
            .args(&spec.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &spec.working_dir {
            command.current_dir(dir);
        }
        // Its own process group: the memory limit counts, and a stop
        // kills, the processes it starts too (a shell wrapper, workers).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().map_err(|e| {
            PluginError::config(format!(
                "{}: cannot start command {:?}{}: {e}",
                spec.adapter,
                spec.command,
                spec.working_dir
                    .as_ref()
                    .map(|d| format!(" in {}", d.display()))
                    .unwrap_or_default()
            ))
        })?;
        tracing::info!(adapter = spec.adapter, command = ?spec.command, pid = child.id(), "started plugin process");
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (to_child, writer_rx) = mpsc::channel::<Vec<u8>>();
        let (reader_tx, from_child) = mpsc::channel();
        let writer = std::thread::spawn(move || write_loop(stdin, writer_rx));
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            loop {
                let frame = read_frame(&mut stdout);
                let stop = frame.is_err();
                if reader_tx.send(frame).is_err() || stop {
                    break;
                }
            }
        });
        let tail = stderr.clone();
        let name = spec.adapter;
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                tracing::debug!(adapter = name, "plugin stderr: {line}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        self.running = Some(Running {
            child,
            to_child: Some(to_child),
            from_child,
            stderr,
            threads: vec![writer, reader, err_reader],
        });
        self.handshake()
    }

    fn handshake(&mut self) -> Result<(), PluginError> {
        let hello = self.receive("handshake")?;
        let hello = self.check_hello(&hello)?;
        let settings = resolve_settings(&hello, &self.spec.settings).map_err(|problems| {
            let who = format!(
                "{} `{}` (command {:?})",
                self.spec.adapter, hello.plugin.name, self.spec.command
            );
            self.stop();
            let text: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            let error = PluginError::config(format!("{who}: {}", text.join("; ")));
            match problems.first() {
                Some(p) if !p.key.is_empty() => error.about_setting(format!("settings.{}", p.key)),
                _ => error.about_setting("settings"),
            }
        })?;
        self.hello = Some(hello);
        let configure = Frame::from_message(&HostMessage::Configure {
            settings,
            context: self.context.clone(),
        });
        self.send(&configure, "configure")?;
        let reply = self.receive("configure")?;
        match reply.message::<PluginMessage>("the answer to `configure`") {
            Ok(PluginMessage::Ready) => Ok(()),
            Ok(PluginMessage::Error(error)) => {
                let err = PluginError::config(format!(
                    "{} rejected its settings: {}",
                    self.who(),
                    error_text(&error)
                ));
                self.stop();
                Err(err)
            }
            Ok(_) => Err(self.fail(&format!(
                "answered `configure` with {:?} instead of \"ready\"",
                reply.kind()
            ))),
            Err(e) => Err(self.fail(&e.to_string())),
        }
    }

    /// The plugin's handshake, checked: protocol and version first
    /// (versioned handshake), then that it runs the adapter's stage kind.
    fn check_hello(&mut self, frame: &Frame) -> Result<Hello, PluginError> {
        let hello = Hello::from_frame(frame).map_err(|e| match e {
            MessageError::Version { .. } => self.fail(&e.to_string()),
            _ => self.fail(&format!("sent a bad handshake: {e}")),
        })?;
        let plugin = &hello.plugin;
        if plugin.kind != self.spec.kind {
            return Err(self.fail(&format!(
                "plugin `{}` is a {:?} but adapter {} runs {:?} plugins",
                plugin.name, plugin.kind, self.spec.adapter, self.spec.kind
            )));
        }
        tracing::info!(plugin = %plugin.name, version = %plugin.version, "plugin process ready");
        Ok(hello)
    }

    fn send(&mut self, frame: &Frame, what: &str) -> Result<(), PluginError> {
        let bytes = frame.encode();
        let sent = self
            .running
            .as_ref()
            .and_then(|r| r.to_child.as_ref())
            .map(|tx| tx.send(bytes).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            Err(self.fail(&format!(
                "cannot send `{what}`: the process is no longer reading its stdin"
            )))
        }
    }

    /// Waits for the next non-log frame (see [`PluginProcess::receive_watched`]),
    /// with no limit but the silence timeout.
    fn receive(&mut self, what: &str) -> Result<Frame, PluginError> {
        self.receive_watched(what, CallLimits::default())
    }

    /// Waits for the reply to a call, within the spec's [`CallLimits`].
    fn receive_within_limits(&mut self, what: &str) -> Result<Frame, PluginError> {
        self.receive_watched(what, self.spec.limits)
    }

    /// The limit a running call has broken, if any: its time, or the
    /// process's resident memory.
    fn broken_limit(&self, limits: CallLimits, started: Instant) -> Option<String> {
        if let Some(max) = limits.max_call {
            if started.elapsed() > max {
                return Some(format!(
                    "took more than {:.1} s (max_call_seconds)",
                    max.as_secs_f64()
                ));
            }
        }
        let limit = limits.memory_mb?;
        let group = self.running.as_ref()?.child.id();
        let used = group_resident_mib(group)?;
        (used > limit).then(|| {
            format!("used {used} MiB of memory (its process group), over memory_limit_mb = {limit}")
        })
    }

    /// Waits for the next non-log frame; every frame (log and progress
    /// included) restarts the silence timeout. Every [`WATCH_EVERY`] the
    /// call's `limits` are checked; a broken one kills the process.
    fn receive_watched(&mut self, what: &str, limits: CallLimits) -> Result<Frame, PluginError> {
        let started = Instant::now();
        let mut last_frame = Instant::now();
        let mut next_check = Instant::now();
        loop {
            if Instant::now() >= next_check {
                next_check = Instant::now() + WATCH_EVERY;
                if let Some(broken) = self.broken_limit(limits, started) {
                    // A reply that arrived in time still counts.
                    let waiting = self
                        .running
                        .as_ref()
                        .and_then(|r| r.from_child.try_recv().ok());
                    match waiting {
                        Some(Ok(frame)) if !matches!(frame.kind(), "log" | "progress") => {
                            return Ok(frame)
                        }
                        _ => {
                            return Err(self.fail(&format!(
                            "{broken} while the host waited for `{what}`; the process was killed"
                        )))
                        }
                    }
                }
            }
            let Some(running) = self.running.as_ref() else {
                return Err(self.fail(&format!("is not running (while waiting for `{what}`)")));
            };
            let silent_for = last_frame.elapsed();
            let wait = self
                .spec
                .timeout
                .saturating_sub(silent_for)
                .min(WATCH_EVERY);
            let received = match running.from_child.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) if silent_for + wait < self.spec.timeout => continue,
                other => other,
            };
            last_frame = Instant::now();
            match received {
                Ok(Ok(frame)) if matches!(frame.kind(), "log" | "progress") => {
                    match frame.message::<PluginMessage>("a log or progress frame") {
                        Ok(PluginMessage::Log { message }) => {
                            self.progress.log(format!("{}: {message}", self.plugin_name()).as_str().into());
                        }
                        Ok(PluginMessage::Progress(p)) => {
                            let task = p.task.as_deref().unwrap_or(what);
                            self.progress.report(task.into(), p.done, p.total, p.message.as_str().into());
                        }
                        Ok(_) => unreachable!("the frame's type is log or progress"),
                        // Logs and progress only inform: a bad one is shown, not fatal.
                        Err(e) => tracing::warn!("{}: ignored a {} frame: {e}", self.who(), frame.kind()),
                    }
                }
                Ok(Ok(frame)) => return Ok(frame),
                Ok(Err(ReadError::Closed)) | Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(1));
                    let how = match status {
                        Some(s) if s.success() => "exited (status 0)".to_string(),
                        Some(s) => format!("crashed ({})", describe_status(s)),
                        None => "closed its stdout".to_string(),
                    };
                    return Err(self.fail(&format!("{how} while the host waited for `{what}`")));
                }
                Ok(Err(e)) => return Err(self.fail(&format!("sent a bad frame while the host waited for `{what}`: {e}"))),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.fail(&format!(
                        "sent nothing for {:.1} s while the host waited for `{what}` (timeout_seconds); the process was killed",
                        self.spec.timeout.as_secs_f64()
                    )))
                }
            }
        }
    }

    fn wait_exit(&mut self, grace: Duration) -> Option<ExitStatus> {
        let running = self.running.as_mut()?;
        let deadline = Instant::now() + grace;
        loop {
            match running.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    fn plugin_name(&self) -> String {
        self.hello
            .as_ref()
            .map(|h| h.plugin.name.clone())
            .unwrap_or_else(|| "?".into())
    }

    fn who(&self) -> String {
        match &self.hello {
            Some(h) => format!(
                "{} `{}` (command {:?})",
                self.spec.adapter, h.plugin.name, self.spec.command
            ),
            None => format!("{} (command {:?})", self.spec.adapter, self.spec.command),
        }
    }

    /// Stops the process and builds an error naming the plugin, its command
    /// and the last lines of its stderr.
    fn fail(&mut self, what: &str) -> PluginError {
        let who = self.who();
        let stderr = self.stop();
        let mut message = format!("{who} {what}");
        if !stderr.is_empty() {
            message += "; last lines of its stderr:\n    ";
            message += &stderr.join("\n    ");
        }
        // Logged at debug level only: the error itself reaches the user
        // (once), and a retry logs it on its own.
        tracing::debug!("{message}");
        PluginError::internal(message)
    }

    /// Kills the process (if any) and returns the tail of its stderr.
    fn stop(&mut self) -> Vec<String> {
        let Some(mut running) = self.running.take() else {
            return Vec::new();
        };
        kill_group(&mut running.child);
        let _ = running.child.wait();
        running.to_child.take();
        for t in running.threads.drain(..) {
            let _ = t.join();
        }
        let tail = running.stderr.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect()
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if let Some(tx) = running.to_child.take() {
            let _ = tx.send(Frame::from_message(&HostMessage::Shutdown).encode());
        }
        let exited = self.wait_exit(SHUTDOWN_GRACE);
        if exited.is_none() {
            tracing::warn!(
                "{} did not exit within {:?} of `shutdown`; killing it",
                self.who(),
                SHUTDOWN_GRACE
            );
        }
        self.stop();
    }
}

/// Resident memory, in MiB, of the processes of group `group` (the
/// plugin process and whatever it started), from `VmRSS` in
/// `/proc/PID/status`; `None` where `/proc` cannot be read.
fn group_resident_mib(group: u32) -> Option<u64> {
    let mut kib = 0u64;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Field 5 of /proc/PID/stat is the process group; the command
        // name before it is in parentheses and may hold spaces.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let pgrp = after_name
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse::<u32>().ok());
        if pgrp != Some(group) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        kib += status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(kib / 1024)
}

/// Whether memory limits can be watched here (Linux's `/proc`).
pub(crate) fn memory_is_observable() -> bool {
    std::path::Path::new("/proc/self/status").exists()
}

/// Kills the plugin process and every process of its group.
fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    {
        // The group's id is the child's pid (`process_group(0)`).
        let group = child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // takes no pointers and has no memory effects in this process.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    let _ = child.kill();
}

fn write_loop(stdin: ChildStdin, frames: Receiver<Vec<u8>>) {
    let mut stdin = BufWriter::new(stdin);
    for bytes in frames {
        if stdin.write_all(&bytes).and_then(|_| stdin.flush()).is_err() {
            break;
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// A setting the plugin announced, as an SDK field (its type mapped to a
/// TOML kind); the error says why the announcement is unusable.
fn field_from_spec(spec: &SettingSpec) -> Result<ConfigField, String> {
    let (name, doc) = (spec.name.as_str(), spec.doc.as_str());
    let default = spec.default.as_ref().filter(|v| !v.is_null());
    let bad = || {
        format!(
            "setting `{name}`: default {} does not match type {:?}",
            default.map_or("null".into(), Value::to_string),
            spec.kind.name()
        )
    };
    let mut field = match &spec.kind {
        SettingType::Float => ConfigField::float(
            name,
            default
                .map(|d| d.as_f64().ok_or_else(bad))
                .transpose()?
                .unwrap_or(0.0),
            doc,
        ),
        SettingType::Integer => ConfigField::integer(
            name,
            default
                .map(|d| d.as_i64().ok_or_else(bad))
                .transpose()?
                .unwrap_or(0),
            doc,
        ),
        SettingType::Bool => ConfigField::bool(
            name,
            default
                .map(|d| d.as_bool().ok_or_else(bad))
                .transpose()?
                .unwrap_or(false),
            doc,
        ),
        SettingType::String => ConfigField::string(
            name,
            default
                .map(|d| d.as_str().ok_or_else(bad))
                .transpose()?
                .unwrap_or(""),
            doc,
        ),
        SettingType::FloatList => ConfigField::float_list(name, &[], doc),
        SettingType::StringList => ConfigField::string_list(name, &[], doc),
        SettingType::Unknown(other) => {
            return Err(format!("setting `{name}` has unknown type {other:?}"))
        }
    };
    let is_list = matches!(spec.kind, SettingType::FloatList | SettingType::StringList);
    match default {
        Some(d) if is_list => {
            let v = json_to_toml(d).ok_or_else(bad)?;
            field.default = abi_stable::std_types::ROption::RSome(v.to_string().into());
        }
        None if !is_list => field.default = abi_stable::std_types::ROption::RNone,
        _ => {}
    }
    field.choices = spec.choices.iter().map(|c| c.as_str().into()).collect();
    Ok(field)
}

fn json_to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().map(json_to_toml).collect::<Option<_>>()?),
        Value::Object(m) => toml::Value::Table(
            m.iter()
                .map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect::<Option<_>>()?,
        ),
        Value::Null => return None,
    })
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
    }
}

/// Validates the user's passthrough settings against the schema the
/// plugin announced (unknown keys, types, choices) and fills its defaults.
pub(crate) fn resolve_settings(
    hello: &Hello,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<FieldProblem>> {
    let problem = |key: &str, message: String| FieldProblem {
        key: key.to_string(),
        kind: ProblemKind::Other,
        message,
    };
    let schema = hello
        .settings
        .iter()
        .map(field_from_spec)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| vec![problem("", format!("its announced schema is invalid: {m}"))])?;
    let mut table = toml::Table::new();
    for (k, v) in given {
        let v =
            json_to_toml(v).ok_or_else(|| vec![problem(k, format!("setting `{k}` is null"))])?;
        table.insert(k.clone(), v);
    }
    let resolved = clisc_sdk::config::resolve(&schema, &table)?;
    Ok(resolved
        .iter()
        .map(|(k, v)| (k.clone(), toml_to_json(v)))
        .collect())
}

/// The plugin's own settings (the adapter's `settings` table) as the JSON
/// object the protocol carries.
pub(crate) fn settings_to_json(table: &toml::Table) -> Map<String, Value> {
    table
        .iter()
        .map(|(k, v)| (k.clone(), toml_to_json(v)))
        .collect()
}

/// Lines of an error frame's `details` (e.g. a Python traceback) shown.
const DETAIL_LINES: usize = 12;

/// The text of an `error` frame: its `message`, then the last lines of its
/// optional `details` (the plugin's traceback, without a last line that
/// repeats the message), indented; the whole details are logged at debug
/// level.
fn error_text(error: &ErrorReport) -> String {
    let mut text = error
        .message
        .clone()
        .unwrap_or_else(|| "(no message)".into());
    if let Some(details) = &error.details {
        tracing::debug!("plugin error details:\n{details}");
        let mut lines: Vec<&str> = details.lines().filter(|l| !l.trim().is_empty()).collect();
        // A Python traceback ends with the message itself.
        if lines.last().is_some_and(|l| l.trim() == text.trim()) {
            lines.pop();
        }
        let shown = &lines[lines.len().saturating_sub(DETAIL_LINES)..];
        if !shown.is_empty() {
            text += "\n    ";
            text += &shown.join("\n    ");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        let settings = json!([
            {"name": "k", "type": "float", "default": 2.0, "doc": "threshold"},
            {"name": "mode", "type": "string", "default": "a", "choices": ["a", "b"]},
            {"name": "weights", "type": "string", "doc": "required"},
        ]);
        Hello::new(
            clisc_process_protocol::PluginInfo {
                name: "p".into(),
                kind: "pseudo-labeler".into(),
                version: "1".into(),
                description: String::new(),
            },
            serde_json::from_value(settings).unwrap(),
        )
    }

    #[test]
    fn plugin_settings_are_validated_against_the_announced_schema() {
        let given: toml::Table = toml::from_str("weights = \"w.pt\"\nk = 3").unwrap();
        let r = resolve_settings(&hello(), &settings_to_json(&given)).unwrap();
        assert_eq!(r["k"], json!(3));
        assert_eq!(r["mode"], json!("a"));
        let given: toml::Table = toml::from_str("mode = \"c\"\nkk = 1").unwrap();
        let problems = resolve_settings(&hello(), &settings_to_json(&given)).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["kk", "mode", "weights"], "{problems:?}");
        let text: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(text[0].contains("unknown setting `kk`"), "{text:?}");
        assert!(text[1].contains("must be one of"), "{text:?}");
        assert!(
            text[2].contains("missing required setting `weights`"),
            "{text:?}"
        );
    }
}
