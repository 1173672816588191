package nft

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"

	"falg/config"
)

func example(t *testing.T) *Ruleset {
	t.Helper()
	c, err := config.Load("../configs/falg.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return New(c)
}

func TestRulesetText(t *testing.T) {
	r := example(t)
	text := r.String()
	for _, want := range []string{
		"table inet falg {",
		"ip daddr 10.0.0.1 tcp dport 443 tcp flags syn / fin,syn,rst,ack add @pending4 { ip saddr . tcp sport . ip daddr . tcp dport } counter queue num 0-1",
		"ip6 daddr fd00::1 tcp dport 443 tcp flags syn / fin,syn,rst,ack add @pending6 { ip6 saddr . tcp sport . ip6 daddr . tcp dport } counter queue num 0-1",
		"ip daddr 10.0.0.1 udp dport 53 counter queue num 0-1",
		"ip saddr . tcp sport . ip daddr . tcp dport @pending4 counter queue num 0-1",
		"ct state invalid ip saddr . tcp sport @backends4 tcp flags syn,ack / fin,syn,rst,ack counter queue num 0-1",
		"ct state invalid ip6 saddr . tcp sport @backends6 tcp flags & rst == rst counter queue num 0-1",
		"type filter hook prerouting priority mangle; policy accept;",
		"meta mark & 0x00100000 == 0x00100000 notrack",
		"ct mark & 0x00200000 == 0x00200000 counter",
		"type nat hook postrouting priority srcnat; policy accept;",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, text)
		}
	}
	// Port 3128 is TCP only, port 53 both: no udp rule for 3128, no SYN rule missing for 53.
	if strings.Contains(text, "udp dport 3128") || !strings.Contains(text, "ip daddr 10.0.0.1 tcp dport 53 tcp flags") {
		t.Errorf("transport of listens wrong:\n%s", text)
	}
}

func TestTupleKey(t *testing.T) {
	k := Tuple{netip.MustParseAddrPort("10.0.0.2:40000"), netip.MustParseAddrPort("10.0.0.1:443")}.Key()
	want, _ := hex.DecodeString("0a0000029c4000000a00000101bb0000")
	if string(k) != string(want) {
		t.Errorf("v4 key %x, want %x", k, want)
	}
	k6 := Tuple{netip.MustParseAddrPort("[fd00::2]:1"), netip.MustParseAddrPort("[fd00::1]:2")}.Key()
	if len(k6) != 40 || k6[16] != 0 || k6[17] != 1 || k6[39] != 0 || k6[37] != 2 {
		t.Errorf("v6 key %x", k6)
	}
}

// netns makes a throwaway network namespace and returns an nftables
// connection into it and a function running a command inside it.
func netns(t *testing.T) (*nftables.Conn, func(args ...string) string) {
	c, run, _ := netnsFile(t)
	return c, run
}

// netnsFile is netns that also returns the namespace's file.
func netnsFile(t *testing.T) (*nftables.Conn, func(args ...string) string, *os.File) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to create a network namespace")
		}
		t.Skip("needs root")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "falg-nft-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		// Stdout only: nft's libxtables complains on stderr about the
		// inet xt target it cannot print.
		cmd := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, stderr.String())
		}
		return string(out)
	}
	return c, run, f
}

func TestInstallMatchesText(t *testing.T) {
	c, run := netns(t)
	kind, err := DetectQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("queue: %v", kind)
	if strings.Contains(run("nft", "list", "ruleset"), probeTable) {
		t.Fatal("probe table left behind")
	}
	r := example(t)
	if err := r.Install(c, kind); err != nil {
		t.Fatal(err)
	}
	listing := run("nft", "list", "table", "inet", Table)
	if got, want := r.Canonical(listing), r.Canonical(r.String()); got != want {
		t.Errorf("nft list differs from String:\n--- nft list (normalized)\n%s\n--- String\n%s", got, want)
	}
	// Installing again replaces the table atomically (a stale table from a
	// killed falg), and Remove deletes it and nothing else.
	run("nft", "add", "table", "inet", "other")
	if err := r.Install(c, kind); err != nil {
		t.Fatalf("reinstall over existing table: %v", err)
	}
	if err := Remove(c); err != nil {
		t.Fatal(err)
	}
	if err := Remove(c); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	left := run("nft", "list", "tables")
	if strings.Contains(left, "inet falg\n") || !strings.Contains(left, "inet other") {
		t.Errorf("after Remove: %q", left)
	}
}

