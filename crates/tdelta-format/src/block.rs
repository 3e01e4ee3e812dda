//! Cutting a tensor (or any byte run) into element-aligned blocks.

/// Default raw block size in bytes. Chosen by measurement (see README).
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// Smallest block size a store accepts.
pub const MIN_BLOCK_SIZE: u32 = 4 << 10;
/// Largest block size a store accepts.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;

/// The byte step between blocks of a segment whose elements are `align`
/// bytes: the block size rounded down to whole elements.
pub fn step(block_size: u32, align: usize) -> u64 {
    let align = align.max(1) as u64;
    (u64::from(block_size) / align).max(1) * align
}

/// Number of blocks of a `len`-byte segment.
pub fn count(len: u64, block_size: u32, align: usize) -> u64 {
    len.div_ceil(step(block_size, align))
}

/// The `(offset, len)` of every block of a `len`-byte segment, relative to
/// the segment start.
pub fn ranges(len: u64, block_size: u32, align: usize) -> impl Iterator<Item = (u64, u64)> {
    let step = step(block_size, align);
    (0..len.div_ceil(step)).map(move |i| {
        let off = i * step;
        (off, step.min(len - off))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_tile_the_segment_on_element_boundaries() {
        for (len, bs, align) in
            [(0u64, 4096u32, 2usize), (10, 4096, 2), (8192, 4096, 2), (8193, 4096, 1), (12_000, 4096, 6)]
        {
            let r: Vec<_> = ranges(len, bs, align).collect();
            assert_eq!(r.len() as u64, count(len, bs, align));
            let mut at = 0;
            for (off, l) in &r {
                assert_eq!(*off, at);
                assert!(*l > 0);
                assert_eq!(off % align as u64, 0);
                at += l;
            }
            assert_eq!(at, len);
        }
        assert_eq!(step(4096, 6), 4092);
    }
}
