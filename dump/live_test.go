package dump

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// needRoot skips a test that needs root and namespaces, or fails it when
// CI=true.
func needRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs ip (iproute2)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// newNetns creates a namespace with lo up, deleted when the test ends, and
// returns a file descriptor of it.
func newNetns(t *testing.T) int {
	t.Helper()
	name := "falg-dump-" + rand.Text()[:10]
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// inNetns runs fn on an OS thread moved into the namespace fd. Sockets fn
// opens belong to that namespace. The thread is never unlocked, so Go
// discards it when fn returns.
func inNetns(fd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// dumpTable returns the chain names of the falg_dump table in namespace
// fd, or nil when there is no such table.
func dumpTable(t *testing.T, fd int) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	found := false
	for _, tb := range tables {
		found = found || tb.Name == TableName
	}
	if !found {
		return nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list chains: %v", err)
	}
	names := []string{}
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			names = append(names, ch.Name)
		}
	}
	return names
}

// TestLive logs real packets in a fresh namespace: a TCP connect and UDP
// datagrams to listens on 127.0.0.1 and ::1, a marked datagram, and noise
// that the rules must not log. It also checks that a stale table is
// replaced and that Close removes the table.
func TestLive(t *testing.T) {
	needRoot(t)
	ns := newNetns(t)

	// A stale table left by a crashed dump, with a chain OpenLive must drop.
	c, err := nftables.New(nftables.WithNetNSFd(ns))
	if err != nil {
		t.Fatal(err)
	}
	c.AddChain(&nftables.Chain{Name: "stale", Table: c.AddTable(table())})
	if err := c.Flush(); err != nil {
		t.Fatalf("add stale table: %v", err)
	}

	const port, noisePort, markPort, mark = 4443, 4444, 5000, 0x00f00000
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	live, err := OpenLive(ctx, LiveOptions{
		Listens: []Listen{
			{Addr: netip.MustParseAddr("127.0.0.1"), Port: port},
			{Proto: ProtoUDP, Addr: netip.MustParseAddr("::1"), Port: port},
		},
		Mark:  mark,
		NetNS: ns,
	})
	if err != nil {
		t.Fatalf("OpenLive: %v", err)
	}
	t.Cleanup(func() { live.Close() })
	if got := strings.Join(dumpTable(t, ns), ","); got != "prerouting,output" && got != "output,prerouting" {
		t.Fatalf("falg_dump chains %q, want prerouting and output only", got)
	}

	var conns []interface{ Close() error }
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	err = inNetns(ns, func() error {
		udp := func(network, addr, msg string, mark int) error {
			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					if mark != 0 {
						serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
					}
				}); err != nil {
					return err
				}
				return serr
			}}
			c, err := d.Dial(network, addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(msg))
			return err
		}
		// Noise first: were it logged, it would show before the packets
		// the test waits for.
		if err := udp("udp4", fmt.Sprintf("127.0.0.1:%d", noisePort), "noise", 0); err != nil {
			return err
		}
		if err := udp("udp6", fmt.Sprintf("[::1]:%d", noisePort), "noise6", 0); err != nil {
			return err
		}
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		conns = append(conns, ln)
		tc, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		conns = append(conns, tc)
		if err := udp("udp4", fmt.Sprintf("127.0.0.1:%d", port), "hello", 0); err != nil {
			return err
		}
		if err := udp("udp6", fmt.Sprintf("[::1]:%d", port), "hello6", 0); err != nil {
			return err
		}
		return udp("udp4", fmt.Sprintf("127.0.0.1:%d", markPort), "marked", mark)
	})
	if err != nil {
		t.Fatalf("traffic: %v", err)
	}

	want := []string{
		fmt.Sprintf("TCP 127.0.0.1:%%d > 127.0.0.1:%d [S] seq=%%d win=%%d len=0 <mss %%d,sackOK,TS val %%d ecr 0,wscale %%d> hook=output", port),
		fmt.Sprintf("TCP 127.0.0.1:%%d > 127.0.0.1:%d [S] seq=%%d win=%%d len=0 <mss %%d,sackOK,TS val %%d ecr 0,wscale %%d> hook=prerouting", port),
		fmt.Sprintf("TCP 127.0.0.1:%d > 127.0.0.1:%%d [S.] seq=%%d ack=%%d win=%%d len=0 <mss %%d,sackOK,TS val %%d ecr %%d,wscale %%d> hook=output", port),
		fmt.Sprintf("UDP 127.0.0.1:%%d > 127.0.0.1:%d len=5 hook=output", port),
		fmt.Sprintf("UDP 127.0.0.1:%%d > 127.0.0.1:%d len=5 hook=prerouting", port),
		fmt.Sprintf("UDP [::1]:%%d > [::1]:%d len=6 hook=prerouting", port),
		fmt.Sprintf("UDP 127.0.0.1:%%d > 127.0.0.1:%d len=6 hook=output", markPort),
	}
	seen := make([]bool, len(want))
	var l Line
	var got []string
	for missing := len(want); missing > 0; {
		p, err := live.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v; missing %d lines; got:\n%s", err, missing, strings.Join(got, "\n"))
		}
		if err := Decode(p.Data, &l); err != nil {
			t.Fatalf("Decode: %v", err)
		}
		l.Time, l.Hook = p.Time, p.Hook
		s := l.String()
		got = append(got, s)
		if l.SrcPort == noisePort || l.DstPort == noisePort {
			t.Errorf("logged a packet no rule selects: %s", s)
		}
		if l.DstPort == markPort && p.Hook != "output" {
			t.Errorf("marked packet logged outside output: %s", s)
		}
		_, rest, _ := strings.Cut(s, " ")
		for i, w := range want {
			if !seen[i] && matches(rest, w) {
				seen[i] = true
				missing--
			}
		}
	}
	t.Logf("logged:\n%s", strings.Join(got, "\n"))

	if err := live.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if chains := dumpTable(t, ns); chains != nil {
		t.Errorf("falg_dump still there after Close, chains %v", chains)
	}
	if _, err := live.Next(context.Background()); !errors.Is(err, ErrClosed) && err != nil {
		// buffered packets may still come; the channel must end in ErrClosed
		for err == nil {
			_, err = live.Next(context.Background())
		}
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Next after Close: %v, want ErrClosed", err)
		}
	}
}

