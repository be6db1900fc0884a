//! One run of a `key_command`, without a shell, in a process group of its own.
//!
//! The run ends when the command exits, not when its stdout closes: a helper that starts a
//! daemon (an agent, a cache) leaves it holding the pipe, and waiting for end-of-file would wait
//! for that daemon. So the command is watched with `poll`, its output read as it comes; once it
//! has exited (seen without reaping it, so its process group cannot be reused meanwhile), the
//! group is killed, what is in the pipes is read, and the pipes are closed. Nothing outlives the
//! run: no thread, no descriptor, no process of its group.

use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::command::{CommandSpec, ExecProtocol};
use super::keys_file::trim_one_newline;
use super::{Redactor, Secret};

/// Most a key (or an error message) can take; a command printing more is not printing a key.
const OUTPUT_LIMIT: usize = 64 * 1024;

/// What a finished command left: its status, stdout and stderr (each at most [`OUTPUT_LIMIT`]).
struct Finished {
    status: ExitStatus,
    out: Vec<u8>,
    err: Vec<u8>,
}

/// Runs the command once. Errors quote its stderr through `redactor`.
pub(crate) fn run(spec: &CommandSpec, redactor: &Redactor) -> Result<Secret, String> {
    let shown = spec.shown();
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| "key_command is empty".to_owned())?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(exec) = &spec.openclaw {
        cmd.env_clear()
            .envs(exec.env.iter().cloned())
            .stdin(Stdio::piped());
        if let Some(dir) = std::path::Path::new(program)
            .parent()
            .filter(|d| d.is_dir())
        {
            cmd.current_dir(dir);
        }
    }
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("key_command {shown}: cannot run {program}: {e}"))?;
    if let (Some(exec), Some(mut stdin)) = (&spec.openclaw, child.stdin.take()) {
        // A few hundred bytes, well under a pipe's buffer: written whole before the wait. A
        // provider that exits without reading it is no error.
        use std::io::Write as _;
        let _ = stdin.write_all(exec_request(exec).as_bytes());
    }
    let Some(done) = wait(child, spec.timeout).map_err(|e| format!("key_command {shown}: {e}"))?
    else {
        return Err(format!(
            "key_command {shown} did not finish within {}; killed it",
            humantime::format_duration(spec.timeout)
        ));
    };
    let text = String::from_utf8_lossy(&done.out);
    let stderr = quoted_stderr(&done.err, redactor);
    if !done.status.success() {
        let code = match done.status.code() {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".to_owned(),
        };
        return Err(format!("key_command {shown} {code}{stderr}"));
    }
    let key = match &spec.openclaw {
        Some(exec) => {
            exec_value(exec, &text).map_err(|why| format!("key_command {shown} {why}"))?
        }
        None => trim_one_newline(&text).to_owned(),
    };
    let key = key.as_str();
    if key.is_empty() {
        return Err(format!("key_command {shown} printed nothing{stderr}"));
    }
    Secret::new(key).map_err(|why| format!("key_command {shown} printed a key that {why}"))
}

/// What OpenClaw writes to an `exec` provider's stdin.
fn exec_request(exec: &ExecProtocol) -> String {
    serde_json::json!({"protocolVersion": 1, "provider": exec.provider, "ids": [exec.id]})
        .to_string()
}

/// The value an `exec` provider answered for its id, parsed as OpenClaw's `parseExecValues`
/// does. Errors never quote the output.
fn exec_value(exec: &ExecProtocol, stdout: &str) -> Result<String, String> {
    use serde_json::Value;
    let trimmed = stdout.trim();
    if trimmed.is_empty() {
        return Err("printed nothing".into());
    }
    let parsed: Value = match serde_json::from_str(trimmed) {
        Ok(v) => v,
        Err(_) if !exec.json_only => return Ok(trimmed.to_owned()),
        Err(_) => return Err("printed invalid JSON (OpenClaw's exec providers answer {\"protocolVersion\":1,\"values\":{...}} unless jsonOnly is false)".into()),
    };
    match parsed {
        Value::String(s) if !exec.json_only => return Ok(s),
        Value::Object(_) => {}
        _ => return Err("answered JSON that is not an object".into()),
    }
    if parsed.get("protocolVersion").and_then(Value::as_i64) != Some(1) {
        return Err("answered without protocolVersion 1".into());
    }
    if parsed
        .pointer("/errors")
        .and_then(|e| e.get(&exec.id))
        .is_some()
    {
        return Err(format!("answered an error for id {:?}", exec.id));
    }
    match parsed.get("values").and_then(|v| v.get(&exec.id)) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!(
            "answered a value for id {:?} that is not a string",
            exec.id
        )),
        None => Err(format!("answered no value for id {:?}", exec.id)),
    }
}

