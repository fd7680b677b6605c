fn main() {
    eprintln!("xvs-bench: the benchmark harness is not built yet (issue 6)");
    std::process::exit(2);
}
