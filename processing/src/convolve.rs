//! The inner loops of every convolution pass (difference imaging's kernels and
//! decorrelation, detection's matched filter): a line correlated with a few dozen taps, and
//! lines combined with a weight each. Each output pixel's taps are summed in registers, 64
//! pixels at a time in independent accumulators so the multiply-adds overlap; on a CPU
//! with AVX2 and FMA (found at run time, so one build serves every x86-64 machine) the same
//! code is compiled for those instructions, which alert production's latency budget
//! (DMS-REQ-0004) needs: the portable build's four-lane SSE2 runs these loops at a third
//! of the speed.

/// Pixels summed at once: eight AVX2 registers of accumulators.
const LANES: usize = 64;

/// `out[i] = (out[i] if add) + sum over k of taps[k] * line[i + k]`: a correlation of
/// `line` with `taps`, `line` reaching `taps.len() - 1` pixels past `out`'s end. It is
/// [`combine_lines`] over the line shifted by each tap.
pub fn correlate_line(out: &mut [f32], line: &[f32], taps: &[f32], add: bool) {
    assert!(
        taps.is_empty() || line.len() + 1 >= out.len() + taps.len(),
        "the line covers the taps' reach"
    );
    let shifted: Vec<&[f32]> = (0..taps.len()).map(|k| &line[k..]).collect();
    combine_lines(out, &shifted, taps, add)
}

/// `out[i] = (out[i] if add) + sum over t of weights[t] * lines[t][i]`.
pub fn combine_lines(out: &mut [f32], lines: &[&[f32]], weights: &[f32], add: bool) {
    assert_eq!(lines.len(), weights.len(), "a weight per line");
    assert!(
        lines.iter().all(|l| l.len() >= out.len()),
        "lines as long as the output"
    );
    #[cfg(target_arch = "x86_64")]
    if fma_available() {
        // SAFETY: the CPU has AVX2 and FMA, which is all the function is compiled for.
        return unsafe { combine_fma(out, lines, weights, add) };
    }
    combine::<false>(out, lines, weights, add)
}

/// Whether the CPU runs the AVX2+FMA builds of these loops (and of the warp's).
#[cfg(target_arch = "x86_64")]
pub(crate) fn fma_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn combine_fma(out: &mut [f32], lines: &[&[f32]], weights: &[f32], add: bool) {
    combine::<true>(out, lines, weights, add)
}

/// a * b + c, fused where the instruction exists (without it, `mul_add` would be a call).
#[inline(always)]
pub(crate) fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// The body of every pass: chunks of 64 pixels, then of 8 (short lines, such as a
/// stamp's, are all tail), then one at a time.
#[inline(always)]
fn combine<const FUSED: bool>(out: &mut [f32], lines: &[&[f32]], weights: &[f32], add: bool) {
    let done = combine_chunks::<FUSED, LANES>(out, lines, weights, add, 0);
    let done = combine_chunks::<FUSED, 8>(out, lines, weights, add, done);
    combine_chunks::<FUSED, 1>(out, lines, weights, add, done);
}

#[inline(always)]
fn combine_chunks<const FUSED: bool, const L: usize>(
    out: &mut [f32],
    lines: &[&[f32]],
    weights: &[f32],
    add: bool,
    from: usize,
) -> usize {
    let n = (out.len() - from) / L * L;
    for (c, o) in out[from..from + n].chunks_exact_mut(L).enumerate() {
        let start = from + c * L;
        let mut acc = [0.0f32; L];
        if add {
            acc.copy_from_slice(o);
        }
        for (line, w) in lines.iter().zip(weights) {
            let s: &[f32; L] = line[start..start + L].try_into().expect("a chunk");
            for l in 0..L {
                acc[l] = madd::<FUSED>(*w, s[l], acc[l]);
            }
        }
        o.copy_from_slice(&acc);
    }
    from + n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32) * 0.25 - 7.0)
            .collect()
    }

    #[test]
    fn correlation_sums_the_taps_over_the_line_on_every_path() {
        let taps = [0.1f32, -0.5, 2.0, 0.25, 1.5];
        // Lengths around the chunk size, so the chunked body and the tail both count.
        for n in [0, 1, 63, 64, 65, 200] {
            let src = line(n + taps.len() - 1);
            let mut out = vec![1.0f32; n];
            correlate_line(&mut out, &src, &taps, true);
            let mut fresh = vec![9.0f32; n];
            correlate_line(&mut fresh, &src, &taps, false);
            let portable = {
                let mut o = vec![0.0f32; n];
                let shifted: Vec<&[f32]> = (0..taps.len()).map(|k| &src[k..]).collect();
                combine::<false>(&mut o, &shifted, &taps, false);
                o
            };
            for i in 0..n {
                let want: f32 = taps.iter().enumerate().map(|(k, t)| t * src[i + k]).sum();
                assert!(
                    (fresh[i] - want).abs() < 1e-4,
                    "{n} {i}: {} vs {want}",
                    fresh[i]
                );
                assert!((out[i] - 1.0 - want).abs() < 1e-4);
                assert!((portable[i] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn combination_weights_each_line() {
        for n in [3, 64, 130] {
            let (a, b) = (line(n), line(n + 5));
            let mut out = vec![2.0f32; n];
            combine_lines(&mut out, &[&a, &b[5..]], &[0.5, -2.0], true);
            for i in 0..n {
                let want = 2.0 + 0.5 * a[i] - 2.0 * b[i + 5];
                assert!((out[i] - want).abs() < 1e-4);
            }
            combine_lines(&mut out, &[&a], &[1.0], false);
            assert_eq!(out, a);
        }
    }

    #[test]
    #[should_panic(expected = "the line covers the taps' reach")]
    fn a_short_line_is_refused() {
        correlate_line(&mut [0.0; 10], &[0.0; 11], &[1.0, 1.0, 1.0], false);
    }
}