// matches reports whether s has the shape of pattern, where each %d stands
// for a decimal number.
func matches(s, pattern string) bool {
	parts := strings.Split(pattern, "%d")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1:] {
		n := 0
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		if n == 0 || !strings.HasPrefix(s[n:], p) {
			return false
		}
		s = s[n+len(p):]
	}
	return s == ""
}

// TestLiveContextCancel checks that ending the context passed to OpenLive
// removes the table.
func TestLiveContextCancel(t *testing.T) {
	needRoot(t)
	ns := newNetns(t)
	ctx, cancel := context.WithCancel(context.Background())
	live, err := OpenLive(ctx, LiveOptions{NetNS: ns, Group: 7})
	if err != nil {
		t.Fatalf("OpenLive: %v", err)
	}
	defer live.Close()
	if dumpTable(t, ns) == nil {
		t.Fatal("no falg_dump table after OpenLive")
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for dumpTable(t, ns) != nil {
		if time.Now().After(deadline) {
			t.Fatal("falg_dump table still there 5s after the context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := live.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after the context ended: %v, want ErrClosed", err)
	}
}

func TestMatches(t *testing.T) {
	for _, tt := range []struct {
		s, p string
		want bool
	}{
		{"a 12 b", "a %d b", true},
		{"a x b", "a %d b", false},
		{"a 12 b c", "a %d b", false},
		{"a 1 2", "a %d %d", true},
	} {
		if got := matches(tt.s, tt.p); got != tt.want {
			t.Errorf("matches(%q, %q) = %v", tt.s, tt.p, got)
		}
	}
}
