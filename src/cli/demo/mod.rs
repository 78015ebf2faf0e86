//! `sealgate demo`: a real proxy on loopback in front of a built-in TLS sink, with a throwaway
//! CA made on the spot. Nothing here is for production: the keys are written in clear to the
//! demo folder.

mod open;

pub use open::instructions;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::tls;
use crate::config::Config;
use crate::serve::listener::{self, Server};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("demo configuration is invalid:\n{0}")]
    Config(crate::config::ConfigErrors),
    #[error(transparent)]
    Serve(#[from] listener::ServeError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
}

fn write(path: &Path, contents: &str) -> Result<(), DemoError> {
    std::fs::write(path, contents).map_err(|e| DemoError::Io(path.to_path_buf(), e))
}

/// Writes a throwaway CA and a `localhost`/127.0.0.1 server certificate into `dir`.
pub fn make_pki(dir: &Path) -> Result<(), DemoError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).map_err(|e| DemoError::Io(dir.to_path_buf(), e))?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "sealgate demo CA (throwaway)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf.signed_by(&key, &issuer)?;
    write(&dir.join("ca.pem"), &ca_cert.pem())?;
    write(&dir.join("server.pem"), &leaf_cert.pem())?;
    write(&dir.join("server.key"), &key.serialize_pem())?;
    Ok(())
}

pub struct DemoOptions {
    pub dir: PathBuf,
    /// Demo key material (keys/demo) to seed the throwaway store with.
    pub keys: PathBuf,
    pub listen: SocketAddr,
    pub sink: SocketAddr,
}

/// Where the demo keeps its files, below the folder given with `--dir`.
struct Layout {
    /// The throwaway CA and the server certificate, used by the proxy and the sink alike.
    tls: PathBuf,
    /// What the sink receives: `N.eml` and `N.envelope`.
    mail: PathBuf,
    /// The configuration the proxy runs with.
    config: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        Layout {
            tls: dir.join("tls"),
            mail: dir.join("mail"),
            config: dir.join("sealgate.toml"),
        }
    }
}

