use clap::Parser;

mod cli;

fn main() {
    // SAFETY: first thing in main, while the process has one thread.
    unsafe { abba::finetune::device::set_cpu_pool_defaults() };
    let args = cli::Cli::parse();
    if let Err(err) = cli::run(args) {
        // One line: the error and its causes, outermost first.
        let chain: Vec<String> = err.chain().map(|e| e.to_string()).collect();
        eprintln!("abba: error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
