//! Exits with a non-zero code, to test the on-failure restart policy.

fn main() {
    println!("failing");
    std::process::exit(3);
}
