package proto_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	gproto "google.golang.org/protobuf/proto"

	prompb "github.com/headroomdb/headroom/proto/prometheus"
)

// TestGeneratedCodeIsFresh regenerates every .pb.go into a temporary
// folder with the pinned tools and compares it with the committed code.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatal("protoc is not installed: `make test` installs it (apt-get install protobuf-compiler)")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "gen.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, b)
	}
	n := 0
	err := filepath.Walk(".", func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || filepath.Ext(path) != ".go" || !bytes.HasSuffix([]byte(path), []byte(".pb.go")) {
			return err
		}
		n++
		committed, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fresh, err := os.ReadFile(filepath.Join(out, "proto", path))
		if err != nil {
			t.Errorf("%s is committed but not generated: %v", path, err)
			return nil
		}
		if !bytes.Equal(committed, fresh) {
			t.Errorf("%s is stale: run `make proto` and commit the result", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("found %d generated files, want at least 3", n)
	}
}

// The remote-write field numbers, checked on the wire: Sample is value=1
// (fixed64) and timestamp=2 (varint); Label is name=1, value=2.
func TestRemoteWriteWireFormat(t *testing.T) {
	f := func(name string, m gproto.Message, want string) {
		t.Helper()
		b, err := gproto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	// 1.5 is 0x3ff8000000000000, little-endian on the wire; 1000 is e807.
	f("Sample", &prompb.Sample{Value: 1.5, Timestamp: 1000}, "09"+"000000000000f83f"+"10"+"e807")
	f("Label", &prompb.Label{Name: "a", Value: "b"}, "0a0161"+"120162")
	f("TimeSeries", &prompb.TimeSeries{Labels: []*prompb.Label{{Name: "a", Value: "b"}}}, "0a06"+"0a0161120162")
	f("WriteRequest", &prompb.WriteRequest{Timeseries: []*prompb.TimeSeries{{}}}, "0a00")
}
