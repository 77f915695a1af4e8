package chunk

import (
	"encoding/hex"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/golden from the current encoder")

// TestGolden pins the bytes of each encoding for fixed inputs: the formats
// are on disk and must never change by accident. A deliberate change (a
// new encoding byte) regenerates with -rewrite and says so in the commit.
func TestGolden(t *testing.T) {
	cases := map[string][]sample{
		"xor-regular": func() []sample {
			var ss []sample
			for i := int64(0); i < 8; i++ {
				ss = append(ss, sample{1_700_000_000_000 + i*15_000, float64(i * i)})
			}
			return ss
		}(),
		"xor-specials": {{0, math.NaN()}, {1, math.Float64frombits(0x7ff0000000000002)}, {3, math.Inf(-1)}, {1 << 40, math.Copysign(0, -1)}},
		"decimal-counter": func() []sample {
			var ss []sample
			for i := int64(0); i < 16; i++ {
				ss = append(ss, sample{1_700_000_000_000 + i*10_000 + i%2, float64(100 + 7*i)})
			}
			return ss
		}(),
		"decimal-grid": func() []sample {
			var ss []sample
			for i := int64(0); i < 24; i++ {
				ts := 1_700_000_000_000 + i*10_000
				if i == 5 {
					ts += 2
				}
				if i > 12 {
					ts += 10_000
				}
				ss = append(ss, sample{ts, float64(40 + i%3)})
			}
			return ss
		}(),
		"decimal-corrected": func() []sample {
			var ss []sample
			for i := int64(0); i < 12; i++ {
				v := float64(1700+i%5) / 1000
				if i%4 == 1 {
					v = math.Float64frombits(math.Float64bits(v) + 1)
				}
				ss = append(ss, sample{1_700_000_000_000 + i*300_000, v})
			}
			return ss
		}(),
	}
	for name, ss := range cases {
		b := encode(t, ss)
		if strings.HasPrefix(name, "decimal") {
			b = Optimize(b)
			if b[0] != EncDecimal {
				t.Fatalf("%s: Optimize kept encoding %d, the case expects decimal", name, b[0])
			}
			if strings.HasSuffix(name, "grid") && b[3]&gridFlag == 0 {
				t.Fatalf("%s: grid timestamps not chosen", name)
			}
		}
		got := hex.Dump(b)
		path := filepath.Join("testdata", "golden", name+".hex")
		if *rewrite {
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (run with -rewrite to create)", name, err)
		}
		if got != string(want) {
			t.Errorf("%s: encoding changed:\ngot\n%swant\n%s", name, got, want)
		}
		// And the golden bytes still decode to the input.
		dec, err := decodeAll(b)
		if err != nil {
			t.Fatal(err)
		}
		sameSamples(t, dec, ss)
	}
}
