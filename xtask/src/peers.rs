//! Child processes for the demo and the matrix: our server, our client and the independent peers.
//!
//! [`Proc`] runs any program with its stdout and stderr drained by threads into buffers, so a
//! pipe never fills and blocks the child, and kills the child when dropped, so nothing outlives
//! the task that started it. [`Server`] is a `Proc` running `udptalk-server` whose first stderr
//! line, `listening on udp ADDR`, has been read and parsed. Everything that waits has a deadline:
//! a child that hangs or dies is reported, never waited on forever.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to announce its address.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the drain threads may take to see end-of-file once the child has exited. A grandchild
/// that inherited the pipes could keep them open; we then take what was read so far.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How often [`Proc::wait`] looks at the child.
const POLL: Duration = Duration::from_millis(5);

/// The prefix of the server's first stderr line.
const ANNOUNCE_PREFIX: &str = "listening on udp ";

/// What a finished child left behind.
#[derive(Debug)]
pub struct Output {
    /// The exit status; `None` when the child could not even be waited for.
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// From spawn to exit.
    pub elapsed: Duration,
    /// Set when we had to kill the child because it overran its time.
    pub killed_after: Option<Duration>,
}

impl Output {
    /// The exit code, or `None` when the child was killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|status| status.code())
    }

    /// The stdout lines, without their `\n` or `\r\n`, invalid UTF-8 replaced.
    pub fn stdout_lines(&self) -> Vec<String> {
        lines(&self.stdout)
    }

    /// The stderr lines, without their `\n` or `\r\n`, invalid UTF-8 replaced.
    pub fn stderr_lines(&self) -> Vec<String> {
        lines(&self.stderr)
    }

    /// How the child ended, in words: `exit 0`, `killed after 15.0s`, `signal`.
    pub fn describe_end(&self) -> String {
        if let Some(after) = self.killed_after {
            return format!("killed by us after {:.1}s", after.as_secs_f64());
        }
        match (self.code(), self.status) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(status)) => format!("ended by {status}"),
            (None, None) => "not waited for".to_owned(),
        }
    }
}

/// Splits captured output into lines, as a reader of the terminal would see them.
pub fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Why [`Proc::next_stderr_line`] has no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoLine {
    /// None came in time.
    TimedOut,
    /// The child closed stderr: it has most likely exited.
    Closed,
}

/// What a child's stdin is.
pub enum Input {
    /// `/dev/null`.
    Null,
    /// A pipe that a thread fills with these bytes and then closes.
    Bytes(Vec<u8>),
    /// A pipe the caller writes, taken with [`Proc::take_stdin`].
    Pipe,
}

/// A running child whose output is being drained. Killed and reaped when dropped.
pub struct Proc {
    child: Child,
    started: Instant,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_lines: Receiver<String>,
    drained: Receiver<()>,
    reaped: bool,
}

impl Proc {
    /// Starts `command` with piped stdout and stderr. With `stdin`, a thread writes those bytes
    /// and then closes the pipe; without, stdin is `/dev/null`.
    pub fn spawn(command: Command, stdin: Option<Vec<u8>>) -> Result<Proc, String> {
        let input = match stdin {
            Some(bytes) => Input::Bytes(bytes),
            None => Input::Null,
        };
        Proc::spawn_with(command, input)
    }

    /// Starts `command` with the stdin of `input`, its stdout and stderr drained.
    pub fn spawn_with(mut command: Command, input: Input) -> Result<Proc, String> {
        let shown = show_command(&command);
        command
            .stdin(match input {
                Input::Null => Stdio::null(),
                Input::Bytes(_) | Input::Pipe => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
        let started = Instant::now();

        if let Input::Bytes(bytes) = input {
            if let Some(mut pipe) = child.stdin.take() {
                // A child that never reads would block this write; the thread then ends with
                // EPIPE when the child is killed.
                thread::spawn(move || {
                    let _ = pipe.write_all(&bytes);
                });
            }
        }

        let (drained_tx, drained) = mpsc::channel();
        let (lines_tx, stderr_lines) = mpsc::channel();
        let stdout_buffer = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stdout.take() {
            drain(pipe, Arc::clone(&stdout_buffer), None, drained_tx.clone());
        }
        if let Some(pipe) = child.stderr.take() {
            drain(pipe, Arc::clone(&stderr), Some(lines_tx), drained_tx);
        }
        Ok(Proc {
            child,
            started,
            stdout: stdout_buffer,
            stderr,
            stderr_lines,
            drained,
            reaped: false,
        })
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The write end of the child's stdin, spawned with [`Input::Pipe`]; dropping it closes
    /// the pipe (end-of-file for the child).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The stdout lines drained so far, the last one possibly incomplete.
    pub fn stdout_lines_so_far(&self) -> Vec<String> {
        lines(&snapshot(&self.stdout))
    }

    /// The next stderr line not yet taken, waiting at most `timeout`.
    pub fn next_stderr_line(&self, timeout: Duration) -> Result<String, NoLine> {
        self.stderr_lines
            .recv_timeout(timeout)
            .map_err(|e| match e {
                RecvTimeoutError::Timeout => NoLine::TimedOut,
                RecvTimeoutError::Disconnected => NoLine::Closed,
            })
    }

    /// Waits for the child to exit, killing it if it is still running `timeout` from now, and
    /// returns what it wrote.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut killed_after = None;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                Ok(None) => {
                    killed_after = Some(self.started.elapsed());
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
                Err(_) => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        self.collect(status, killed_after)
    }

    /// Kills the child (it was meant to run until stopped) and returns what it wrote.
    pub fn kill(mut self) -> Output {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = self.child.kill();
                self.child.wait().ok()
            }
        };
        self.collect(status, None)
    }

