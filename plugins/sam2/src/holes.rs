//! Filling of small holes in mask logits, as SAM 2's video predictor
//! does to every frame's low-resolution mask (`fill_holes_in_mask_scores`
//! with `fill_hole_area = 8`): background regions (logit <= 0) of at most
//! `max_area` pixels, 8-connected, become foreground with logit 0.1. The
//! official code computes the components with a CUDA kernel and skips the
//! step without one; this runs everywhere.

use tch::{Kind, Tensor};

/// Logit given to filled pixels.
const FILLED_LOGIT: f32 = 0.1;

/// Fills holes of at most `max_area` pixels in each `(h, w)` map of
/// `logits` `(N, 1, h, w)`.
pub(crate) fn fill_holes(logits: &Tensor, max_area: usize) -> Tensor {
    if max_area == 0 {
        return logits.shallow_clone();
    }
    let size = logits.size();
    let (h, w) = (size[2] as usize, size[3] as usize);
    let device = logits.device();
    let mut values =
        Vec::<f32>::try_from(logits.to_kind(Kind::Float).contiguous().view([-1])).expect("f32");
    for map in values.chunks_mut(h * w) {
        fill_map(map, h, w, max_area);
    }
    Tensor::from_slice(&values)
        .view(size.as_slice())
        .to_device(device)
}

/// A logit `<= 0`, as the official code tests it (NaN is not background).
fn is_background(logit: f32) -> bool {
    logit <= 0.0
}

/// Fills the small background components of one row-major map in place.
fn fill_map(map: &mut [f32], h: usize, w: usize, max_area: usize) {
    let mut seen = vec![false; h * w];
    let mut stack = vec![];
    let mut component = vec![];
    for start in 0..h * w {
        if seen[start] || !is_background(map[start]) {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        component.clear();
        while let Some(p) = stack.pop() {
            component.push(p);
            let (y, x) = ((p / w) as i64, (p % w) as i64);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (ny, nx) = (y + dy, x + dx);
                    if ny < 0 || nx < 0 || ny >= h as i64 || nx >= w as i64 {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
                    if !seen[q] && is_background(map[q]) {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
        }
        if component.len() <= max_area {
            for &p in &component {
                map[p] = FILLED_LOGIT;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_small_8_connected_holes_only() {
        // 12 x 12 foreground with a diagonal 2-pixel hole (one component
        // under 8-connectivity) and a 9-pixel hole (too big to fill).
        let mut map = vec![1.0f32; 12 * 12];
        let mut set = |y: usize, x: usize, v: f32| map[y * 12 + x] = v;
        set(2, 2, -1.0);
        set(3, 3, -0.5);
        for y in 6..9 {
            for x in 6..9 {
                set(y, x, -2.0);
            }
        }
        let t = Tensor::from_slice(&map).view([1, 1, 12, 12]);
        let filled = fill_holes(&t, 8);
        let v = |y: i64, x: i64| filled.double_value(&[0, 0, y, x]);
        assert_eq!(v(2, 2), 0.1f32 as f64);
        assert_eq!(v(3, 3), 0.1f32 as f64);
        assert_eq!(v(7, 7), -2.0);
        assert_eq!(v(0, 0), 1.0);
        assert!(fill_holes(&t, 0).equal(&t));
    }
}