// openPending opens a Pending in the namespace ns.
func openPending(t *testing.T, ns *os.File) *Pending {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	p, err := OpenPending()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		panic(err) // the thread would stay in the test's namespace
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// installedPending installs the example ruleset in a fresh namespace and
// opens a Pending there.
func installedPending(t *testing.T) (*nftables.Conn, func(args ...string) string, *Pending, *Ruleset, QueueKind) {
	t.Helper()
	c, run, ns := netnsFile(t)
	p := openPending(t, ns)
	kind, err := DetectQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	r := example(t)
	if err := r.Install(c, kind); err != nil {
		t.Fatal(err)
	}
	return c, run, p, r, kind
}

func TestPendingSets(t *testing.T) {
	_, run, p, _, _ := installedPending(t)
	t4 := Tuple{netip.MustParseAddrPort("10.0.1.2:443"), netip.MustParseAddrPort("10.0.0.2:40000")}
	t6 := Tuple{netip.MustParseAddrPort("[fd00:1::2]:443"), netip.MustParseAddrPort("[fd00::2]:40000")}
	if err := p.Add(t4, t6); err != nil {
		t.Fatal(err)
	}
	l := run("nft", "list", "set", "inet", Table, SetPending4) + run("nft", "list", "set", "inet", Table, SetPending6)
	if !strings.Contains(l, "10.0.1.2 . 443 . 10.0.0.2 . 40000") || !strings.Contains(l, "fd00:1::2 . 443 . fd00::2 . 40000") {
		t.Fatalf("pending sets:\n%s", l)
	}
	gone := Tuple{netip.MustParseAddrPort("10.0.1.9:1"), netip.MustParseAddrPort("10.0.0.2:2")}
	if err := p.Delete(t4, gone, t6); err != nil {
		t.Fatalf("delete with one missing: %v", err)
	}
	l = run("nft", "list", "set", "inet", Table, SetPending4) + run("nft", "list", "set", "inet", Table, SetPending6)
	if strings.Contains(l, "40000") {
		t.Fatalf("elements left:\n%s", l)
	}
}

// TestInstallXTInfo reads the installed rules back and checks the queue
// verdict of each: the xt target's info bytes, or the native expression.
func TestInstallXTInfo(t *testing.T) {
	c, _ := netns(t)
	r := example(t)
	r.Bypass = true
	for _, kind := range []QueueKind{QueueXT, QueueNative} {
		if err := r.Install(c, kind); err != nil {
			if kind == QueueNative {
				t.Logf("native queue not available: %v", err)
				continue
			}
			t.Fatal(err)
		}
		tb := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
		rules, err := c.GetRules(tb, &nftables.Chain{Name: ChainPrerouting})
		if err != nil {
			t.Fatal(err)
		}
		back, err := c.GetRules(tb, &nftables.Chain{Name: ChainBackends})
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, back...)
		if want := len(r.preroutingRules()) + len(r.backendRules()); len(rules) != want {
			t.Fatalf("%d rules installed, want %d", len(rules), want)
		}
		drops, wantDrops := 0, 0
		for _, ru := range r.preroutingRules() {
			if ru.drop {
				wantDrops++
			}
		}
		for _, ru := range rules {
			switch q := ru.Exprs[len(ru.Exprs)-1].(type) {
			case *expr.Verdict:
				if q.Kind != expr.VerdictDrop {
					t.Fatalf("verdict %+v, want drop", q)
				}
				drops++
			case *expr.Target:
				info, _ := q.Info.(*xt.Unknown)
				if kind != QueueXT || q.Name != "NFQUEUE" || q.Rev != 3 || info == nil || len(*info) != 8 ||
					binary.NativeEndian.Uint16((*info)[0:]) != 0 || binary.NativeEndian.Uint16((*info)[2:]) != 2 ||
					binary.NativeEndian.Uint16((*info)[4:]) != 1 {
					t.Fatalf("xt target: %+v info %x", q, info)
				}
			case *expr.Queue:
				if kind != QueueNative || q.Num != 0 || q.Total != 2 || q.Flag != expr.QueueFlagBypass {
					t.Fatalf("queue: %+v", q)
				}
			default:
				t.Fatalf("last expression is %T, want a queue verdict", q)
			}
		}
		if drops != wantDrops || drops == 0 {
			t.Errorf("%d drop rules installed, want %d (the quiet listens' pure ACKs)", drops, wantDrops)
		}
	}
}

// TestUpdateKeepsPending: an update changes listens and backends in place
// and leaves the pending sets' elements alone.
func TestUpdateKeepsPending(t *testing.T) {
	c, run, p, r, kind := installedPending(t)
	pending := Tuple{netip.MustParseAddrPort("10.0.0.2:40000"), netip.MustParseAddrPort("10.0.0.1:443")}
	if err := p.Add(pending); err != nil {
		t.Fatal(err)
	}
	r.Listens = append(r.Listens, Listen{TCP, netip.MustParseAddr("10.0.0.1"), 8443})
	r.Backends = append(r.Backends, netip.MustParseAddrPort("10.0.1.9:8443"))
	if err := r.Update(c, kind); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(run("nft", "list", "set", "inet", Table, SetPending4), "10.0.0.2 . 40000 . 10.0.0.1 . 443") {
		t.Error("update lost the pending flow")
	}
	if err := p.Delete(pending); err != nil {
		t.Fatal(err)
	}
	listing := run("nft", "list", "table", "inet", Table)
	if got, want := r.Canonical(listing), r.Canonical(r.String()); got != want {
		t.Errorf("after update:\n%s\nwant\n%s", got, want)
	}
}

// TestPendingMany adds and deletes more flows than one transaction takes
// (maxPerCommit), of both families, as a burst of aborted flows does.
func TestPendingMany(t *testing.T) {
	_, run, p, _, _ := installedPending(t)
	var ts []Tuple
	for i := range 3 * maxPerCommit {
		port := uint16(10000 + i)
		ts = append(ts,
			Tuple{netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port), netip.MustParseAddrPort("10.0.0.1:443")},
			Tuple{netip.AddrPortFrom(netip.MustParseAddr("fd00::2"), port), netip.MustParseAddrPort("[fd00::1]:443")})
	}
	count := func() int {
		l := run("nft", "list", "set", "inet", Table, SetPending4) + run("nft", "list", "set", "inet", Table, SetPending6)
		return strings.Count(l, ". 443")
	}
	if err := p.Add(ts...); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != len(ts) {
		t.Fatalf("%d elements after adding %d", n, len(ts))
	}
	if err := p.Delete(ts...); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d elements left after deleting all", n)
	}
}
