//! The `fugu` binary (and `fugud`, the same binary under another name): all of it is in the
//! library (`app`), so that the library's unused code shows as dead.

fn main() -> std::process::ExitCode {
    fugu::main()
}
