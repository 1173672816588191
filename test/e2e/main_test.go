// Package e2e drives the falg binary in namespace labs (package test/lab)
// with real clients, real backends and the kernel's own conntrack: every
// byte is checked at both ends.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// falgBin is the falg binary the tests run, built once by TestMain.
var falgBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "falg-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	falgBin = filepath.Join(dir, "falg")
	build := exec.Command("go", "build", "-race", "-o", falgBin, "falg/cmd/falg")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build falg:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