/// Runs the demo until SIGTERM/SIGINT.
pub async fn run(opts: DemoOptions) -> Result<(), DemoError> {
    let dir = std::path::absolute(&opts.dir).map_err(|e| DemoError::Io(opts.dir.clone(), e))?;
    let layout = Layout::new(&dir);
    make_pki(&layout.tls)?;
    // Each run starts at message 1: the mail of an earlier run is removed (a throwaway folder).
    let mail_dir = &layout.mail;
    if mail_dir.exists() {
        std::fs::remove_dir_all(mail_dir).map_err(|e| DemoError::Io(mail_dir.clone(), e))?;
    }
    std::fs::create_dir_all(mail_dir).map_err(|e| DemoError::Io(mail_dir.clone(), e))?;
    // Absolute, so every printed command works from any directory; the repository's keys/demo
    // when the given folder does not exist (e.g. started from elsewhere).
    let keys = demo_keys(&opts.keys);

    // The built-in upstream: a STARTTLS sink writing to mail/.
    let sink_rt = crate::cli::sink::runtime(tokio_rustls::TlsAcceptor::from(tls::server_config(
        &layout.tls.join("server.pem"),
        &layout.tls.join("server.key"),
    )?));
    let (notify, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let (sink_addr, _count, _sink) =
        crate::cli::sink::spawn(opts.sink, sink_rt, Some(mail_dir.clone()), Some(notify))
            .await
            .map_err(|e| DemoError::Io(PathBuf::from(opts.sink.to_string()), e))?;

    write(&layout.config, &config_text(opts.listen, sink_addr))?;
    let config = Config::load(&layout.config).map_err(DemoError::Config)?;
    let seeded = seed_store(&config.store_path, &keys);
    let server = Server::bind(&config).await?;
    let addr = server
        .local_addrs()
        .first()
        .map(|(a, _)| *a)
        .unwrap_or(opts.listen);
    print_banner(
        &layout,
        addr,
        sink_addr,
        &seeded.replace("ADDR", &addr.to_string()),
    );
    let printer = tokio::spawn(print_arrivals(arrivals, keys));
    server.run(listener::shutdown_signal()).await;
    printer.abort();
    Ok(())
}

/// The configuration the demo proxy runs with (paths relative to the demo folder).
fn config_text(listen: SocketAddr, sink_addr: SocketAddr) -> String {
    format!(
        r#"# Written by `sealgate demo`: the configuration the demo proxy runs with.
[server]
hostname = "sealgate.localhost"

[store]
path = "store"

[policy]
encrypt = "opportunistic"          # encrypt when a usable key exists
sign = true                        # sign when the sender has an identity
format = "auto"                    # S/MIME if a usable certificate, else OpenPGP
subject_trigger = "[secure]"       # "[secure]" in the Subject: encryption required

[[policy.rule]]
match = "*.required.test"          # encryption required for this domain and its subdomains
encrypt = "required"

[[policy.rule]]
match = "alice2@example.test"      # this one gets OpenPGP
format = "openpgp"

[[listen]]
address = "{listen}"
tls = "starttls"
cert = "tls/server.pem"
key = "tls/server.key"
require_tls = false
sign_without_auth = true           # demo on loopback: clients may be signed for without AUTH
allow_from = {allow_from}          # who may connect (sign_without_auth needs it)

[upstream]
address = "{sink_addr}"
tls = "starttls"
ca_file = "tls/ca.pem"
server_name = "localhost"
forward_client = "none"           # the demo's sink is not an MTA: it has no relay checks to feed
"#,
        // On loopback, loopback only; a demo listening elsewhere keeps serving anyone (its
        // keys are public on purpose).
        allow_from = if listen.ip().is_loopback() {
            r#"["127.0.0.0/8", "::1"]"#
        } else {
            r#"["0.0.0.0/0", "::/0"]"#
        },
    )
}

/// What the demo runs, where its files are, and the first message to send; `seeded` is what
/// [`seed_store`] said, with the proxy's address filled in.
fn print_banner(layout: &Layout, addr: SocketAddr, sink_addr: SocketAddr, seeded: &str) {
    println!(
        "sealgate demo\n\
         \n  proxy     smtp://{addr} (STARTTLS offered; certificate from {tls})\
         \n  upstream  built-in TLS sink at {sink_addr} (STARTTLS, verified against {tls}/ca.pem)\
         \n  messages  {mail}/N.eml, from 1 on each run (envelope in N.envelope)\
         \n  config    {config}\
         \n\nSend a message (plain: nobody here has a key for bob@example.net):\
         \n  swaks --server {addr} --tls --from alice@example.org --to bob@example.net\
         \n{seeded}\
         \n\nFor each message that arrives, the command that opens it is printed below.\
         \nStop with Ctrl-C.\n",
        tls = layout.tls.display(),
        mail = layout.mail.display(),
        config = layout.config.display(),
    );
    println!("sealgate: listening on {addr} (tls=starttls)");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Prints, for every message the sink writes, what it is and the command that opens it.
async fn print_arrivals(
    mut arrivals: tokio::sync::mpsc::UnboundedReceiver<PathBuf>,
    keys: PathBuf,
) {
    use std::io::Write as _;
    while let Some(eml) = arrivals.recv().await {
        let message = tokio::fs::read(&eml).await.unwrap_or_default();
        let envelope = tokio::fs::read_to_string(eml.with_extension("envelope"))
            .await
            .unwrap_or_default();
        let name = eml.file_name().map(|n| n.to_string_lossy().into_owned());
        let text = instructions(&message, &envelope, &eml, &keys);
        println!("\nsealgate demo: {}: {text}", name.unwrap_or_default());
        let _ = std::io::stdout().flush();
    }
}

/// The demo key folder as an absolute path: `given` when it exists, else the repository's.
fn demo_keys(given: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/demo");
    let chosen = if given.exists() || !repo.exists() {
        given
    } else {
        repo.as_path()
    };
    std::path::absolute(chosen).unwrap_or_else(|_| chosen.to_path_buf())
}

/// Imports the demo keys (keys/demo) into the demo's store, through the same code as
/// `sealgate keys import`. Returns what to tell the user.
fn seed_store(store: &Path, keys: &Path) -> String {
    use crate::cli::keys::{self, KeysCommand};
    if !keys.join("alice-smime.pem").exists() {
        return format!(
            "\nNo demo keys at {} (run from the repository, or pass --keys): the store is empty, \
             so every message is relayed as is.",
            keys.display()
        );
    }
    let f = |name: &str| keys.join(name).display().to_string();
    let now = std::time::SystemTime::now();
    let imports = [
        (
            false,
            None,
            vec![
                f("bob-rsa2048.pem"),
                f("carol-ec-p256.pem"),
                f("peggy-ed25519.asc"),
                f("victor-rsa3072.asc"),
            ],
        ),
        (true, None, vec![f("alice-smime.pem"), f("alice-smime.key")]),
        (true, None, vec![f("alice-openpgp-secret.asc")]),
        (
            true,
            Some(keys.join("passphrase.txt")),
            vec![f("alice2-openpgp-secret-protected.asc")],
        ),
    ];
    for (private, passphrase_file, files) in imports {
        let cmd = KeysCommand::Import {
            private,
            passphrase_file,
            json: false,
            files: files.into_iter().map(PathBuf::from).collect(),
        };
        if keys::run(cmd, store, None, now) != std::process::ExitCode::SUCCESS {
            return "\nSeeding the demo store failed (see above): messages are relayed as is."
                .into();
        }
    }
    format!(
        "\nKey store seeded from {k} (demo keys, public on purpose: never use them for real mail):\
         \n  S/MIME recipients bob@, carol@, alice@example.test; OpenPGP peggy@, victor@, alice2@example.test;\
         \n  sender identities alice@example.test (S/MIME + OpenPGP), alice2@example.test (OpenPGP)\
         \n  private keys shipped for alice@example.test and alice2@example.test only: mail to\
         \n  the others is sealed for real and cannot be opened here\
         \n\nSend signed and encrypted mail to yourself (one S/MIME copy, one PGP/MIME copy):\
         \n  swaks --server ADDR --tls --from alice@example.test --to alice@example.test,alice2@example.test\
         \nA recipient under *.required.test has no key: it is refused with 550 5.7.1.",
        k = keys.display()
    )
}
