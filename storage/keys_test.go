package storage

import (
	"encoding/hex"
	"errors"
	"testing"

	"github.com/headroomdb/headroom/storage/series"
)

// The key and value layouts of docs/format/storage.md, byte for byte.
func TestKeyLayout(t *testing.T) {
	f := func(name string, got []byte, want string) {
		t.Helper()
		if h := hex.EncodeToString(got); h != want {
			t.Errorf("%s = %s, want %s", name, h, want)
		}
	}
	f("chunkKey", chunkKey(nil, 20000, 7, 1_700_000_000_000), "43"+"00004e20"+"0000000000000007"+"0000018bcfe56800")
	f("seriesKey", seriesKey(258), "53"+"0000000000000102")
	f("hashKey", hashKey(0xabcdef, 9), "48"+"0000000000abcdef"+"0000000000000009")
	f("lastKey", lastKey(1), "4c"+"0000000000000001")
	f("walKey", walKey(5), "57"+"0000000000000005")
	f("postingPrefix", postingPrefix(nil, 1, "job", "api"), "50"+"00000001"+"6a6f62"+"00"+"617069"+"00")
	// value: version 1, uvarint span 300 (ac 02), CRC-32C of the chunk
	// (c5253104, computed with an independent bitwise CRC-32C), chunk
	f("chunkValue", appendChunkValue(nil, 1000, 1300, []byte{1, 0, 0}), "01"+"ac02"+"c5253104"+"010000")
	f("labels", appendLabels(nil, series.FromStrings("__name__", "up")), "01"+"08"+"5f5f6e616d655f5f"+"02"+"7570")

	day, name, val, id, ok := parsePosting(append(postingPrefix(nil, 3, "a", "b"), 0, 0, 0, 0, 0, 0, 0, 9))
	if !ok || day != 3 || string(name) != "a" || string(val) != "b" || id != 9 {
		t.Errorf("parsePosting round trip = %d %q %q %d %v", day, name, val, id, ok)
	}
	maxT, chk, err := parseChunkValue(chunkKey(nil, 0, 1, 1000), appendChunkValue(nil, 1000, 1300, []byte{1, 0, 0}))
	if err != nil || maxT != 1300 || len(chk) != 3 {
		t.Errorf("parseChunkValue = %d, %x, %v", maxT, chk, err)
	}
	bad := appendChunkValue(nil, 1000, 1300, []byte{1, 0, 0})
	bad[len(bad)-1] ^= 1
	var ce *CorruptionError
	if _, _, err := parseChunkValue(chunkKey(nil, 0, 1, 1000), bad); !errors.As(err, &ce) {
		t.Errorf("a flipped bit gave %v, want a CorruptionError", err)
	}
}
