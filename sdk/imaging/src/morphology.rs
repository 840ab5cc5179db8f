//! Binary morphology with a full 3x3x3 (or 3x3) structuring element.
//! Outside the volume counts as background, as in SciPy's
//! `binary_erosion`/`binary_opening` with the default `border_value=0`.

use crate::{offsets_3d, Connectivity, Dims3};

fn neighbours_all(mask: &[u8], dims: Dims3, i: usize, offsets: &[[isize; 3]], want: u8) -> bool {
    let [nx, ny, nz] = dims;
    let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
    offsets.iter().all(|d| {
        let (xx, yy, zz) = (x as isize + d[0], y as isize + d[1], z as isize + d[2]);
        let inside = xx >= 0
            && yy >= 0
            && zz >= 0
            && xx < nx as isize
            && yy < ny as isize
            && zz < nz as isize;
        let v = if inside {
            u8::from(mask[xx as usize + nx * (yy as usize + ny * zz as usize)] != 0)
        } else {
            0
        };
        v == want
    })
}

/// Offsets of the element for a volume: full 3x3x3, or full 3x3 in-plane
/// when the volume has a single slice (2D images).
fn element(dims: Dims3) -> Vec<[isize; 3]> {
    let all = offsets_3d(Connectivity::Full);
    if dims[2] == 1 {
        all.into_iter().filter(|d| d[2] == 0).collect()
    } else {
        all
    }
}

/// Erosion: a voxel stays set when it and all its neighbours are set.
pub fn erode(mask: &[u8], dims: Dims3) -> Vec<u8> {
    let offsets = element(dims);
    (0..mask.len())
        .map(|i| u8::from(mask[i] != 0 && neighbours_all(mask, dims, i, &offsets, 1)))
        .collect()
}

/// Dilation: a voxel is set when it or any neighbour is set.
pub fn dilate(mask: &[u8], dims: Dims3) -> Vec<u8> {
    let offsets = element(dims);
    (0..mask.len())
        .map(|i| u8::from(mask[i] != 0 || !neighbours_all(mask, dims, i, &offsets, 0)))
        .collect()
}

/// Opening (erosion then dilation): removes structures thinner than the element.
pub fn opening(mask: &[u8], dims: Dims3) -> Vec<u8> {
    dilate(&erode(mask, dims), dims)
}

/// Closing (dilation then erosion): fills gaps thinner than the element.
pub fn closing(mask: &[u8], dims: Dims3) -> Vec<u8> {
    erode(&dilate(mask, dims), dims)
}

/// Fills background regions of a 2D mask not connected (4-connectivity)
/// to the image border.
pub fn fill_holes_2d(mask: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut outside = vec![false; mask.len()];
    let mut stack: Vec<usize> = Vec::new();
    for x in 0..width {
        stack.push(x);
        stack.push(x + width * (height - 1));
    }
    for y in 0..height {
        stack.push(width * y);
        stack.push(width - 1 + width * y);
    }
    while let Some(i) = stack.pop() {
        if mask[i] != 0 || outside[i] {
            continue;
        }
        outside[i] = true;
        let (x, y) = (i % width, i / width);
        if x > 0 {
            stack.push(i - 1);
        }
        if x + 1 < width {
            stack.push(i + 1);
        }
        if y > 0 {
            stack.push(i - width);
        }
        if y + 1 < height {
            stack.push(i + width);
        }
    }
    outside.iter().map(|&o| u8::from(!o)).collect()
}

/// Fills background regions of a volume not connected (face
/// connectivity) to the volume's border: SciPy's `binary_fill_holes`
/// in 3D.
pub fn fill_holes_3d(mask: &[u8], dims: Dims3) -> Vec<u8> {
    let [nx, ny, nz] = dims;
    assert_eq!(mask.len(), nx * ny * nz, "mask does not match dims");
    let on_border = |x: usize, y: usize, z: usize| {
        x == 0 || y == 0 || z == 0 || x + 1 == nx || y + 1 == ny || z + 1 == nz
    };
    let mut outside = vec![false; mask.len()];
    let mut stack: Vec<usize> = Vec::new();
    for (i, &m) in mask.iter().enumerate() {
        if m == 0 && on_border(i % nx, (i / nx) % ny, i / (nx * ny)) {
            outside[i] = true;
            stack.push(i);
        }
    }
    let offsets = offsets_3d(Connectivity::Face);
    while let Some(i) = stack.pop() {
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
            if mask[j] == 0 && !outside[j] {
                outside[j] = true;
                stack.push(j);
            }
        }
    }
    outside.iter().map(|&o| u8::from(!o)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_removes_thin_lines_and_keeps_blocks() {
        let dims = [7, 7, 7];
        let mut m = vec![0u8; 343];
        let idx = |x: usize, y: usize, z: usize| x + 7 * (y + 7 * z);
        for z in 1..4 {
            for y in 1..4 {
                for x in 1..4 {
                    m[idx(x, y, z)] = 1;
                }
            }
        }
        for x in 0..7 {
            m[idx(x, 6, 6)] = 1; // a one-voxel line
        }
        let o = opening(&m, dims);
        assert_eq!(o.iter().filter(|&&v| v == 1).count(), 27);
        assert_eq!(o[idx(2, 2, 2)], 1);
        assert_eq!(o[idx(3, 6, 6)], 0);
    }

    #[test]
    fn fills_enclosed_holes_only() {
        #[rustfmt::skip]
        let m = [
            1, 1, 1, 0,
            1, 0, 1, 0,
            1, 1, 1, 0,
        ];
        let f = fill_holes_2d(&m, 4, 3);
        assert_eq!(f[5], 1);
        assert_eq!(f[3], 0);
    }

    #[test]
    fn fills_enclosed_cavities_in_3d_only() {
        let dims = [5, 5, 5];
        let idx = |x: usize, y: usize, z: usize| x + 5 * (y + 5 * z);
        // A hollow 3 x 3 x 3 shell with its centre empty, and a cup open
        // to the border at x = 4.
        let mut m = vec![0u8; 125];
        for z in 0..3 {
            for y in 0..3 {
                for x in 0..3 {
                    m[idx(x, y, z)] = u8::from((x, y, z) != (1, 1, 1));
                }
            }
        }
        for z in 1..4 {
            for y in 1..4 {
                m[idx(3, y, z)] |= 1;
            }
        }
        let f = fill_holes_3d(&m, dims);
        assert_eq!(f[idx(1, 1, 1)], 1, "the enclosed centre is filled");
        assert_eq!(f[idx(4, 2, 2)], 0, "border background stays");
        assert_eq!(f[idx(4, 4, 4)], 0);
        assert_eq!(
            f.iter().map(|&v| v as usize).sum::<usize>(),
            m.iter().map(|&v| v as usize).sum::<usize>() + 1
        );
    }
}
