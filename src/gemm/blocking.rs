//! Cache sizes (read once from the OS, with defaults) and the MC / NC block
//! sizes derived from them. KC is not here: it is fixed by the
//! reproducibility rule (see `gemm::KC`).

use std::sync::OnceLock;

use super::KC;

/// Data cache sizes in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheSizes {
    pub l1: usize,
    pub l2: usize,
    pub l3: usize,
}

/// Used where the OS does not tell: Zen 3 / Skylake-class sizes (32 KiB L1d,
/// 512 KiB L2 per core, 8 MiB of L3 per core pair).
const DEFAULT_CACHES: CacheSizes = CacheSizes { l1: 32 << 10, l2: 512 << 10, l3: 8 << 20 };

/// The data (or unified) cache sizes of cpu0, from Linux sysfs, once.
pub(crate) fn cache_sizes() -> CacheSizes {
    static SIZES: OnceLock<CacheSizes> = OnceLock::new();
    *SIZES.get_or_init(|| read_sysfs().unwrap_or(DEFAULT_CACHES))
}

fn read_sysfs() -> Option<CacheSizes> {
    let mut sizes = DEFAULT_CACHES;
    let mut found = false;
    for index in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let Ok(kind) = std::fs::read_to_string(format!("{dir}/type")) else {
            break;
        };
        if kind.trim() == "Instruction" {
            continue;
        }
        let level: usize = std::fs::read_to_string(format!("{dir}/level")).ok()?.trim().parse().ok()?;
        let size = parse_size(&std::fs::read_to_string(format!("{dir}/size")).ok()?)?;
        match level {
            1 => sizes.l1 = size,
            2 => sizes.l2 = size,
            3 => sizes.l3 = size,
            _ => continue,
        }
        found = true;
    }
    found.then_some(sizes)
}

/// "32K", "512K", "32768K", "8M" -> bytes.
fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (digits, unit) = match t.as_bytes().last()? {
        b'K' => (&t[..t.len() - 1], 1 << 10),
        b'M' => (&t[..t.len() - 1], 1 << 20),
        b'G' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit).filter(|&s| s > 0)
}

/// The largest A block: on Zen 5 (1 MiB L2) a 1024³ product ran ~10 %
/// faster with 256 KiB blocks (256 rows) than with half of L2 (512 rows);
/// 512³ and 2048³ were unchanged.
const MC_BYTES_MAX: usize = 256 << 10;

/// Block sizes of the ic and jc loops for a kernel with tile `mr × nr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocking {
    /// Rows of A packed per ic block: `MC·KC·4` bytes is about half of L2,
    /// leaving the other half for the B micro-panels and C, and at most
    /// [`MC_BYTES_MAX`].
    pub mc: usize,
    /// Columns of B packed per jc block: `KC·NC·4` bytes is a quarter of L3
    /// (L3 is shared; the rest serves the other core and C).
    pub nc: usize,
    /// Columns of B per block when the rows fit one ic block: `KC·NC·4`
    /// bytes is a quarter of L2, so the block is packed and read from L2.
    pub nc_narrow: usize,
    /// The L2 size the blocks were derived from, in bytes.
    pub l2: usize,
    /// The L3 size, in bytes.
    pub l3: usize,
}

impl Blocking {
    pub(crate) fn new(caches: CacheSizes, mr: usize, nr: usize) -> Self {
        let row_bytes = KC * std::mem::size_of::<f32>();
        let mc = ((caches.l2 / 2).min(MC_BYTES_MAX) / row_bytes / mr).clamp(1, 64) * mr;
        let nc = (caches.l3 / 4 / row_bytes / nr).clamp(16, 1024) * nr;
        let nc_narrow = (caches.l2 / 4 / row_bytes / nr).clamp(1, 64) * nr;
        Blocking { mc, nc, nc_narrow, l2: caches.l2, l3: caches.l3 }
    }

    /// [`Blocking::nc_narrow`] for a product of `k` rows of B: the same
    /// bytes (a quarter of L2) hold more columns when `k` is under [`KC`]
    /// (the first layer 3 → 32, 3×3 stride 2 on 224²: K = 27, 2,432
    /// columns a block instead of 256, so the image's rows are copied into
    /// bands a tenth as often: 177 -> 148 µs on Zen 5, 1 thread).
    pub(crate) fn nc_narrow_for(&self, k: usize, nr: usize) -> usize {
        let rows = k.clamp(1, KC);
        (self.nc_narrow * KC / rows).div_ceil(nr).clamp(1, 64 * KC / rows) * nr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_units() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("8M"), Some(8 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("0K"), None);
    }

    #[test]
    fn blocking_zen3_6x16() {
        let b = Blocking::new(CacheSizes { l1: 32 << 10, l2: 512 << 10, l3: 32 << 20 }, 6, 16);
        assert_eq!(b.mc, 252); // 256 KiB / 1 KiB per row, down to a multiple of 6
        assert_eq!(b.nc, 8192); // 8 MiB / 1 KiB per column
        assert_eq!(b.nc_narrow, 128); // 128 KiB / 1 KiB per column
    }

    #[test]
    fn blocking_zen5_8x32() {
        let b = Blocking::new(CacheSizes { l1: 48 << 10, l2: 1 << 20, l3: 32 << 20 }, 8, 32);
        assert_eq!(b.mc, 256); // capped at 256 KiB / 1 KiB per row
        assert_eq!(b.nc, 8192);
        assert_eq!(b.nc_narrow, 256); // 256 KiB / 1 KiB per column
        // A short K: the same 256 KiB hold more columns, whole panels.
        assert_eq!(b.nc_narrow_for(27, 32), 2432); // 256·256/27 = 2427.3, up to 76 panels
        assert_eq!(b.nc_narrow_for(256, 32), 256);
        assert_eq!(b.nc_narrow_for(4096, 32), 256);
        assert_eq!(b.nc_narrow_for(0, 32), 65536); // as K = 1: 256 KiB of one row
    }
}
