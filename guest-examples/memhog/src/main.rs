//! Grows linear memory without bound so the host's memory limit must stop it
//! (a failed `memory.grow` aborts the guest with a trap).

const CHUNK: usize = 1024 * 1024;
const PAGE: usize = 4096;

fn main() {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Touch every page so the memory is really committed, not just reserved.
        for i in (0..CHUNK).step_by(PAGE) {
            chunk[i] = 1;
        }
        chunks.push(std::hint::black_box(chunk));
        let mib = chunks.len();
        if mib.is_multiple_of(8) {
            println!("allocated {mib} MiB");
        }
    }
}
