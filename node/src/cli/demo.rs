//! `eastwall demo`: the demo is an external subcommand, like git's.

/// `eastwall demo`: replaces this process with `eastwall-demo` (crate `eastwall-lab`) from
/// beside this binary, which starts its nodes with this binary (`EASTWALL_BIN`). The daemon
/// holds no test tooling. Returns only if that binary cannot be run.
pub(crate) fn run(keep: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding this binary")?;
    let demo = exe.with_file_name("eastwall-demo");
    if !demo.is_file() {
        anyhow::bail!(
            "the demo is not installed beside this binary ({} is missing): build it with `cargo build -p eastwall-lab --bin eastwall-demo`",
            demo.display()
        );
    }
    let mut cmd = std::process::Command::new(&demo);
    if keep {
        cmd.arg("--keep");
    }
    let err = cmd.env("EASTWALL_BIN", &exe).exec();
    Err(anyhow::Error::new(err).context(format!("running {}", demo.display())))
}
