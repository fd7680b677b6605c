fn main() {
    eprintln!("xvs: no subcommand implemented yet");
    std::process::exit(2);
}
