//! The smallest device app: a plain `wasi:cli/command` that imports no wasmdm
//! interface, to show unmodified WASI programs install and run.

fn main() {
    println!("hello from wasmdm");
    // Args and env come from the manifest; echo them so tests can check wiring.
    for (i, arg) in std::env::args().enumerate() {
        println!("arg[{i}]={arg}");
    }
    if let Ok(greeting) = std::env::var("GREETING") {
        println!("GREETING={greeting}");
    }
}
