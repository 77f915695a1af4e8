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
	tiers := fs.Bool("tiers", false, "also recompute every rolled-up tier bucket from the raw samples it covers (days whose raw samples are kept) and report each bucket that differs")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: headroom check --data-dir DIR [--tiers]

Reads a data directory offline, changing nothing: every series' labels,
every chunk (checksum and full decoding), every rollup block and sketch
block, and the index. Prints what it found; exits 1 on damage (corrupt
chunks or blocks, index entries of series that do not exist).

With --tiers, it then recomputes the tiers' buckets of every series-day
whose raw samples are kept and that the downsampler has rolled up, and
compares them with the stored ones bit for bit (count, sum, min, max,
first and last samples, increase, sketch); a bucket that differs is
damage. Days still marked for the downsampler are counted and skipped
(queries compute them from raw samples).

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
	fmt.Fprintf(out, "%s: %d series, %d chunks, %d samples, %d histogram chunks (%d histograms), %d rollup blocks (%d buckets), %d histogram rollup blocks (%d buckets); %d WAL records to replay, %d buckets pending for the downsampler; read in %v\n",
		*dir, r.Series, r.Chunks, r.Samples, r.HistChunks, r.HistSamples, r.RollupBlocks, r.Buckets, r.HistRollupBlocks, r.HistBuckets, r.WALRecords, r.Pending, r.Took.Round(1e6))
	for _, d := range r.Damage {
		fmt.Fprintln(out, "damage:", d)
	}
	if r.OrphanPostings > 0 || r.OrphanKeys > 0 {
		fmt.Fprintf(out, "damage: %d postings and %d other keys of series that do not exist\n", r.OrphanPostings, r.OrphanKeys)
	}
	damaged := r.Damaged()
	if *tiers && !damaged {
		tr, err := storage.CheckTiersDir(*dir, func(days int64) { fmt.Fprintf(os.Stderr, "  %d series-days recomputed\n", days) })
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "tiers: %d series-days recomputed from raw samples, %d buckets compared, %d differ; %d series-days not rolled up yet (skipped); in %v\n",
			tr.SeriesDays, tr.Buckets, tr.Differing, tr.Pending, tr.Took.Round(1e6))
		for _, d := range tr.Diffs {
			fmt.Fprintln(out, "differs:", d)
		}
		if int64(len(tr.Diffs)) < tr.Differing {
			fmt.Fprintf(out, "differs: ... %d more not listed\n", tr.Differing-int64(len(tr.Diffs)))
		}
		damaged = tr.Differing > 0
	}
	if damaged {
		return errors.New("damage found")
	}
	fmt.Fprintln(out, "no damage found")
	return nil
}
