package main

import (
	"bufio"
	"compress/gzip"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/headroomdb/headroom/storage/series"
)

// dataset is a named set of series loaded whole into memory.
type dataset struct {
	name   string
	series []loadedSeries
}

type loadedSeries struct {
	labels  series.Labels
	samples []series.Sample
}

func (d dataset) samples() int {
	n := 0
	for _, s := range d.series {
		n += len(s.samples)
	}
	return n
}

// parseTime accepts the spellings of the shared datasets: RFC 3339 with
// a zone, and "2006-01-02 15:04:05" without one (taken as UTC).
func parseTime(s string) (int64, error) {
	s = strings.Trim(s, `"`)
	for _, layout := range []string{time.RFC3339, "2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UnixMilli(), nil
		}
	}
	return 0, fmt.Errorf("unrecognised timestamp %q", s)
}

// loadTimeValueCSV reads a CSV whose first two columns are time and value.
func loadTimeValueCSV(path string, ls series.Labels) (loadedSeries, error) {
	f, err := os.Open(path)
	if err != nil {
		return loadedSeries{}, err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	r.FieldsPerRecord = -1
	out := loadedSeries{labels: ls}
	for line := 1; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		if line == 1 {
			continue // header
		}
		if len(rec) < 2 {
			return out, fmt.Errorf("%s:%d: want at least 2 columns, got %d", path, line, len(rec))
		}
		ts, err := parseTime(rec[0])
		if err != nil {
			return out, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		vs := strings.Trim(rec[1], `"`)
		if vs == "" {
			continue // a gap in the source (ms-cloud-monitoring has a few)
		}
		v, err := strconv.ParseFloat(vs, 64)
		if err != nil {
			return out, fmt.Errorf("%s:%d: value: %w", path, line, err)
		}
		out.samples = append(out.samples, series.Sample{T: ts, V: v})
	}
	return out, nil
}

// loadCSVFolder loads one series per CSV file matching pattern (a glob
// under root/name), labelled by labels(file, parent folder, base name).
func loadCSVFolder(root, name, pattern string, labels func(folder, base string) series.Labels) (dataset, error) {
	d := dataset{name: name}
	files, _ := filepath.Glob(filepath.Join(root, name, pattern))
	sort.Strings(files)
	for _, f := range files {
		s, err := loadTimeValueCSV(f, labels(filepath.Base(filepath.Dir(f)), strings.TrimSuffix(filepath.Base(f), ".csv")))
		if err != nil {
			return d, err
		}
		d.series = append(d.series, s)
	}
	if len(d.series) == 0 {
		return d, fmt.Errorf("no CSV files under %s", filepath.Join(root, name))
	}
	return d, nil
}

func loadNAB(root string) (dataset, error) {
	return loadCSVFolder(root, "nab-aws-cloudwatch", "*/*.csv", func(folder, base string) series.Labels {
		return series.FromStrings("__name__", "nab_value", "file", base, "folder", folder)
	})
}

func loadMS(root string) (dataset, error) {
	return loadCSVFolder(root, "ms-cloud-monitoring", "data/*/*.csv", func(folder, base string) series.Labels {
		return series.FromStrings("__name__", "ms_value", "domain", folder, "series", base)
	})
}

// loadASD reads the 12 entities x 19 metrics; rows are 300 s apart from a
// fixed epoch (the upstream data has no timestamps).
func loadASD(root string) (dataset, error) {
	d := dataset{name: "asd-application-servers"}
	epoch := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	files, _ := filepath.Glob(filepath.Join(root, "asd-application-servers", "csv", "omi-*.csv.gz"))
	sort.Strings(files)
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return d, err
		}
		gz, err := gzip.NewReader(fh)
		if err != nil {
			fh.Close()
			return d, fmt.Errorf("%s: %w", f, err)
		}
		r := csv.NewReader(gz)
		host := strings.TrimSuffix(filepath.Base(f), ".csv.gz")
		var cols []string
		var ss []loadedSeries
		for line := 1; ; line++ {
			rec, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				fh.Close()
				return d, fmt.Errorf("%s:%d: %w", f, line, err)
			}
			if line == 1 {
				cols = rec
				for _, c := range cols[3:] {
					ss = append(ss, loadedSeries{labels: series.FromStrings("__name__", "asd_value", "host", host, "metric", c)})
				}
				continue
			}
			i, err := strconv.Atoi(rec[0])
			if err != nil {
				fh.Close()
				return d, fmt.Errorf("%s:%d: row index: %w", f, line, err)
			}
			for j, c := range rec[3:] {
				v, err := strconv.ParseFloat(c, 64)
				if err != nil {
					fh.Close()
					return d, fmt.Errorf("%s:%d: column %s: %w", f, line, cols[3+j], err)
				}
				ss[j].samples = append(ss[j].samples, series.Sample{T: epoch + int64(i)*300_000, V: v})
			}
		}
		fh.Close()
		d.series = append(d.series, ss...)
	}
	if len(d.series) == 0 {
		return d, fmt.Errorf("no omi-*.csv.gz under %s", filepath.Join(root, "asd-application-servers", "csv"))
	}
	return d, nil
}
