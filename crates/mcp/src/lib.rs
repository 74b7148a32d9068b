//! `locksmith mcp`: the lock store as Model Context Protocol tools, so that
//! an AI coding agent takes and releases locks the way it calls any tool.
//!
//! One `locksmith mcp` process serves one agent session over stdio. Its
//! locks belong to that session: they are renewed while the session lives,
//! bound to this process on the embedded store (freed the moment it dies),
//! and released with reason `exited` when the session ends without
//! releasing them. A wait longer than one tool call is split into calls
//! that keep the queue place (see [`Settings::call_wait`]).
//!
//! The layout: [`session`] keeps what the session holds and waits for,
//! `tools` is the MCP surface (tools and resources), `args` the tools'
//! arguments with their schemas and descriptions, and `words` turns
//! answers into short sentences a model can act on.

mod args;
pub mod session;
mod tools;
mod words;

use std::sync::Arc;

pub use session::Settings;

/// Serves one agent session on standard input and output until the client
/// closes it, then releases the session's locks (reason `exited`) and
/// leaves its queues.
pub async fn serve_stdio(client: locksmith::Client, settings: Settings) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let session = Arc::new(session::Session::new(client, settings));
    let server = tools::Locksmith::new(session.clone());
    let watchdog = tokio::spawn(session.clone().watch());
    let result = match server.serve(rmcp::transport::stdio()).await {
        Ok(running) => running
            .waiting()
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from),
        Err(e) => Err(anyhow::Error::from(e).context("the MCP handshake failed")),
    };
    watchdog.abort();
    session.end().await;
    result
}
