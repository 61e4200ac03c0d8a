//! Ignores stop requests and never makes a host call: only epoch interruption
//! can end it, so it tests the host's forced-stop path.

fn main() {
    println!("spinning");
    let mut n: u64 = 0;
    loop {
        // `black_box` keeps the optimiser from proving the loop side-effect free.
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
