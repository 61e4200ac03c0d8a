//! A `wasi:cli/command`: it runs, prints and exits. It sees its arguments,
//! the `env` its manifest grants, and the directories it grants (none here).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("hello from {{name}}, args {args:?}");
}
