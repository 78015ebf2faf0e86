//! The `sealgate` command line: the clap definitions and one function per command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigErrors, StoreSettings};
use crate::serve::listener::{self, Server};

pub mod demo;
pub mod explain;
pub mod keys;
pub mod queue;
pub mod sink;

use keys::KeysCommand;

#[derive(Parser)]
#[command(
    name = "sealgate",
    version,
    about = "SMTP proxy that signs and encrypts mail, relaying over forced, verified TLS"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    #[command(after_help = "Example:\n  sealgate serve --config /etc/sealgate/sealgate.toml")]
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every error (exit status 2 if invalid).
    #[command(after_help = "Example:\n  sealgate check-config --config deploy/sealgate.toml")]
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage recipient certificates, OpenPGP keys and sender identities in the key store.
    #[command(
        after_help = "Examples:\n  sealgate keys import --config /etc/sealgate/sealgate.toml bob.pem partner.asc\n  sealgate keys show --config /etc/sealgate/sealgate.toml bob@partner.example"
    )]
    Keys {
        /// Configuration file; its [store] path names the key store.
        #[arg(
            long,
            global = true,
            value_name = "FILE",
            default_value = "sealgate.toml"
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Inspect and act on the durable queue (works whether the server runs or not).
    #[command(
        after_help = "Examples:\n  sealgate queue list --config /etc/sealgate/sealgate.toml\n  sealgate queue retry --config /etc/sealgate/sealgate.toml --all"
    )]
    Queue {
        /// Configuration file; its [queue] dir (default: `queue` beside the [store] path).
        #[arg(
            long,
            global = true,
            value_name = "FILE",
            default_value = "sealgate.toml"
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Explain the encryption policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Run the proxy on loopback in front of a built-in TLS sink, with throwaway certificates.
    #[command(
        after_help = "Example:\n  sealgate demo\n  swaks --server 127.0.0.1:2525 --tls --to bob@example.net"
    )]
    Demo {
        /// Folder for the demo's certificates, configuration and received messages.
        #[arg(long, default_value = "sealgate-demo")]
        dir: PathBuf,
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:2525")]
        listen: std::net::SocketAddr,
        /// Where the built-in upstream sink listens.
        #[arg(long, default_value = "127.0.0.1:2526")]
        sink: std::net::SocketAddr,
        /// Demo key material to seed the throwaway key store with.
        #[arg(long, default_value = "keys/demo")]
        keys: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Per recipient: the rule that matched, the key chosen (or why none is usable), the format,
    /// and whether the message would be signed.
    #[command(
        after_help = "Example:\n  sealgate policy explain --config /etc/sealgate/sealgate.toml --from alice@example.org --to bob@partner.example --to carol@example.net"
    )]
    Explain {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Envelope sender (assumed to be the one From mailbox).
        #[arg(long)]
        from: String,
        /// A recipient (repeat for several).
        #[arg(long, required = true)]
        to: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => serve(&config),
        Command::Keys { config, command } => match StoreSettings::load(&config) {
            Ok(settings) => keys::run(
                command,
                &settings.store_path,
                settings.trust_anchors.as_deref(),
                std::time::SystemTime::now(),
            ),
            Err(errors) => invalid_config(&errors),
        },
        Command::Queue { config, command } => match crate::config::queue_dir_from(&config) {
            Ok(dir) => queue::run(command, &dir),
            Err(errors) => invalid_config(&errors),
        },
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    config,
                    from,
                    to,
                    json,
                },
        } => explain::run(&config, &from, &to, json),
        Command::Demo {
            dir,
            listen,
            sink,
            keys,
        } => run_demo(demo::DemoOptions {
            dir,
            keys,
            listen,
            sink,
        }),
    }
}

/// Prints every configuration error; exit status 2.
fn invalid_config(errors: &ConfigErrors) -> ExitCode {
    eprint!("{errors}");
    ExitCode::from(2)
}

/// `sealgate check-config`.
fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(_) => {
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => invalid_config(&errors),
    }
}

/// `sealgate serve`: binds every listener, says where on stdout, and serves until a signal.
fn serve(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => return invalid_config(&errors),
    };
    runtime(async move {
        let server = match Server::bind(&config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sealgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        {
            let mut out = std::io::stdout().lock();
            for (addr, mode) in server.local_addrs() {
                let _ = writeln!(out, "sealgate: listening on {addr} (tls={mode})");
            }
            let _ = out.flush();
        }
        server.run(listener::shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// `sealgate demo`.
fn run_demo(opts: demo::DemoOptions) -> ExitCode {
    runtime(async move {
        match demo::run(opts).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealgate demo: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn runtime(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("sealgate: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
