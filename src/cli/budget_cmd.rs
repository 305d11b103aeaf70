//! `abba budget`: what each method gets for a layer shape and a budget.

use anyhow::{Context, Result};
use clap::Args;

use abba::adapter::MethodKind;
use abba::budget::{AbbaRankRule, Budget, matched};

#[derive(Args, Debug)]
pub struct BudgetArgs {
    /// Layer shapes as OUTxIN (e.g. 2048x2048); repeat for several layers.
    #[arg(long = "shape", value_parser = parse_shape, required = true)]
    pub shapes: Vec<(usize, usize)>,
    /// LoRA rank whose parameter count is the budget.
    #[arg(long, conflicts_with = "params")]
    pub rank: Option<usize>,
    /// Parameter budget per layer.
    #[arg(long)]
    pub params: Option<usize>,
    /// ABBA rank rule: half (r1 = r2 = r/2, equal budget), full (r1 = r2 = r, the released code), or split:R1.
    #[arg(long, default_value = "half", value_parser = parse_rule)]
    pub rule: AbbaRankRule,
}

pub fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (m, n) = s
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("shape '{s}' must look like 1024x1024"))?;
    let m = m
        .trim()
        .parse()
        .map_err(|_| format!("rows in shape '{s}' are not a whole number"))?;
    let n = n
        .trim()
        .parse()
        .map_err(|_| format!("columns in shape '{s}' are not a whole number"))?;
    Ok((m, n))
}

pub fn parse_rule(s: &str) -> Result<AbbaRankRule, String> {
    s.parse().map_err(|e: abba::AbbaError| e.to_string())
}

pub fn run(args: BudgetArgs) -> Result<()> {
    let budget = match (args.rank, args.params) {
        (Some(r), _) => Budget::LoraRank(r),
        (None, Some(p)) => Budget::Params(p),
        (None, None) => anyhow::bail!("give a budget: --rank R (a LoRA rank) or --params P"),
    };
    println!(
        "{:<10} {:<12} {:<28} {:>14} {:>10}",
        "method", "shape", "configuration", "parameters", "max rank"
    );
    for kind in [
        MethodKind::Full,
        MethodKind::Lora,
        MethodKind::Hira,
        MethodKind::Abba,
    ] {
        for &shape in &args.shapes {
            let config = match matched(kind, budget, args.rule, shape) {
                Ok(c) => c,
                Err(e) if kind == MethodKind::Full => {
                    println!(
                        "{:<10} {:<12} {e}",
                        kind.name(),
                        format!("{}x{}", shape.0, shape.1)
                    );
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("{} on a {}x{} layer", kind.name(), shape.0, shape.1)
                    });
                }
            };
            println!(
                "{:<10} {:<12} {:<28} {:>14} {:>10}",
                kind.name(),
                format!("{}x{}", shape.0, shape.1),
                config.label(),
                config.num_params(shape),
                config.max_rank(shape)
            );
        }
    }
    Ok(())
}
