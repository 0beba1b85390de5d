// Command bench measures regfs against baselines measured in the same run
// and prints one Markdown table: every row is a ratio, with both absolute
// figures beside it. scripts/bench.sh is the way to run it.
//
// It starts the reference registry (registry/registrytest) in-process on
// 127.0.0.1, builds and pushes the benchmark images (one large gzip layer;
// the same layer plus many small files as gzip and as eStargz), mounts a
// regfs binary as a subprocess (a fresh cache directory wherever a row says
// cold), and reads through the mount with ordinary tools (cat, ls) and with
// parallel Go readers. Bytes fetched come from the registry's own counters.
//
// It never fails a row silently: a row whose feature is missing from the
// binary under test (rootfs/ before the lazy-tree work, say) prints
// "n/a (reason)", and the table is still printed. It never leaves a mount
// behind: every mount it makes is unmounted on return, on SIGINT and on
// SIGTERM (fusermount3 -u, then SIGTERM to regfs, then umount -l).
//
// It is not a test: timings are reported, never asserted.
package main
