//! Small-sample statistics for comparisons over seeds: mean, sample standard deviation, Student-t intervals and
//! the paired t-test. Pure functions on slices; the t distribution goes through the regularized incomplete beta
//! function (Lentz's continued fraction), and its quantiles by bisection on that CDF, so no table is needed.

/// Arithmetic mean; NaN for an empty slice.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator); NaN below two values.
pub fn sample_sd(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (xs.len() - 1) as f64).sqrt()
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; about 15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b), a, b > 0, x in [0, 1].
pub fn inc_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(1.0 - x, b, a) / b
    }
}

/// The continued fraction of I_x(a, b), evaluated by the modified Lentz method.
fn beta_cf(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// P(T ≤ t) for Student's t with `df` > 0 degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    let tail = 0.5 * inc_beta(df / (df + t * t), 0.5 * df, 0.5);
    if t > 0.0 { 1.0 - tail } else { tail }
}

/// The two-sided p-value of a t statistic: P(|T| ≥ |t|).
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    inc_beta(df / (df + t * t), 0.5 * df, 0.5)
}

/// The quantile t_{p, df}: the t with P(T ≤ t) = p, for 0 < p < 1 (bisection to machine precision).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if !(p > 0.0 && p < 1.0 && df > 0.0) {
        return f64::NAN;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while t_cdf(hi, df) < p {
        hi *= 2.0;
        if hi > 1e300 {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-15 * hi.max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// Mean, spread and a two-sided Student-t confidence interval of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    /// Half-width t_{1−α/2, n−1} · sd / √n (NaN below two values).
    pub half_width: f64,
}

impl Interval {
    pub fn low(&self) -> f64 {
        self.mean - self.half_width
    }
    pub fn high(&self) -> f64 {
        self.mean + self.half_width
    }
}

/// The `level` (e.g. 0.95) Student-t interval of the mean of `xs`.
pub fn t_interval(xs: &[f64], level: f64) -> Interval {
    let n = xs.len();
    let (m, sd) = (mean(xs), sample_sd(xs));
    let half_width = if n < 2 {
        f64::NAN
    } else {
        t_quantile(0.5 + 0.5 * level, (n - 1) as f64) * sd / (n as f64).sqrt()
    };
    Interval {
        n,
        mean: m,
        sd,
        half_width,
    }
}

/// A paired t-test of `a − b` (pairs by position): the interval of the mean difference and its two-sided
/// p-value against 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairedTest {
    pub diff: Interval,
    pub t: f64,
    pub p: f64,
}

/// Paired differences a_i − b_i, their `level` interval and the two-sided p-value of H0: mean difference 0.
/// With all differences equal the statistic is ±∞ (p = 0) unless they are all 0 (p = 1).
pub fn paired_t_test(a: &[f64], b: &[f64], level: f64) -> PairedTest {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let diff = t_interval(&d, level);
    let n = d.len();
    let (t, p) = if n < 2 {
        (f64::NAN, f64::NAN)
    } else if diff.sd == 0.0 {
        if diff.mean == 0.0 {
            (0.0, 1.0)
        } else {
            (diff.mean.signum() * f64::INFINITY, 0.0)
        }
    } else {
        let t = diff.mean / (diff.sd / (n as f64).sqrt());
        (t, t_two_sided_p(t, (n - 1) as f64))
    };
    PairedTest { diff, t, p }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    #[test]
    fn t_quantiles_match_published_values() {
        close(t_quantile(0.975, 1.0), 12.706_204_736, 1e-6);
        close(t_quantile(0.975, 2.0), 4.302_652_730, 1e-6);
        close(t_quantile(0.975, 4.0), 2.776_445_105, 1e-6);
        close(t_quantile(0.975, 30.0), 2.042_272_456, 1e-6);
        close(t_quantile(0.95, 9.0), 1.833_112_933, 1e-6);
        close(t_quantile(0.025, 4.0), -2.776_445_105, 1e-6);
    }

    #[test]
    fn t_cdf_matches_closed_forms() {
        // df = 1 is Cauchy: 1/2 + atan(t)/π; df = 2: 1/2 + t / (2√(2 + t²)).
        for t in [-7.5, -1.3, -0.2, 0.0, 0.4, 1.0, 3.7, 40.0] {
            let cauchy = 0.5 + f64::atan(t) / std::f64::consts::PI;
            close(t_cdf(t, 1.0), cauchy, 1e-12);
            close(t_cdf(t, 2.0), 0.5 + t / (2.0 * (2.0 + t * t).sqrt()), 1e-12);
        }
        // df = 2 inverts in closed form: t_p = (2p − 1) √(2 / (4p(1 − p))).
        for p in [0.6f64, 0.9, 0.975, 0.999] {
            let exact = (2.0 * p - 1.0) * (2.0 / (4.0 * p * (1.0 - p))).sqrt();
            close(t_quantile(p, 2.0), exact, 1e-9);
        }
    }

    #[test]
    fn ln_gamma_matches_factorials_and_sqrt_pi() {
        close(ln_gamma(1.0), 0.0, 1e-13);
        close(ln_gamma(5.0), 24f64.ln(), 1e-12);
        close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-12);
        close(ln_gamma(10.5), 1_133_278.388_7f64.ln(), 1e-9);
    }

    #[test]
    fn interval_of_a_known_sample() {
        // 1..=5: mean 3, sd √2.5; half-width t_{0.975,4} · √2.5 / √5 = 2.776445 · 0.707107.
        let iv = t_interval(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95);
        close(iv.mean, 3.0, 1e-15);
        close(iv.sd, 2.5f64.sqrt(), 1e-15);
        close(iv.half_width, 2.776_445_105 * 0.5f64.sqrt(), 1e-8);
        assert!(t_interval(&[1.0], 0.95).half_width.is_nan());
        assert!(mean(&[]).is_nan());
    }

    #[test]
    fn paired_test_matches_hand_computation() {
        // Differences 1, 2, 3: mean 2, sd 1, t = 2√3 with 2 df; p = 1 − 2·(t / (2√(2 + t²))) in closed form.
        let a = [11.0, 12.0, 13.0];
        let b = [10.0, 10.0, 10.0];
        let test = paired_t_test(&a, &b, 0.95);
        let t = 2.0 * 3f64.sqrt();
        close(test.t, t, 1e-12);
        close(test.p, 1.0 - t / (2.0 + t * t).sqrt(), 1e-12);
        close(test.diff.half_width, 4.302_652_730 / 3f64.sqrt(), 1e-8);
        // Identical samples: no difference, p = 1; a constant shift: p = 0.
        assert_eq!(paired_t_test(&a, &a, 0.95).p, 1.0);
        assert_eq!(paired_t_test(&a, &[10.0, 11.0, 12.0], 0.95).p, 0.0);
    }
}
