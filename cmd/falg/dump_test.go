package main

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestDumpGolden runs `falg dump -r` on the dump package's fixture with the
// example config, so each first data packet also shows its name and route.
func TestDumpGolden(t *testing.T) {
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetArgs([]string{"dump", "-r", "../../dump/testdata/fixture.pcap", "-c", "../../configs/falg.yaml"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/dump.golden"
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("falg dump output differs from %s:\n%s", golden, out.String())
	}
	for _, line := range []string{
		`name=a.example decision="dns.routes[0] 10.0.1.2:53"`,
		"ERR TCP 10.0.0.2 > 10.0.0.1: tcp: header truncated",
	} {
		if !bytes.Contains(out.Bytes(), []byte(line)) {
			t.Errorf("output lacks %q", line)
		}
	}
}

func TestCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		file    string
		wantErr bool
	}{{"../../configs/falg.yaml", false}, {"testdata/bad.yaml", true}} {
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetArgs([]string{"check", "-c", tc.file})
		err := root.Execute()
		if (err != nil) != tc.wantErr {
			t.Errorf("check %s: err %v", tc.file, err)
		}
		if !tc.wantErr && out.String() != "ok\n" {
			t.Errorf("check %s printed %q", tc.file, out.String())
		}
	}
}
