//! `midge`: the broker as a program. It reads nats-server's flags and config files, logs
//! like nats-server, and handles the same signals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use midge::flags::{self, Command, SignalCommand};
use midge::logging::{self, LogTarget};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("midge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let command = match flags::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => bail!("{e}\n{}", "run 'midge -h' for the list of options"),
    };
    let flags = match command {
        Command::Help => {
            print!("{}", flags::HELP);
            return Ok(());
        }
        Command::Version => {
            println!(
                "midge: v{} (NATS protocol compatible with nats-server v{})",
                env!("CARGO_PKG_VERSION"),
                midge::NATS_COMPAT_VERSION
            );
            return Ok(());
        }
        Command::Signal { command, pid } => return send_signal(command, pid.as_deref()),
        Command::Run(flags) => flags,
    };
    let check_only = flags.check_config;
    // Everything is loaded and checked before anything starts: a bad file or flag stops
    // here with its location, and nothing is half-configured.
    // Kept for reloads: the flags keep overriding the file, as in nats-server.
    let command_line = flags.clone();
    let (opts, warnings) = flags.load_options()?;
    if check_only {
        let file = opts.config_file.as_deref().map(Path::display);
        println!(
            "midge: configuration file {} test is successful",
            file.map(|f| f.to_string()).unwrap_or_default()
        );
        return Ok(());
    }
    let target = match &opts.log_file {
        Some(path) => LogTarget::file(path)
            .with_context(|| format!("cannot open log file {}", path.display()))?,
        None => LogTarget::stderr(),
    };
    logging::init_from(target, &opts);
    for w in &warnings {
        warn!("{w}");
    }
    let pid_file = opts.pid_file.clone();
    if let Some(path) = &pid_file {
        std::fs::write(path, std::process::id().to_string())
            .with_context(|| format!("cannot write pid file {}", path.display()))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = rt.block_on(serve(opts, command_line));
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

async fn serve(opts: midge::Options, command_line: flags::Flags) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Signals are trapped before the server says it is ready: a supervisor may signal it
    // as soon as it reads "Server is ready", and the default action would kill it.
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let started = midge::Server::builder()
        .options(opts)
        .command_line(command_line)
        .start()
        .await;
    let server = match started {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return Err(e.into());
        }
    };
    // Lame duck mode runs beside the signal loop (a reload or a log reopen still works
    // meanwhile, INT cuts it short, TERM waits for it); the server has shut down when it
    // ends.
    let lame_duck_done = {
        let mut lame_duck = std::pin::pin!(lame_duck_or_never(None));
        loop {
            tokio::select! {
                _ = int.recv() => { info!("Trapped \"interrupt\" signal"); break false; }
                _ = term.recv() => {
                    info!("Trapped \"terminated\" signal");
                    // As nats-server: TERM during lame duck mode lets it finish (Kubernetes
                    // sends TERM right after a preStop hook started it); INT still cuts it.
                    if server.is_lame_duck() {
                        info!("Lame duck mode in progress: finishing it before exiting");
                        continue;
                    }
                    break false;
                }
                _ = hup.recv() => {
                    info!("Trapped \"hangup\" signal");
                    // Success and failure are both logged by the server.
                    let _ = server.reload().await;
                }
                _ = usr1.recv() => {
                    info!("Trapped \"user defined signal 1\" signal");
                    match logging::reopen() {
                        Ok(true) => info!("File log re-opened"),
                        Ok(false) => info!("File log re-open ignored, not a file logger"),
                        Err(e) => error!("{e}"),
                    }
                }
                _ = usr2.recv() => {
                    info!("Trapped \"user defined signal 2\" signal");
                    // A second USR2 must not restart (and so cut short) the first.
                    if !server.is_lame_duck() {
                        lame_duck.set(lame_duck_or_never(Some(&server)));
                    }
                }
                () = &mut lame_duck => break true,
            }
        }
    };
    if !lame_duck_done {
        server.shutdown().await;
    }
    Ok(())
}

/// Lame duck mode of `server`, or a future that never completes.
async fn lame_duck_or_never(server: Option<&midge::Server>) {
    match server {
        Some(s) => s.lame_duck_mode().await,
        None => std::future::pending().await,
    }
}

/// `--signal cmd[=pid|pidfile]`: find the server and send it the signal.
fn send_signal(command: SignalCommand, target: Option<&str>) -> anyhow::Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = match target {
        Some(t) => match t.parse::<i32>() {
            Ok(p) => p,
            Err(_) => {
                let text = std::fs::read_to_string(t)
                    .with_context(|| format!("cannot read pid file {t}"))?;
                text.trim()
                    .parse()
                    .with_context(|| format!("pid file {t} does not hold a pid"))?
            }
        },
        None => only_running_midge()?,
    };
    let signal = match command {
        SignalCommand::Stop => Signal::KILL,
        SignalCommand::Quit => Signal::INT,
        SignalCommand::Term => Signal::TERM,
        SignalCommand::Reopen => Signal::USR1,
        SignalCommand::Reload => Signal::HUP,
        SignalCommand::Ldm => Signal::USR2,
    };
    let pid = Pid::from_raw(pid).context("invalid pid")?;
    kill_process(pid, signal)
        .with_context(|| format!("cannot signal process {}", pid.as_raw_nonzero()))?;
    Ok(())
}

/// The pid of the single other process named `midge`, as nats-server does for `--signal`
/// without a pid.
fn only_running_midge() -> anyhow::Result<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .context("cannot list processes")?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let comm: PathBuf = entry.path().join("comm");
        if std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "midge") {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => bail!("no midge process is running"),
        _ => bail!(
            "multiple midge processes are running ({found:?}); give a pid: --signal <cmd>=<pid>"
        ),
    }
}
