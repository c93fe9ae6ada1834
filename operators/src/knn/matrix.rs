//! The CPU's matrix unit (Intel AMX: eight tile registers of 16 rows x 64
//! bytes, `bf16` products summed in `f32`), for the prefilter's dot
//! products.
//!
//! The only `unsafe` code of the workspace: inline assembly for the tile
//! instructions (stable Rust has no intrinsics for them) and the system
//! call that asks Linux for the tile state. Each `unsafe` block states what
//! makes it sound; the rest of the engine is safe code around
//! [`TileUnit::dots`], which checks every length it hands to the assembly.
// Off x86_64 nothing here is unsafe, and an unmet expectation would warn.
#![cfg_attr(
    target_arch = "x86_64",
    expect(
        unsafe_code,
        reason = "AMX tile instructions exist only as inline assembly"
    )
)]

use std::marker::PhantomData;
use std::sync::OnceLock;

/// Queries (rows of a product block), two tiles of 16.
pub(super) const QUERY_ROWS: usize = 32;
/// Points (columns of a product block): one tile.
pub(super) const POINT_COLUMNS: usize = 16;
/// `bf16` values per tile row: one 64-byte row, a chunk of the depth.
pub(super) const DEPTH_CHUNK: usize = 32;
/// `bf16` values per query or point: two chunks. The query tiles (two per
/// chunk) stay in registers while the point tiles stream past, which takes
/// four of the eight; shorter rows are zero-padded.
pub(super) const DEPTH: usize = 2 * DEPTH_CHUNK;
/// `bf16` values of one point tile for one depth chunk: 16 rows of 16
/// points x 2 (the pairs `tdpbf16ps` multiplies and adds together).
pub(super) const TILE_CHUNK: usize = 16 * DEPTH_CHUNK;
/// `bf16` values of one point tile over the whole depth (its two chunks).
pub(super) const POINT_TILE: usize = (DEPTH / DEPTH_CHUNK) * TILE_CHUNK;

/// Whether this CPU has the matrix unit and the operating system lets this
/// process use it (asked once; Linux leaves tile state off until asked).
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(request_tile_state)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    /// `arch_prctl` request for permission to use an extended state
    /// component (`ARCH_REQ_XCOMP_PERM`), and the tile data component.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    let features = std::arch::x86_64::__cpuid_count(7, 0);
    if features.edx & (1 << 22) == 0 || features.edx & (1 << 24) == 0 {
        return false;
    }
    // SAFETY: the call takes two integers and touches no memory of ours;
    // a kernel without the request answers with an error, not a fault.
    let answer = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    answer == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tile_state() -> bool {
    false
}

/// The tile palette: every register 16 rows of 64 bytes. `tmm0`/`tmm1`
/// hold the two 16 x 16 `f32` products of a block (queries 0..16 and
/// 16..32), `tmm2`/`tmm3` the first query tile's depth chunks, `tmm4`/`tmm5`
/// the second's, `tmm6`/`tmm7` a point tile's chunks. Measured on this
/// family of CPUs, a tile load or store costs more than a product, so the
/// query tiles stay loaded across point tiles: per 512 estimates, two loads,
/// four products (two chunks) and two stores, about 0.4 cycles an estimate
/// against about 0.6 when both sides are loaded per block.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

