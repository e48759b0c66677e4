//! `optical info`: backends compiled in, devices found, and the kernel settings read from
//! the environment.

use clap::Args;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> crate::Result<()> {
    let infos = crate::backend::probe_all();
    let settings = crate::backend::settings();
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "backends": infos,
                "settings": settings,
            })
        );
        return Ok(());
    }
    outln!("optical {}", env!("CARGO_PKG_VERSION"));
    for info in infos {
        let state = match (info.compiled_in, info.available) {
            (false, _) => "not compiled in",
            // Devices found, yet unusable: the note says why (an invalid setting).
            (true, false) if !info.devices.is_empty() => "unusable",
            (true, false) => "no device",
            (true, true) => "available",
        };
        outln!("{:<14} {state}", info.backend);
        for dev in &info.devices {
            outln!("    {dev}");
        }
        if !info.note.is_empty() {
            outln!("    {}", info.note);
        }
    }
    outln!(
        "settings (environment variable: the choice in effect; every choice, the default first)"
    );
    let width = settings.iter().map(|s| s.variable.len()).max().unwrap_or(0);
    for s in &settings {
        let choices = s.choices.join(", ");
        match (s.value, &s.error) {
            (Some(value), _) => {
                let how = if s.set { "set" } else { "default" };
                outln!("    {:<width$}  {value} ({how}; {choices})", s.variable);
            }
            (None, error) => outln!(
                "    {:<width$}  INVALID: {}",
                s.variable,
                error.as_deref().unwrap_or("not a choice")
            ),
        }
    }
    Ok(())
}
