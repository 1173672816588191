package seqnat

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// requireLab skips the test unless it runs as root with ip and nft
// installed; with CI=true it fails instead.
func requireLab(t *testing.T) {
	t.Helper()
	miss := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("namespace test cannot run: %s", why)
		}
		t.Skipf("namespace test skipped: %s", why)
	}
	if os.Geteuid() != 0 {
		miss("not root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			miss(tool + " not installed")
		}
	}
}

// newNS creates a network namespace with a unique name, brings up its
// loopback and removes it when the test ends.
func newNS(t *testing.T, tag string) string {
	t.Helper()
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	name := "falg-seqnat-" + tag + "-" + hex.EncodeToString(r[:])
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// run runs a command and fails the test when it fails.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// natRuleset is the minimum DESIGN.md section 3 step 1 says a namespace needs
// for created entries to be NATed: nat prerouting and postrouting chains
// (NAT hooks register on demand) and a rule that uses ct.
const natRuleset = `
table inet falg_seqnat_test {
	chain nat_pre { type nat hook prerouting priority dstnat; policy accept; }
	chain nat_post { type nat hook postrouting priority srcnat; policy accept; }
	chain forward_ct {
		type filter hook forward priority filter; policy accept;
		ct state invalid counter
	}
}
`

// loadRuleset loads an nft ruleset into namespace ns. The ruleset dies with
// the namespace.
func loadRuleset(t *testing.T, ns, ruleset string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f in %s: %v: %s", ns, err, out)
	}
}

// inNS runs fn on a fresh OS thread switched into namespace ns. Sockets fn
// opens stay in ns. fn must not call t.Fatal: it runs on another goroutine.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, now in ns, exits with this goroutine.
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// mustInNS is inNS that fails the test on error.
func mustInNS(t *testing.T, ns string, fn func() error) {
	t.Helper()
	if err := inNS(ns, fn); err != nil {
		t.Fatal(err)
	}
}

// sysctl sets key=value inside namespace ns.
func sysctl(t *testing.T, ns, key, value string) {
	t.Helper()
	run(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", key+"="+value)
}

// conntrackDump returns `conntrack -L` output of ns for failure messages,
// or a note when the tool is missing.
func conntrackDump(ns string) string {
	out, err := exec.Command("ip", "netns", "exec", ns, "conntrack", "-L").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(conntrack -L: %v: %s)", err, bytes.TrimSpace(out))
	}
	return string(out)
}
