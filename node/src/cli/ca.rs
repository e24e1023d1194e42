//! `eastwall ca`: the trust domain's certificate authority.

use std::path::PathBuf;

use clap::Subcommand;
use eastwall_node::ca;

#[derive(Subcommand)]
pub(crate) enum CaAction {
    /// Create a CA: DIR/ca.crt (the trust bundle) and DIR/ca.key (mode 0600). Never overwrites.
    Init {
        /// Folder for ca.crt and ca.key (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The trust domain, e.g. corp.example.
        #[arg(long)]
        trust_domain: String,
        /// Validity of the CA certificate, in days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a certificate and key from the CA in DIR: PREFIX.crt and PREFIX.key (mode 0600).
    Issue {
        /// The CA folder.
        #[arg(long)]
        dir: PathBuf,
        /// The SPIFFE ID to issue for (spiffe://<trust domain>/...).
        #[arg(long, conflicts_with = "node", required_unless_present = "node")]
        id: Option<String>,
        /// A node name: issues for spiffe://<trust domain>/node/NAME.
        #[arg(long)]
        node: Option<String>,
        /// Output prefix: writes PREFIX.crt and PREFIX.key.
        #[arg(long)]
        out: PathBuf,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Serve POST /v1/sign over mutual TLS: nodes get certificates for the workloads the
    /// registry places on them.
    Serve {
        /// The CA folder.
        #[arg(long)]
        dir: PathBuf,
        /// The registry file (re-read when it changes). Without it, the registry of the
        /// central store (`--endpoints` ... or `EASTWALL_ETCD_*`, as for `eastwall apply`).
        #[arg(long)]
        registry: Option<PathBuf>,
        #[command(flatten)]
        store: super::store::StoreArgs,
        /// Address to listen on, e.g. 10.0.0.1:15009.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Lifetime of the certificates it signs, in seconds.
        #[arg(long, default_value_t = 86_400)]
        cert_secs: u64,
        /// Lifetime of the node certificates it gives nodes enrolling with a bootstrap
        /// token, in seconds (default 365 days).
        #[arg(long, default_value_t = 365 * 86_400)]
        node_cert_secs: u64,
    },
    /// Make a bootstrap token: a new node started with it (`identity.ca.bootstrapToken`)
    /// gets its node certificate from `eastwall ca serve`. Prints the token; DIR keeps only
    /// its hash.
    Token {
        /// The CA folder.
        #[arg(long)]
        dir: PathBuf,
        /// A node the token may enroll (repeat for several); none: any node of the registry.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Enrollments it allows (default: one per --node, else 1).
        #[arg(long)]
        uses: Option<u32>,
        /// How long it is accepted, in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
}

pub(crate) fn run(action: CaAction) -> anyhow::Result<()> {
    match action {
        CaAction::Init {
            dir,
            trust_domain,
            days,
        } => {
            let crt = ca::init(&dir, &trust_domain, days)?;
            println!(
                "created the CA of trust domain {trust_domain}: {} (give it to every node as its trust bundle) and {} (keep it secret)",
                crt.display(),
                dir.join(ca::CA_KEY_FILE).display()
            );
            Ok(())
        }
        CaAction::Issue {
            dir,
            id,
            node,
            out,
            hours,
        } => {
            let subject = match (id, node) {
                (Some(id), None) => ca::Subject::Id(id),
                (None, Some(node)) => ca::Subject::Node(node),
                _ => anyhow::bail!("give exactly one of --id and --node"),
            };
            let id = ca::issue(&dir, &subject, &out, hours)?;
            println!(
                "issued {id} for {hours} h: {}.crt, {}.key",
                out.display(),
                out.display()
            );
            Ok(())
        }
        CaAction::Serve {
            dir,
            registry,
            store,
            listen,
            cert_secs,
            node_cert_secs,
        } => ca::server::run(ca::server::ServeOptions {
            dir,
            registry: match registry {
                Some(file) => ca::server::RegistrySource::File(file),
                None if store.given() => ca::server::RegistrySource::Store(store.spec()?),
                None => anyhow::bail!(
                    "give the registry: --registry FILE, or the central store (--endpoints, --cacert, --cert, --key, or EASTWALL_ETCD_*)"
                ),
            },
            listen,
            cert_ttl: std::time::Duration::from_secs(cert_secs),
            node_cert_ttl: std::time::Duration::from_secs(node_cert_secs),
        }),
        CaAction::Token {
            dir,
            nodes,
            uses,
            ttl_secs,
        } => {
            let token = ca::token::make(&dir, nodes, uses, ttl_secs)?;
            println!("{token}");
            Ok(())
        }
    }
}
