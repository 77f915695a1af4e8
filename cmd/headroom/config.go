package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/headroomdb/headroom/storage"
)

// applyConfigFile sets, from a YAML file whose keys are flag names, every
// flag that the command line did not set: the command line wins. Unknown
// keys are errors, so a typo never silently keeps a default.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("config %s: unknown option %q (options are the flags of 'headroom serve -h', without the dashes)", path, k)
		}
		if set[k] {
			continue
		}
		var v string
		switch x := doc[k].(type) {
		case []any:
			if r, ok := f.Value.(repeatable); ok && r.Repeatable() {
				// One Set per element: a rule's selector may hold commas.
				for _, e := range x {
					if err := f.Value.Set(fmt.Sprint(e)); err != nil {
						return fmt.Errorf("config %s: option %q: %w", path, k, err)
					}
				}
				continue
			}
			parts := make([]string, len(x))
			for i, e := range x {
				parts[i] = fmt.Sprint(e)
			}
			v = strings.Join(parts, ",")
		case nil:
			continue
		default:
			v = fmt.Sprint(x)
		}
		if err := f.Value.Set(v); err != nil {
			return fmt.Errorf("config %s: option %q: %w", path, k, err)
		}
	}
	return nil
}

// durationFlag is a time.Duration that also takes the units operators
// write retention in: d (days), w (weeks), y (365 days).
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return formatDuration(*f.d)
}

func (f durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		d      time.Duration
	}{{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}, {"y", 365 * 24 * time.Hour}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			if v, err := strconv.ParseFloat(n, 64); err == nil && v >= 0 {
				return time.Duration(v * float64(u.d)), nil
			}
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a number with a unit (ms, s, m, h, d, w, y)", s)
	}
	return d, nil
}

func formatDuration(d time.Duration) string {
	if d != 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	// 5m and 1h rather than Go's 5m0s and 1h0m0s.
	s := d.String()
	if d%time.Minute == 0 && d != 0 {
		s = strings.TrimSuffix(s, "0s")
		if d%time.Hour == 0 {
			s = strings.TrimSuffix(s, "0m")
		}
	}
	return s
}

// tiersFlag is --rollup-tiers: "5m:90d,1h:2y,1d:10y" (resolution and
// retention of each tier, finest first), or "off".
type tiersFlag struct{ t *[]storage.Tier }

func (f tiersFlag) String() string {
	if f.t == nil {
		return ""
	}
	if len(*f.t) == 0 {
		return "off"
	}
	var parts []string
	for _, t := range *f.t {
		parts = append(parts, formatDuration(t.Resolution)+":"+formatDuration(t.Retention))
	}
	return strings.Join(parts, ",")
}

func (f tiersFlag) Set(s string) error {
	if s == "off" || s == "none" {
		*f.t = []storage.Tier{}
		return nil
	}
	var ts []storage.Tier
	for _, part := range strings.Split(s, ",") {
		res, ret, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return fmt.Errorf("tier %q: want RESOLUTION:RETENTION, like 5m:90d", part)
		}
		r, err := parseDuration(res)
		if err != nil {
			return fmt.Errorf("tier %q: resolution: %v", part, err)
		}
		k, err := parseDuration(ret)
		if err != nil {
			return fmt.Errorf("tier %q: retention: %v", part, err)
		}
		ts = append(ts, storage.Tier{Resolution: r, Retention: k})
	}
	o := storage.Options{Tiers: ts}
	if err := o.Validate(); err != nil {
		return err
	}
	*f.t = ts
	return nil
}

// repeatable is a flag given once per value (--retention-rule).
type repeatable interface{ Repeatable() bool }

// rulesFlag collects --retention-rule values, "TIER SELECTOR RETENTION";
// they are resolved against the tiers when the server starts.
type rulesFlag struct{ rules *[]string }

func (f rulesFlag) String() string {
	if f.rules == nil {
		return ""
	}
	return strings.Join(*f.rules, "; ")
}

func (f rulesFlag) Set(s string) error {
	if _, _, _, err := splitRule(s); err != nil {
		return err
	}
	*f.rules = append(*f.rules, s)
	return nil
}

func (f rulesFlag) Repeatable() bool { return true }

// splitRule splits "TIER SELECTOR RETENTION": the tier is the first
// word, the retention the last, the selector what lies between.
func splitRule(s string) (tier, selector string, retention time.Duration, err error) {
	s = strings.TrimSpace(s)
	i, j := strings.IndexByte(s, ' '), strings.LastIndexByte(s, ' ')
	if i < 0 || j <= i {
		return "", "", 0, fmt.Errorf("retention rule %q: want TIER SELECTOR RETENTION, like 'raw {env=\"dev\"} 3d'", s)
	}
	tier, selector = s[:i], strings.TrimSpace(s[i+1:j])
	if retention, err = parseDuration(s[j+1:]); err != nil {
		return "", "", 0, fmt.Errorf("retention rule %q: %v", s, err)
	}
	return tier, selector, retention, nil
}

// bytesFlag is a size in bytes, written with a unit: 512MiB, 2GiB, 1.5GB,
// 64KiB, or a plain number of bytes; 0 turns the setting off.
type bytesFlag struct{ n *int64 }

func (f bytesFlag) String() string {
	if f.n == nil {
		return ""
	}
	return formatBytes(*f.n)
}

func (f bytesFlag) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*f.n = n
	return nil
}

var byteUnits = []struct {
	suffix string
	n      float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

func parseBytes(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), 1.0
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.n
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v >= 0 && v*mult < 1<<62) { // NaN fails both comparisons
		return 0, fmt.Errorf("size %q: want a number of bytes with a unit, like 512MiB, 2GiB or 1.5GB", s)
	}
	return int64(v * mult), nil
}

func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.n && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
