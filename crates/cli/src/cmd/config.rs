//! `locksmith config`: the effective configuration and where each value came from.

use crate::output::{json, table};
use crate::{Ctx, Failure};

/// Print the effective configuration and each value's source.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print a commented example locksmith.toml instead.
    #[arg(long)]
    example: bool,
}

/// Runs `config`.
pub fn run(ctx: &Ctx, a: Args) -> Result<(), Failure> {
    if a.example {
        crate::output::write_out(format_args!("{}", locksmith::config::example()));
        return Ok(());
    }
    let rows = ctx.config.rows();
    if ctx.json {
        let obj: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(k, v, src, _)| {
                (
                    k.to_string(),
                    serde_json::json!({ "value": v, "source": src.to_string() }),
                )
            })
            .collect();
        json(&obj);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, v, src, _)| vec![k.to_string(), v, src.to_string()])
        .collect();
    table(&["SETTING", "VALUE", "SOURCE"], &rows);
    Ok(())
}
