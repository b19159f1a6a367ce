fn main() {
    std::process::exit(blf_bridge::cli::main());
}
