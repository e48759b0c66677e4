//! `optical info`: backends compiled in and devices found.

use clap::Args;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> crate::Result<()> {
    let infos = crate::backend::probe_all();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "backends": infos })
        );
        return Ok(());
    }
    println!("optical {}", env!("CARGO_PKG_VERSION"));
    for info in infos {
        let state = match (info.compiled_in, info.available) {
            (false, _) => "not compiled in",
            (true, false) => "no device",
            (true, true) => "available",
        };
        println!("{:<14} {state}", info.backend);
        for dev in &info.devices {
            println!("    {dev}");
        }
        if !info.note.is_empty() {
            println!("    {}", info.note);
        }
    }
    Ok(())
}
