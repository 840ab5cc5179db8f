//! Connected-component labelling and component filters.

use crate::{offsets_3d, Connectivity, Dims3};

/// Labelled components: `labels[i]` is 0 for background or `k` in
/// `1..=sizes.len()`; `sizes[k - 1]` is the voxel count of component `k`.
#[derive(Debug, Clone, PartialEq)]
pub struct Components {
    /// Component label per voxel.
    pub labels: Vec<u32>,
    /// Voxel count per component.
    pub sizes: Vec<usize>,
}

/// Labels the connected components of the nonzero voxels of a volume.
pub fn label_3d(mask: &[u8], dims: Dims3, connectivity: Connectivity) -> Components {
    let [nx, ny, nz] = dims;
    assert_eq!(mask.len(), nx * ny * nz, "mask does not match dims");
    let offsets = offsets_3d(connectivity);
    let mut labels = vec![0u32; mask.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if mask[start] == 0 || labels[start] != 0 {
            continue;
        }
        let label = sizes.len() as u32 + 1;
        labels[start] = label;
        stack.push(start);
        let mut size = 0usize;
        while let Some(i) = stack.pop() {
            size += 1;
            let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
            for d in &offsets {
                let (xx, yy, zz) = (x as isize + d[0], y as isize + d[1], z as isize + d[2]);
                if xx < 0
                    || yy < 0
                    || zz < 0
                    || xx >= nx as isize
                    || yy >= ny as isize
                    || zz >= nz as isize
                {
                    continue;
                }
                let j = xx as usize + nx * (yy as usize + ny * zz as usize);
                if mask[j] != 0 && labels[j] == 0 {
                    labels[j] = label;
                    stack.push(j);
                }
            }
        }
        sizes.push(size);
    }
    Components { labels, sizes }
}

/// Labels the connected components of a 2D mask (`width x height`).
pub fn label_2d(
    mask: &[u8],
    width: usize,
    height: usize,
    connectivity: Connectivity,
) -> Components {
    // A 2D image is a volume with one slice; face connectivity in 3D
    // restricted to one slice is 4-connectivity, full is 8-connectivity.
    label_3d(mask, [width, height, 1], connectivity)
}

/// Keeps only the largest component (ties: the first found). Empty in, empty out.
pub fn largest_component(mask: &[u8], dims: Dims3, connectivity: Connectivity) -> Vec<u8> {
    keep_components(
        mask,
        dims,
        connectivity,
        |size, largest| size == largest,
        true,
    )
}

/// Keeps the components whose size is at least `fraction` of the largest
/// one (CLISC keeps components of at least 1/3 of the largest).
pub fn keep_at_least_fraction_of_largest(
    mask: &[u8],
    dims: Dims3,
    connectivity: Connectivity,
    fraction: f64,
) -> Vec<u8> {
    keep_components(
        mask,
        dims,
        connectivity,
        |size, largest| size as f64 >= fraction * largest as f64,
        false,
    )
}

/// Keeps the `n` largest components (ties: the first found); `n = 0`
/// keeps nothing. Used to clean stacked slice masks of stray islands.
pub fn keep_largest_n(mask: &[u8], dims: Dims3, connectivity: Connectivity, n: usize) -> Vec<u8> {
    let comps = label_3d(mask, dims, connectivity);
    let mut order: Vec<usize> = (0..comps.sizes.len()).collect();
    // Stable: equal sizes keep their discovery order.
    order.sort_by(|&a, &b| comps.sizes[b].cmp(&comps.sizes[a]));
    let mut kept = vec![false; comps.sizes.len() + 1];
    for &k in order.iter().take(n) {
        kept[k + 1] = true;
    }
    mask_of_kept(&comps, &kept)
}

fn keep_components(
    mask: &[u8],
    dims: Dims3,
    connectivity: Connectivity,
    keep: impl Fn(usize, usize) -> bool,
    only_one: bool,
) -> Vec<u8> {
    let comps = label_3d(mask, dims, connectivity);
    let Some(&largest) = comps.sizes.iter().max() else {
        return vec![0; mask.len()];
    };
    let mut kept = vec![false; comps.sizes.len() + 1];
    for (k, &size) in comps.sizes.iter().enumerate() {
        if keep(size, largest) {
            kept[k + 1] = true;
            if only_one {
                break;
            }
        }
    }
    mask_of_kept(&comps, &kept)
}

/// The binary mask of the components `k` with `kept[k]` (index 0 unused).
fn mask_of_kept(comps: &Components, kept: &[bool]) -> Vec<u8> {
    comps
        .labels
        .iter()
        .map(|&l| u8::from(l != 0 && kept[l as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_and_full_connectivity_differ_on_diagonals() {
        // Two voxels touching only by a corner.
        let dims = [2, 2, 2];
        let mut m = vec![0u8; 8];
        m[0] = 1;
        m[7] = 1;
        assert_eq!(label_3d(&m, dims, Connectivity::Face).sizes, vec![1, 1]);
        assert_eq!(label_3d(&m, dims, Connectivity::Full).sizes, vec![2]);
    }

    #[test]
    fn filters_small_components() {
        let dims = [10, 1, 1];
        let m = [1, 1, 1, 1, 1, 1, 0, 1, 1, 0 /* sizes 6 and 2 */];
        assert_eq!(
            largest_component(&m, dims, Connectivity::Full),
            vec![1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
        );
        assert_eq!(
            keep_at_least_fraction_of_largest(&m, dims, Connectivity::Full, 1.0 / 3.0),
            m.to_vec()
        );
        assert_eq!(
            keep_at_least_fraction_of_largest(&m, dims, Connectivity::Full, 0.5)[7],
            0
        );
        assert_eq!(
            largest_component(&[0; 4], [4, 1, 1], Connectivity::Full),
            vec![0; 4]
        );
    }

    #[test]
    fn keeps_the_n_largest_components() {
        let dims = [12, 1, 1];
        // sizes 2, 3, 1, 3 (in discovery order)
        let m = [1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1];
        let keep = |n| keep_largest_n(&m, dims, Connectivity::Face, n);
        assert_eq!(keep(0), vec![0; 12]);
        assert_eq!(keep(1), vec![0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(keep(2), vec![0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]);
        assert_eq!(keep(3), vec![1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]);
        assert_eq!(keep(9), m.to_vec());
        assert_eq!(
            keep_largest_n(&[0; 3], [3, 1, 1], Connectivity::Full, 2),
            vec![0; 3]
        );
    }
}
