//! `locksmith token`: the bearer tokens of `locksmith serve` (§9). The file
//! keeps only their hashes; a new token is printed once.

use std::path::PathBuf;

use locksmith_core::Code;
use locksmith_server::tokens::{Role, Tokens};
use serde_json::json;

use crate::output::table;
use crate::{Ctx, Failure};

/// Manage the bearer tokens of `locksmith serve`.
///
/// Roles: viewer (reads), client (also acquires, renews and releases its
/// own grants by lease handle), admin (also force-releases, forces, and
/// releases by owner name). A running server reads the file again on SIGHUP.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Token file (default: $LOCKSMITH_HOME/tokens.json, as serve reads it).
    #[arg(long, value_name = "FILE", global = true)]
    tokens: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Make a token and print it once (only its hash is kept).
    Create {
        /// A name for people, unique in the file.
        #[arg(long)]
        name: String,
        /// viewer, client or admin.
        #[arg(long, value_parser = ["viewer", "client", "admin"])]
        role: String,
    },
    /// List the tokens (names and roles, never the tokens).
    List,
    /// Remove a token; a server stops taking it once it reloads (SIGHUP).
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// The token file of this configuration.
pub fn path(ctx: &Ctx, explicit: Option<&PathBuf>) -> PathBuf {
    explicit
        .cloned()
        .unwrap_or_else(|| ctx.config.home().join("tokens.json"))
}

/// Runs `token`.
pub fn run(ctx: &Ctx, a: Args) -> Result<(), Failure> {
    let file = path(ctx, a.tokens.as_ref());
    let mut tokens = Tokens::load(&file).map_err(Failure::error)?;
    match a.action {
        Action::Create { name, role } => {
            let role = Role::from_name(&role).expect("clap checked the role");
            let now = locksmith_core::Wall(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            )
            .rfc3339();
            let token = tokens
                .create(&name, role, &now)
                .map_err(|e| Failure::new(Code::Invalid, e))?;
            if ctx.json {
                crate::output::json(
                    &json!({ "name": name, "role": role, "token": token, "file": file }),
                );
            } else {
                out!("{token}");
                err!(
                    "token {name:?} ({}) saved in {}; it is shown only now. A running server takes it after SIGHUP.",
                    role.name(),
                    file.display()
                );
            }
        }
        Action::List => {
            if ctx.json {
                crate::output::json(&tokens.entries());
            } else if tokens.is_empty() {
                out!(
                    "no tokens in {}: serve trusts every caller, on loopback only",
                    file.display()
                );
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .entries()
                    .iter()
                    .map(|e| vec![e.name.clone(), e.role.name().into(), e.created_at.clone()])
                    .collect();
                table(&["NAME", "ROLE", "CREATED"], &rows);
            }
        }
        Action::Revoke { name } => {
            let gone = tokens.revoke(&name).map_err(Failure::error)?;
            if !gone {
                return Err(Failure::new(
                    Code::Invalid,
                    format!("no token named {name:?} in {}", file.display()),
                ));
            }
            if ctx.json {
                crate::output::json(&json!({ "revoked": name }));
            } else {
                out!("revoked {name}; send SIGHUP to a running server so that it stops taking it");
            }
        }
    }
    Ok(())
}