thread_local! {
    /// Whether a [`TileUnit`] lives on this thread: the tile registers
    /// hold its queries between calls, so there is at most one.
    static UNIT_LIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The tile registers configured on this thread, holding one group of
/// query tiles between calls; released when dropped. Not `Send`: the
/// configuration belongs to the thread that loaded it.
pub(super) struct TileUnit {
    /// Whether queries are loaded.
    loaded: bool,
    _thread_bound: PhantomData<*const ()>,
}

impl TileUnit {
    /// Configure this thread's tiles; `None` where the unit is missing or
    /// already in use on this thread.
    pub(super) fn new() -> Option<Self> {
        if !available() || UNIT_LIVE.with(|live| live.replace(true)) {
            return None;
        }
        let unit = Self::load_config();
        if unit.is_none() {
            UNIT_LIVE.with(|live| live.set(false));
        }
        unit
    }

    #[cfg(target_arch = "x86_64")]
    fn load_config() -> Option<Self> {
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        config.bytes_per_row[..8].fill(64);
        config.rows[..8].fill(16);
        // SAFETY: `available()` confirmed the instructions and the OS
        // permission; `ldtilecfg` reads the 64 bytes of `config`, which is
        // 64-byte aligned as the instruction requires, and a valid palette.
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{config}]",
                config = in(reg) &config,
                options(nostack, readonly, preserves_flags),
            );
        }
        Some(Self {
            loaded: false,
            _thread_bound: PhantomData,
        })
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn load_config() -> Option<Self> {
        None
    }

    /// Load 32 query rows of [`DEPTH`] values each into the query tiles,
    /// for the [`dots`](Self::dots) that follow.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn load_queries(&mut self, queries: &[u16]) {
        assert_eq!(queries.len(), QUERY_ROWS * DEPTH, "query rows");
        // SAFETY: tiles configured on this thread (`self` is not `Send`,
        // and is the thread's only unit). Query tile `h`, chunk `c` reads
        // rows `16 h..16 h + 16` of `queries`, 64 bytes each at byte
        // offset `64 c`, `c < 2`: inside the checked slice.
        unsafe {
            std::arch::asm!(
                "tileloadd tmm2, [{q0} + {stride} * 1]",
                "tileloadd tmm3, [{q0} + {stride} * 1 + 64]",
                "tileloadd tmm4, [{q1} + {stride} * 1]",
                "tileloadd tmm5, [{q1} + {stride} * 1 + 64]",
                q0 = in(reg) queries.as_ptr(),
                q1 = in(reg) queries[16 * DEPTH..].as_ptr(),
                stride = in(reg) DEPTH * 2,
                options(nostack, readonly, preserves_flags),
            );
        }
        self.loaded = true;
    }

    /// `out[i][j] = queries[i] . points[j]` for the 32 loaded queries and
    /// the 16 points of one point tile: two blocks of [`TILE_CHUNK`]
    /// values, where for chunk `c`, row `r` and point `p` the values of
    /// depths `32 c + 2 r` and `32 c + 2 r + 1` sit side by side at
    /// `32 r + 2 p`. Sums are `f32`, products of `bf16` exact, `bf16` and
    /// `f32` denormals flushed to zero (the caller's bound covers them).
    // Kept out of line: inlined into the scan loop, the 5,022 x 200,000
    // search measured 0.31 s against 0.24 s (minimum of five, alternating).
    #[cfg(target_arch = "x86_64")]
    #[inline(never)]
    pub(super) fn dots(&self, points: &[u16], out: &mut [[f32; POINT_COLUMNS]; QUERY_ROWS]) {
        assert!(self.loaded, "queries loaded");
        assert_eq!(points.len(), POINT_TILE, "point tile");
        let out_rows = out.as_mut_ptr().cast::<f32>();
        // SAFETY: tiles configured and queries loaded on this thread (see
        // `load_queries`). Point chunk `c` reads the 1,024 bytes at byte
        // offset `1024 c` of `points`, `c < 2`: inside the checked slice.
        // The two stores write 16 rows of 64 bytes each, contiguous, at
        // bytes 0 and 1,024 of the 2,048 bytes of `out`.
        unsafe {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tileloadd tmm6, [{p} + {stride} * 1]",
                "tileloadd tmm7, [{p} + {stride} * 1 + 1024]",
                "tdpbf16ps tmm0, tmm2, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm6",
                "tdpbf16ps tmm0, tmm3, tmm7",
                "tdpbf16ps tmm1, tmm5, tmm7",
                "tilestored [{out} + {stride} * 1], tmm0",
                "tilestored [{out} + {stride} * 1 + 1024], tmm1",
                p = in(reg) points.as_ptr(),
                out = in(reg) out_rows,
                stride = in(reg) 64usize,
                options(nostack, preserves_flags),
            );
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn load_queries(&mut self, _queries: &[u16]) {
        unreachable!("no tile unit is made off x86_64")
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn dots(&self, _points: &[u16], _out: &mut [[f32; POINT_COLUMNS]; QUERY_ROWS]) {
        unreachable!("no tile unit is made off x86_64")
    }
}

impl Drop for TileUnit {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: releases the configuration this value loaded.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem, preserves_flags));
        }
        UNIT_LIVE.with(|live| live.set(false));
    }
}

