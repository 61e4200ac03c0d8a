//! Replays each fuzz target's body over its committed seeds, deterministic
//! mutations of them and random inputs, so `cargo test` covers the targets
//! without a fuzzer. Shared by the crates that define targets
//! (`wasmdm_proto::fuzz`, `wasmdm_package::fuzz`), included with `#[path]`.

use std::path::Path;

/// A target's name (its corpus directory) and body.
type Target = (&'static str, fn(&[u8]));

/// xorshift64: deterministic, so a failing input is reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed` like a fuzzer's: flip, set to one of `interesting`,
/// insert, delete, truncate, splice from `other`.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8], interesting: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(6) {
            0 if at < b.len() => b[at] ^= 1 << rng.below(8),
            1 if at < b.len() && !interesting.is_empty() => {
                b[at] = interesting[rng.below(interesting.len())]
            }
            2 => b.insert(at, rng.next() as u8),
            3 if at < b.len() => {
                b.remove(at);
            }
            4 => b.truncate(at),
            _ => {
                let from = rng.below(other.len());
                let len = rng.below(other.len() - from + 1).min(64);
                b.splice(at..at, other[from..from + len].iter().copied());
            }
        }
    }
    b
}

/// The seeds of `target` in `fuzz/corpus/<target>/` (relative to the crate at
/// `manifest_dir`, two levels below the repository root), sorted by name.
fn corpus(manifest_dir: &str, target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(manifest_dir)
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Runs every target's body over its seeds, `mutations` mutations of them and
/// `randoms` random inputs up to 64 bytes.
pub fn replay(
    manifest_dir: &str,
    targets: &[Target],
    interesting: &[u8],
    mutations: usize,
    randoms: usize,
) {
    for (name, body) in targets {
        let seeds = corpus(manifest_dir, name);
        let mut rng = Rng(0x5eed_0000 + name.len() as u64);
        for seed in &seeds {
            body(seed);
        }
        for _ in 0..mutations {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            body(&mutate(&mut rng, seed, other, interesting));
        }
        for _ in 0..randoms {
            let len = rng.below(64);
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            body(&input);
        }
    }
}
