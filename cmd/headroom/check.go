package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/headroomdb/headroom/storage"
)

// runCheck is `headroom check`: an offline scan of a data directory.
func runCheck(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	dir := fs.String("data-dir", "./data", "data directory to check (the server must be stopped: the check takes its lock)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: headroom check --data-dir DIR

Reads a data directory offline, changing nothing: every series' labels,
every chunk (checksum and full decoding), every rollup block and sketch
block, and the index. Prints what it found; exits 1 on damage (corrupt
chunks or blocks, index entries of series that do not exist).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := os.Stat(*dir); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	r, err := storage.Check(*dir, func(keys int64) { fmt.Fprintf(os.Stderr, "  %d keys read\n", keys) })
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %d series, %d chunks, %d samples, %d rollup blocks (%d buckets); %d WAL records to replay, %d buckets pending for the downsampler; read in %v\n",
		*dir, r.Series, r.Chunks, r.Samples, r.RollupBlocks, r.Buckets, r.WALRecords, r.Pending, r.Took.Round(1e6))
	for _, d := range r.Damage {
		fmt.Fprintln(out, "damage:", d)
	}
	if r.OrphanPostings > 0 || r.OrphanKeys > 0 {
		fmt.Fprintf(out, "damage: %d postings and %d other keys of series that do not exist\n", r.OrphanPostings, r.OrphanKeys)
	}
	if r.Damaged() {
		return errors.New("damage found")
	}
	fmt.Fprintln(out, "no damage found")
	return nil
}