/// `v` rounded to `bf16` (through `f32`, both to nearest even), as its bit
/// pattern; values the tile unit would flush (below `2^-126`) are 0.
pub(super) fn to_bf16(v: f64) -> u16 {
    let single = v as f32;
    if single.abs() < f32::MIN_POSITIVE {
        return 0;
    }
    let bits = single.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

/// The value of a `bf16` bit pattern.
pub(super) fn from_bf16(bits: u16) -> f64 {
    f64::from(f32::from_bits(u32::from(bits) << 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_and_flushes_tiny_values() {
        assert_eq!(from_bf16(to_bf16(1.0)), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
        assert_eq!(from_bf16(to_bf16(1.0 + 2f64.powi(-8))), 1.0);
        assert_eq!(
            from_bf16(to_bf16(1.0 + 3.0 * 2f64.powi(-8))),
            1.0 + 2f64.powi(-6)
        );
        assert_eq!(from_bf16(to_bf16(-0.3)), -0.300_781_25);
        assert_eq!(to_bf16(1e-39), 0);
        for v in [0.1, -7.3, 1e-20, 3e30] {
            let hi = from_bf16(to_bf16(v));
            assert!((v - hi).abs() <= v.abs() * 2f64.powi(-8), "{v}");
            let lo = from_bf16(to_bf16(v - hi));
            assert!((v - hi - lo).abs() <= v.abs() * 2f64.powi(-16), "{v}");
        }
    }

    #[test]
    fn tile_products_are_the_dot_products() {
        let Some(mut unit) = TileUnit::new() else {
            eprintln!("no matrix unit on this machine: nothing to test");
            return;
        };
        assert!(TileUnit::new().is_none(), "one unit per thread");
        // Small integers: every product and sum is exact in f32.
        let query = |i: usize, d: usize| ((i * 7 + d * 3) % 11) as f64 - 5.0;
        let point = |j: usize, d: usize| ((j * 5 + d * 13) % 9) as f64 - 4.0;
        // Twice: the second load replaces the first's queries.
        for round in 0..2 {
            let depth = DEPTH;
            let query = |i: usize, d: usize| query(i + round, d);
            let queries: Vec<u16> = (0..QUERY_ROWS * depth)
                .map(|x| to_bf16(query(x / depth, x % depth)))
                .collect();
            unit.load_queries(&queries);
            // Two point tiles against the same loaded queries.
            for tile in 0..2 {
                let mut points = vec![0u16; POINT_TILE];
                for p in 0..POINT_COLUMNS {
                    for d in 0..depth {
                        let (c, r, e) = (d / DEPTH_CHUNK, d % DEPTH_CHUNK / 2, d % 2);
                        points[c * TILE_CHUNK + r * 32 + p * 2 + e] =
                            to_bf16(point(16 * tile + p, d));
                    }
                }
                let mut out = [[0.0f32; POINT_COLUMNS]; QUERY_ROWS];
                unit.dots(&points, &mut out);
                for (i, row) in out.iter().enumerate() {
                    for (p, &dot) in row.iter().enumerate() {
                        let expected: f64 = (0..depth)
                            .map(|d| query(i, d) * point(16 * tile + p, d))
                            .sum();
                        assert_eq!(
                            f64::from(dot),
                            expected,
                            "round {round}, query {i}, point {p}"
                        );
                    }
                }
            }
        }
        drop(unit);
        assert!(TileUnit::new().is_some(), "released on drop");
    }
}
