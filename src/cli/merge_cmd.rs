//! `abba merge`: join the shards of a study into one results file (and report on it).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Result files or directories (every results*.csv inside is taken).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The merged file, e.g. results/fig2/results.csv.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Also write plots and summary.md next to the merged file.
    #[arg(long)]
    pub report: bool,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let mut files = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    name.starts_with("results") && name.ends_with(".csv") && p != &args.out
                })
                .collect();
            found.sort();
            anyhow::ensure!(
                !found.is_empty(),
                "{} holds no results*.csv file to merge",
                input.display()
            );
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    // A comparison's shards (abba compare) have their own schema; everything else is a study's.
    let comparison = files
        .first()
        .is_some_and(|f| abba::compare::store::is_comparison_file(f));
    let (rows, dropped) = if comparison {
        abba::compare::store::merge_files(&files, &args.out)?
    } else {
        abba::study::store::merge_files(&files, &args.out)?
    };
    println!(
        "merged {} files: {rows} runs, {dropped} duplicate rows dropped → {}",
        files.len(),
        args.out.display()
    );
    if args.report
        && let Some(dir) = args.out.parent()
    {
        let written = if comparison {
            abba::compare::write_reports(dir)?
        } else {
            abba::report::write_study_reports(dir)?
        };
        for path in written {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