    fn collect(&mut self, status: Option<ExitStatus>, killed_after: Option<Duration>) -> Output {
        self.reaped = true;
        let elapsed = self.started.elapsed();
        // The child is gone: close what we still hold of its pipes (a stdin never taken).
        drop(self.child.stdin.take());
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.drained.recv_timeout(left).is_err() {
                break;
            }
        }
        Output {
            status,
            stdout: snapshot(&self.stdout),
            stderr: snapshot(&self.stderr),
            elapsed,
            killed_after,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies `pipe` into `sink` until end-of-file, on a thread of its own; stderr's lines are also
/// sent to `lines` so that a caller can wait for one. Signals `done` at the end.
fn drain(
    pipe: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<u8>>>,
    lines: Option<Sender<String>>,
    done: Sender<()>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Ok(mut sink) = sink.lock() {
                        sink.extend_from_slice(&line);
                    }
                    if let Some(lines) = &lines {
                        let text = String::from_utf8_lossy(&line);
                        let _ = lines.send(text.trim_end_matches(['\n', '\r']).to_owned());
                    }
                }
            }
        }
        let _ = done.send(());
    });
}

fn snapshot(buffer: &Mutex<Vec<u8>>) -> Vec<u8> {
    match buffer.lock() {
        Ok(bytes) => bytes.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// A command as a person would type it, long arguments shortened, for messages.
pub fn show_command(command: &Command) -> String {
    let program = Path::new(command.get_program())
        .file_name()
        .unwrap_or(command.get_program())
        .to_string_lossy()
        .into_owned();
    let mut shown = program;
    for arg in command.get_args() {
        shown.push(' ');
        shown.push_str(&show_arg(arg));
    }
    shown
}

fn show_arg(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:[]=,@".contains(c));
    // Single quotes as a shell would need them (`!!` in double quotes is history expansion),
    // Rust's escaped form for what single quotes cannot carry.
    let quoted = if plain {
        text.into_owned()
    } else if text.chars().any(|c| c == '\'' || c.is_control()) {
        format!("{text:?}")
    } else {
        format!("'{text}'")
    };
    abbreviate(&quoted, 60)
}

/// `text` cut to about `max` characters, saying how long it was.
pub fn abbreviate(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}…({count} chars)")
}

/// `lines` under a heading, indented, long lines and long outputs shortened.
pub fn indent(heading: &str, lines: &[String]) -> String {
    const MAX_LINES: usize = 12;
    if lines.is_empty() {
        return format!("{heading}: (empty)");
    }
    let mut text = format!("{heading}:");
    let skip = lines.len().saturating_sub(MAX_LINES);
    if skip > 0 {
        text.push_str(&format!("\n  … {skip} earlier lines"));
    }
    for line in lines.iter().skip(skip) {
        text.push_str("\n  | ");
        text.push_str(&abbreviate(line, 160));
    }
    text
}

/// A running `udptalk-server` whose bound address has been read from its announce line.
pub struct Server {
    /// The address it announced.
    pub addr: SocketAddr,
    /// The announce line itself.
    pub announce: String,
    /// Lines printed before the announce line (only with [`Server::spawn_after_logs`]).
    pub early: Vec<String>,
    /// The command line, as a person would type it.
    pub shown: String,
    proc: Proc,
}

impl Server {
    /// Starts `bin` with `args` and reads its first stderr line, `listening on udp ADDR`,
    /// within [`ANNOUNCE_TIMEOUT`]. A server that exits or stays silent is killed and its
    /// stderr returned in the error.
    pub fn spawn<I, S>(bin: &Path, args: I) -> Result<Server, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Server::spawn_after_logs(bin, args, 0)
    }

    /// Like [`Server::spawn`], but lets up to `logs` other lines (log lines, e.g. a warning)
    /// come before the announce line, and keeps them in [`Server::early`], so that a caller
    /// can report the order and still test the server.
    pub fn spawn_after_logs<I, S>(bin: &Path, args: I, logs: usize) -> Result<Server, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(bin);
        command.args(args);
        let shown = show_command(&command);
        let proc = Proc::spawn_with(command, Input::Null)?;
        let deadline = Instant::now() + ANNOUNCE_TIMEOUT;
        let mut early = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match proc.next_stderr_line(left) {
                Ok(line) => line,
                Err(no_line) => {
                    let why = match no_line {
                        NoLine::TimedOut => {
                            format!("no announce line within {}s", ANNOUNCE_TIMEOUT.as_secs())
                        }
                        NoLine::Closed => "it closed stderr without one".to_owned(),
                    };
                    let output = proc.wait(Duration::from_secs(1));
                    return Err(format!(
                        "`{shown}` did not announce its address ({why}; {}); stderr: {}",
                        output.describe_end(),
                        String::from_utf8_lossy(&output.stderr).trim_end()
                    ));
                }
            };
            if !line.starts_with(ANNOUNCE_PREFIX) && early.len() < logs {
                early.push(line);
                continue;
            }
            let addr = line
                .strip_prefix(ANNOUNCE_PREFIX)
                .and_then(|addr| addr.split_whitespace().next()?.parse::<SocketAddr>().ok())
                .ok_or_else(|| {
                    format!(
                        "`{shown}`: stderr line {} is {line:?}, not `{ANNOUNCE_PREFIX}ADDR`",
                        early.len() + 1
                    )
                })?;
            return Ok(Server {
                addr,
                announce: line,
                early,
                shown,
                proc,
            });
        }
    }

    /// Waits for the server to end by itself (`--once`, `--idle`), killing it after `timeout`.
    pub fn wait(self, timeout: Duration) -> Output {
        self.proc.wait(timeout)
    }

    /// Stops the server and returns its output.
    pub fn kill(self) -> Output {
        self.proc.kill()
    }

    /// The server's process id, e.g. to read `/proc/PID/status`.
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Asks the server to stop as a service manager would, with SIGTERM (`kill -TERM PID`), and
    /// waits for it to end, killing it after `timeout`. Its summary is then the last thing it
    /// printed.
    pub fn terminate(self, timeout: Duration) -> Result<Output, String> {
        if let Err(error) = sigterm(self.pid()) {
            // Never leave it running: `kill` reaps it.
            drop(self.proc.kill());
            return Err(error);
        }
        Ok(self.proc.wait(timeout))
    }
}

