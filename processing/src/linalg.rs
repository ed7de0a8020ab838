//! Small dense linear algebra for the science code: solving the normal equations of its
//! fits, and the singular value decomposition that splits a 2-D kernel into separable
//! filters.

/// Solves the dense system `a` x = `b` by Gaussian elimination with partial pivoting.
pub fn solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
        if a[pivot * n + col].abs() < 1e-300 {
            return None;
        }
        if pivot != col {
            for c in 0..n {
                a.swap(pivot * n + c, col * n + c);
            }
            b.swap(pivot, col);
        }
        for row in col + 1..n {
            let f = a[row * n + col] / a[col * n + col];
            for c in col..n {
                a[row * n + c] -= f * a[col * n + c];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|c| a[row * n + c] * x[c]).sum();
        x[row] = (b[row] - s) / a[row * n + row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// The singular value decomposition of the m x n matrix `a` (row-major) by one-sided
/// Jacobi rotations (Hestenes): its columns are rotated in pairs until orthogonal, which
/// for the small matrices here (kernels of a few dozen pixels a side) converges in a few
/// sweeps to full precision. Returns the singular triplets (sigma, u of length m, v of
/// length n), largest sigma first, with a = sum of sigma u vᵀ.
pub fn svd(a: &[f64], m: usize, n: usize) -> Vec<(f64, Vec<f64>, Vec<f64>)> {
    assert_eq!(a.len(), m * n, "an m x n matrix");
    // Columns of the working matrix and of V, each contiguous.
    let mut cols: Vec<Vec<f64>> = (0..n)
        .map(|c| (0..m).map(|r| a[r * n + c]).collect())
        .collect();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|c| (0..n).map(|r| if r == c { 1.0 } else { 0.0 }).collect())
        .collect();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    let rotate = |x: &mut [f64], y: &mut [f64], c: f64, s: f64| {
        for (a, b) in x.iter_mut().zip(y.iter_mut()) {
            let (p, q) = (*a, *b);
            *a = c * p - s * q;
            *b = s * p + c * q;
        }
    };
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (alpha, beta) = (dot(&cols[p], &cols[p]), dot(&cols[q], &cols[q]));
                let gamma = dot(&cols[p], &cols[q]);
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                let (lo, hi) = cols.split_at_mut(q);
                rotate(&mut lo[p], &mut hi[0], c, s);
                let (lo, hi) = v.split_at_mut(q);
                rotate(&mut lo[p], &mut hi[0], c, s);
            }
        }
        if !rotated {
            break;
        }
    }
    let mut out: Vec<(f64, Vec<f64>, Vec<f64>)> = cols
        .into_iter()
        .zip(v)
        .map(|(c, v)| {
            let sigma = dot(&c, &c).sqrt();
            let u = if sigma > 0.0 {
                c.iter().map(|x| x / sigma).collect()
            } else {
                c
            };
            (sigma, u, v)
        })
        .collect();
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solver_solves() {
        let x = solve(vec![2.0, 1.0, 1.0, 3.0], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert!(solve(vec![1.0, 2.0, 2.0, 4.0], vec![1.0, 1.0]).is_none());
    }

    #[test]
    fn svd_rebuilds_the_matrix_from_orthonormal_factors() {
        // A 3 x 4 matrix of rank 2 plus a small third component.
        let (m, n) = (3, 4);
        let a: Vec<f64> = (0..m * n)
            .map(|k| {
                let (r, c) = ((k / n) as f64, (k % n) as f64);
                (r + 1.0) * (c - 1.5) + (r - c).powi(2) * 0.3 + 1e-3 * (r * c).sin()
            })
            .collect();
        let t = svd(&a, m, n);
        assert_eq!(t.len(), n);
        assert!(t.windows(2).all(|w| w[0].0 >= w[1].0));
        for r in 0..m {
            for c in 0..n {
                let back: f64 = t.iter().map(|(s, u, v)| s * u[r] * v[c]).sum();
                assert!(
                    (back - a[r * n + c]).abs() < 1e-12,
                    "{back} vs {}",
                    a[r * n + c]
                );
            }
        }
        // Orthonormal right factors; left factors orthonormal where sigma > 0.
        for i in 0..n {
            for j in 0..n {
                let d: f64 = t[i].2.iter().zip(&t[j].2).map(|(a, b)| a * b).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        for i in 0..m {
            for j in 0..m {
                let d: f64 = t[i].1.iter().zip(&t[j].1).map(|(a, b)| a * b).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10);
            }
        }
        // At most min(m, n) non-zero singular values.
        assert!(t[3].0 < 1e-12);
    }
}
