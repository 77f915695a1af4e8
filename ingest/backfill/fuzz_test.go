package backfill

import (
	"bytes"
	"testing"
)

// The readers take files from anywhere: whatever the bytes, they return
// samples with valid label sets or an error naming a line, and never
// panic.
func FuzzCSV(f *testing.F) {
	f.Add([]byte("metric,host,timestamp,value\ncpu,a,2024-01-01T00:00:00Z,1.5\n"))
	f.Add([]byte("\"TimeStamp\",\"Value\",\"Label\"\n\"2018-04-25T00:00:00Z\",\"0\",\"0\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewCSV(bytes.NewReader(b), CSVOptions{Metric: "m"})
		if err != nil {
			return
		}
		check(t, r)
	})
}

func FuzzPromText(f *testing.F) {
	f.Add([]byte("# TYPE a counter\na_total{x=\"1\",y=\"\\\"\"} 1 1700000000000\nb 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		check(t, NewPromText(bytes.NewReader(b), PromOptions{}))
	})
}

func check(t *testing.T, r Reader) {
	for r.Next() {
		s := r.At()
		if err := s.Labels.Validate(); err != nil {
			t.Fatalf("line %d: reader returned invalid labels: %v", s.Line, err)
		}
		if s.Line < 1 {
			t.Fatalf("sample without a line number")
		}
	}
	if err := r.Err(); err != nil {
		if _, ok := err.(*LineError); !ok {
			t.Fatalf("error %v (%T) is not a LineError", err, err)
		}
	}
}