/// Sends SIGTERM to `pid` with `kill -TERM PID` (std has no signal API, and this keeps xtask
/// free of unsafe code); returns the moment `kill` reported it sent.
pub fn sigterm(pid: u32) -> Result<Instant, String> {
    let pid = pid.to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .map_err(|e| format!("cannot run `kill -TERM {pid}`: {e}"))?;
    if status.success() {
        Ok(Instant::now())
    } else {
        Err(format!("`kill -TERM {pid}` failed ({status})"))
    }
}

/// Runs `command` to its end with `stdin`, killing it after `timeout`.
pub fn run(command: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Result<Output, String> {
    Ok(Proc::spawn(command, stdin)?.wait(timeout))
}

/// A UDP port on `ip` that nothing is bound to right now: bound to port 0, read, released.
/// Another process could take it before we use it; on a quiet machine that is unlikely, and a
/// row that loses the race fails loudly rather than passing wrongly.
pub fn free_port(ip: IpAddr) -> Result<u16, String> {
    UdpSocket::bind((ip, 0))
        .and_then(|socket| socket.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot bind a UDP socket on {ip} port 0: {e}"))
}

/// Sends one datagram from a fresh socket to `to` and returns the reply, waiting at most
/// `timeout`.
pub fn exchange(to: SocketAddr, datagram: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let local: SocketAddr = match to {
        SocketAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
    socket
        .connect(to)
        .and_then(|()| socket.set_read_timeout(Some(timeout)))
        .and_then(|()| socket.send(datagram))
        .map_err(|e| format!("send to {to}: {e}"))?;
    let mut buf = vec![0; 65_536];
    let len = socket
        .recv(&mut buf)
        .map_err(|e| format!("no reply from {to} within {timeout:?}: {e}"))?;
    buf.truncate(len);
    Ok(buf)
}

/// The path of a program on `PATH`, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(format!("{program}{}", std::env::consts::EXE_SUFFIX)))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Elsewhere no mode bits: a file (named with `.exe`, see [`which`]) is a program.
#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// `bytes` as one command-line argument. Any bytes on Unix; elsewhere (Windows passes
/// arguments as UTF-16) only UTF-8, else the reason this row cannot run there.
pub fn os_arg(bytes: Vec<u8>) -> Result<OsString, String> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Ok(OsString::from_vec(bytes))
    }
    #[cfg(not(unix))]
    {
        String::from_utf8(bytes).map(OsString::from).map_err(|e| {
            format!(
                "the argument {:?} is not UTF-8, and only a Unix command line can carry that",
                String::from_utf8_lossy(e.as_bytes())
            )
        })
    }
}

/// `Ok` when a UDP socket can be bound on `[::1]:0`; else the reason the IPv6 rows are skipped,
/// starting `no IPv6 loopback: `. Any error counts: without `::1` no IPv6 row can run.
pub fn ipv6_loopback() -> Result<(), String> {
    UdpSocket::bind((std::net::Ipv6Addr::LOCALHOST, 0))
        .map(drop)
        .map_err(|e| no_ipv6_reason(&e))
}

/// The skip reason for a failed bind of `[::1]:0`.
pub fn no_ipv6_reason(error: &std::io::Error) -> String {
    format!("no IPv6 loopback: binding [::1]:0 failed: {error}")
}

/// Starts `socat -d -d UDP-LISTEN:0 PIPE` on `ip` and learns its port from the notice it logs,
/// `listening on UDP AF=2 127.0.0.1:39492` (`AF=10 [0000:…:0001]:39388` over IPv6).
/// `UDP-RECVFROM:0` would log only `receiving on AF=2 127.0.0.1:0`, hence `UDP-LISTEN`: it
/// echoes its first peer's datagrams (`PIPE`) until `-T` seconds without one. `-b 65536` lets
/// a datagram through whole (the default buffer is 8,192 bytes). An empty datagram reads as
/// end-of-file to socat and ends it, so nobody sends it one.
pub fn start_socat_echo(socat: &Path, ip: IpAddr) -> Result<(Proc, SocketAddr, String), String> {
    let listen = match ip {
        IpAddr::V4(ip) => format!("UDP4-LISTEN:0,bind={ip}"),
        IpAddr::V6(ip) => format!("UDP6-LISTEN:0,bind=[{ip}]"),
    };
    let mut command = Command::new(socat);
    command.args(["-d", "-d", "-T", "10", "-b", "65536", &listen, "PIPE"]);
    let shown = show_command(&command);
    let proc = Proc::spawn(command, None)?;
    let deadline = Instant::now() + ANNOUNCE_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = proc
            .next_stderr_line(left)
            .map_err(|_| format!("`{shown}` logged no `listening on` line"))?;
        if let Some((_, rest)) = line.split_once("listening on UDP ") {
            let addr = rest
                .rsplit(' ')
                .next()
                .and_then(|addr| addr.parse::<SocketAddr>().ok())
                .ok_or_else(|| format!("`{shown}`: cannot read an address in {line:?}"))?;
            return Ok((proc, addr, shown));
        }
    }
}

/// Calls `check` every 10 ms until it gives `Ok`, at most `timeout`; then gives its last
/// `Err`, which says what was still not so.
pub fn wait_for<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(done) => return Ok(done),
            Err(not_yet) if Instant::now() >= deadline => return Err(not_yet),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The local ports of the UDP sockets (IPv4 and IPv6) that process `pid` holds: its
/// `/proc/PID/fd/*` links `socket:[INODE]` matched against the inode column of
/// `/proc/net/udp{,6}`.
pub fn udp_ports_of(pid: u32) -> Result<Vec<u16>, String> {
    let dir = format!("/proc/{pid}/fd");
    let inodes: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {dir}: {e}"))?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        // A system without IPv6 has no udp6 table: nothing to find there.
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (columns.get(1), columns.get(9)) else {
                continue;
            };
            if inodes.iter().any(|wanted| wanted == inode) {
                if let Some(port) = local
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    Ok(ports)
}
