// mimalloc, not glibc's malloc: the write and import paths allocate and
// free many small strings per entry, and freeing a batch's worth at once
// cost glibc a fifth of the import's time (`malloc_consolidate`, `_int_free`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    yinyom::cli::main()
}