/// The first line of stderr, through the one redaction for text from outside: a tool may echo
/// the key it found, or the one it was asked about, in any quoting.
fn quoted_stderr(stderr: &[u8], redactor: &Redactor) -> String {
    let text = String::from_utf8_lossy(stderr);
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return String::new();
    };
    let line: String = redactor.quoted(line).chars().take(200).collect();
    format!(": {line}")
}

/// How often a command that has closed its output, or prints nothing, is looked at for having
/// exited. Only while a command runs.
#[cfg(unix)]
const TICK: Duration = Duration::from_millis(10);

/// Waits for the command to exit (then kills its group) or for `timeout` (then kills its group
/// and gives `None`), reading its output meanwhile.
#[cfg(unix)]
fn wait(mut child: std::process::Child, timeout: Duration) -> std::io::Result<Option<Finished>> {
    use std::os::fd::OwnedFd;
    let pid = child.id();
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|p| std::fs::File::from(OwnedFd::from(p))),
        child
            .stderr
            .take()
            .map(|p| std::fs::File::from(OwnedFd::from(p))),
    ];
    let mut bufs = [Vec::new(), Vec::new()];
    let deadline = std::time::Instant::now() + timeout;
    let finished = loop {
        if exited(pid)? {
            kill_group(pid);
            // What it wrote before exiting is in the pipes; a daemon it left is not waited for.
            for _ in 0..64 {
                if read_ready(&mut pipes, &mut bufs, Duration::ZERO)? == 0 {
                    break;
                }
            }
            break true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            kill_group(pid);
            break false;
        }
        read_ready(&mut pipes, &mut bufs, left.min(TICK))?;
    };
    // Reaped only now: until then the group id cannot go to another process.
    let status = child.wait()?;
    let [out, err] = bufs;
    Ok(finished.then_some(Finished { status, out, err }))
}

/// Whether the child has exited, without reaping it.
#[cfg(unix)]
fn exited(pid: u32) -> std::io::Result<bool> {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(true);
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    Ok(waitid(WaitId::Pid(pid), options)?.is_some())
}

/// Waits up to `wait` for output and reads what is there; returns how many pipes had something
/// (data or end-of-file). A closed pipe is dropped; output past the limit is read and dropped,
/// so a chatty command never blocks on a full pipe.
#[cfg(unix)]
fn read_ready(
    pipes: &mut [Option<std::fs::File>; 2],
    bufs: &mut [Vec<u8>; 2],
    wait: Duration,
) -> std::io::Result<usize> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::io::Read as _;
    let open: Vec<usize> = (0..2).filter(|&i| pipes[i].is_some()).collect();
    let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    });
    if open.is_empty() {
        std::thread::sleep(wait);
        return Ok(0);
    }
    let ready: Vec<bool> = {
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .filter_map(|&i| pipes[i].as_ref())
            .map(|f| PollFd::new(f, PollFlags::IN))
            .collect();
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        fds.iter().map(|f| !f.revents().is_empty()).collect()
    };
    let mut chunk = [0u8; 8192];
    let mut count = 0;
    for (&i, ready) in open.iter().zip(ready) {
        if !ready {
            continue;
        }
        count += 1;
        let Some(pipe) = pipes[i].as_mut() else {
            continue;
        };
        // poll said readable: this read returns what is there, or 0 at end-of-file.
        match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => pipes[i] = None,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(bufs[i].len());
                bufs[i].extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
    Ok(count)
}

#[cfg(unix)]
fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Elsewhere there is no process group to kill nor `poll` on pipes: the command's output is read
/// to its end on a thread, and a command past its timeout is left to finish on its own.
#[cfg(not(unix))]
fn wait(child: std::process::Child, timeout: Duration) -> std::io::Result<Option<Finished>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let out = out?;
            Ok(Some(Finished {
                status: out.status,
                out: out.stdout,
                err: out.stderr,
            }))
        }
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_keeps_words_and_paths_but_not_keys() {
        let r = Redactor::default();
        assert_eq!(
            quoted_stderr(b"\n[ERROR] item op://Private/OpenRouter not found for sk-or-v1-0123456789abcdef0123\nmore", &r),
            ": [ERROR] item op://Private/OpenRouter not found for ...0123"
        );
        assert_eq!(quoted_stderr(b"bad \"secret\"", &r), ": bad \"…\"");
        assert_eq!(quoted_stderr(b"", &r), "");
    }

    #[cfg(unix)]
    #[test]
    fn a_daemon_holding_stdout_does_not_hold_the_run() {
        let spec = CommandSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo the-key-0123456789; sleep 30 &".into(),
            ],
            refresh: Duration::from_secs(60),
            timeout: Duration::from_secs(20),
            openclaw: None,
        };
        let started = std::time::Instant::now();
        let key = run(&spec, &Redactor::default()).unwrap();
        assert_eq!(key.fingerprint(), "...6789");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
