// Command falg is an application-aware forwarder for Linux routers: it reads
// the first bytes of each new connection, decides where it goes, and hands
// the rest of the flow to the kernel.
package main

import (
	"errors"
	"fmt"
	"os"

	"falg/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRoot().Execute(); err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				fmt.Fprintln(os.Stderr, p)
			}
		} else {
			fmt.Fprintln(os.Stderr, "falg:", err)
		}
		os.Exit(1)
	}
}
