// Package headroom_test holds repository-wide checks. This one enforces
// the import rules of DESIGN.md: storage knows nothing of the network or
// PromQL, only storage imports Pebble, leaf packages use only the standard
// library.
package headroom_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Deps       []string // transitive
	Imports    []string // direct
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/headroomdb/headroom/"
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 4 {
		t.Fatalf("go list found %d packages; the check would be vacuous", len(pkgs))
	}
	stdOnly := map[string]bool{mod + "storage/series": true, mod + "storage/chunk": true, mod + "admit": true}
	// The query engine also reads the rollup format (pure code, which
	// brings the chunk codec along).
	queryFormats := map[string]bool{mod + "storage/rollup": true, mod + "storage/chunk": true}
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p.ImportPath, mod)
		direct := map[string]bool{}
		for _, d := range p.Imports {
			direct[d] = true
		}
		for _, d := range p.Deps {
			isPebble := strings.HasPrefix(d, "github.com/cockroachdb/pebble")
			std := !strings.Contains(strings.SplitN(d, "/", 2)[0], ".")
			switch {
			case p.ImportPath == mod+"exemplar" && !std && d != mod+"storage/series":
				t.Errorf("exemplar may import only the standard library and storage/series; it depends on %s", d)
			case p.ImportPath == mod+"storage/chunk" && d == mod+"storage/series":
				// The codec encodes the vocabulary's samples (native
				// histograms); both are pure code.
			case stdOnly[p.ImportPath] && !std:
				t.Errorf("%s may import only the standard library; it depends on %s", rel, d)
			case p.ImportPath == mod+"storage/rollup" && !std && d != mod+"storage/chunk" && d != mod+"storage/series":
				t.Errorf("storage/rollup may import only the standard library, storage/chunk and (through it) storage/series; it depends on %s", d)
			case isPebble && !strings.HasPrefix(rel, "storage") && !strings.HasPrefix(rel, "cmd/") && !strings.HasPrefix(rel, "bench"):
				t.Errorf("%s depends on Pebble; only storage may", rel)
			case strings.HasPrefix(rel, "storage") && (strings.HasPrefix(d, mod+"query") || strings.HasPrefix(d, mod+"ingest") ||
				strings.HasPrefix(d, mod+"proto") || strings.HasPrefix(d, "google.golang.org/grpc") ||
				strings.HasPrefix(d, "github.com/prometheus/prometheus/promql") || (direct[d] && d == "net/http")):
				t.Errorf("%s depends on %s: storage must know nothing of the network, the APIs or PromQL", rel, d)
			case (strings.HasPrefix(rel, "query") || strings.HasPrefix(rel, "ingest")) &&
				strings.HasPrefix(d, mod+"storage") && d != mod+"storage/series" && !(strings.HasPrefix(rel, "query") && queryFormats[d]):
				t.Errorf("%s depends on %s: query and ingest see storage only through storage/series (and query the rollup format)", rel, d)
			}
		}
	}
}
