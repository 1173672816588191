package dump

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the capture fixtures and fixture.golden in testdata")

// render prints every packet of a capture the way falg dump does, in UTC.
func render(t *testing.T, capture []byte, verbose bool, d Decider) []byte {
	t.Helper()
	var out bytes.Buffer
	pr := Printer{W: &out, Verbose: verbose, Decider: d}
	err := ReadPcap(bytes.NewReader(capture), func(p *Packet) error {
		p.Time = p.Time.UTC()
		return pr.Print(p)
	})
	if err != nil {
		t.Fatalf("ReadPcap: %v", err)
	}
	return out.Bytes()
}

// TestGolden checks that every committed capture is what the generator in
// fixture_test.go writes, and that each prints exactly testdata/fixture.golden.
func TestGolden(t *testing.T) {
	pkts := fixture(t)
	golden := filepath.Join("testdata", "fixture.golden")
	if *update {
		for _, f := range fixtureFiles {
			if err := os.WriteFile(filepath.Join("testdata", f.name), f.encode(t, pkts), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(golden, render(t, fixtureFiles[0].encode(t, pkts), false, nil), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
	}
	for _, f := range fixtureFiles {
		t.Run(f.name, func(t *testing.T) {
			capture, err := os.ReadFile(filepath.Join("testdata", f.name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(capture, f.encode(t, pkts)) {
				t.Errorf("testdata/%s differs from what fixture() generates; run go test -run TestGolden -update", f.name)
			}
			if got := render(t, capture, false, nil); !bytes.Equal(got, want) {
				t.Errorf("output differs from %s\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}
