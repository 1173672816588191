package lab

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// testPrefix keeps test labs apart from `falg demo` labs.
const testPrefix = "falgtest"

// echoServer echoes every connection and reports, per remote address, the
// SHA-256 of what it received.
type echoServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	sums map[netip.Addr]chan [32]byte
}

func startEcho(t *testing.T, n *NS, port int) *echoServer {
	t.Helper()
	ln, err := n.Listen("tcp", fmt.Sprintf("[::]:%d", port)) // dual-stack
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln, sums: map[netip.Addr]chan [32]byte{}}
	s.wg.Go(s.serve)
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// sum returns the channel that gets the hash of data received from addr.
func (s *echoServer) sum(addr netip.Addr) chan [32]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.sums[addr]
	if ch == nil {
		ch = make(chan [32]byte, 1)
		s.sums[addr] = ch
	}
	return ch
}

func (s *echoServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Go(func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			h := sha256.New()
			if _, err := io.Copy(c, io.TeeReader(c, h)); err != nil {
				return
			}
			c.(*net.TCPConn).CloseWrite()
			from := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			s.sum(from) <- [32]byte(h.Sum(nil))
		})
	}
}

// TestEcho sends data from every client to every backend through the
// router, over IPv4 and IPv6, and checks the bytes both ways by hash and
// that the backend sees the client's own address.
func TestEcho(t *testing.T) {
	l := Start(t, Options{Clients: 2, Backends: 2, Prefix: testPrefix})
	const port = 7007
	servers := map[*NS]*echoServer{}
	for _, b := range l.Backends {
		servers[b] = startEcho(t, b, port)
	}
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	want := sha256.Sum256(payload)

	type tc struct {
		name         string
		client, back *NS
		from, to     netip.Addr
	}
	var tests []tc
	for _, c := range l.Clients {
		for _, b := range l.Backends {
			tests = append(tests,
				tc{c.Name + "/" + b.Name + "/v4", c, b, c.Addr4, b.Addr4},
				tc{c.Name + "/" + b.Name + "/v6", c, b, c.Addr6, b.Addr6})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			conn, err := tt.client.Dial(ctx, "tcp", netip.AddrPortFrom(tt.to, port).String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			if got := conn.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != tt.from {
				t.Fatalf("local address %v, want %v", got, tt.from)
			}
			werr := make(chan error, 1)
			go func() {
				_, err := conn.Write(payload)
				if err == nil {
					err = conn.(*net.TCPConn).CloseWrite()
				}
				werr <- err
			}()
			h := sha256.New()
			n, err := io.Copy(h, conn)
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("write: %v", err)
			}
			if got := [32]byte(h.Sum(nil)); got != want || n != int64(len(payload)) {
				t.Errorf("echo: %d bytes, sha256 %x; want %d bytes, %x", n, got, len(payload), want)
			}
			select {
			case got := <-servers[tt.back].sum(tt.from):
				if got != want {
					t.Errorf("backend received sha256 %x, want %x", got, want)
				}
			case <-ctx.Done():
				t.Fatalf("backend saw no connection from %v", tt.from)
			}
		})
	}
}

// TestDo checks that Do switches only the thread running fn, restores it,
// and carries a panic to the caller.
func TestDo(t *testing.T) {
	l := Start(t, Options{Prefix: testPrefix})
	own, ok := statNS("/proc/thread-self/ns/net")
	if !ok {
		t.Fatal("stat own netns")
	}
	for _, n := range l.Namespaces() {
		want, ok := statNS(n.Path())
		if !ok {
			t.Fatalf("stat %s", n.Path())
		}
		if want == own {
			t.Fatalf("%s is the test's own namespace", n.Name)
		}
		var inside nsID
		if err := n.Do(func() error {
			inside, _ = statNS("/proc/thread-self/ns/net")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if inside != want {
			t.Errorf("%s: Do ran in %v, want %v", n.Name, inside, want)
		}
	}
	sentinel := errors.New("sentinel")
	if err := l.Router.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do error = %v, want sentinel", err)
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want boom", p)
			}
		}()
		l.Router.Do(func() error { panic("boom") })
		t.Error("Do did not re-panic")
	}()
	// runtime.Goexit in fn (t.FailNow) ends the caller's goroutine too.
	after, deferred := false, make(chan bool, 1)
	go func() {
		defer func() { deferred <- true }()
		l.Router.Do(func() error { runtime.Goexit(); return nil })
		after = true
	}()
	if !<-deferred || after {
		t.Errorf("Goexit in Do: caller went on = %v, want it ended", after)
	}
	// Every thread the runtime may hand us next must be back home.
	for range 50 {
		var id nsID
		done := make(chan struct{})
		go func() {
			id, _ = statNS("/proc/thread-self/ns/net")
			close(done)
		}()
		<-done
		if id != own {
			t.Fatalf("a thread stayed in namespace %v", id)
		}
	}
}

// TestSettings checks the router's sysctls and the addresses and routes of
// a client through NS.Run.
func TestSettings(t *testing.T) {
	l := Start(t, Options{Prefix: testPrefix})
	ctx := context.Background()
	tests := []struct {
		ns   *NS
		args []string
		want string
	}{
		{l.Router, []string{"cat", "/proc/sys/net/ipv4/ip_forward"}, "1\n"},
		{l.Router, []string{"cat", "/proc/sys/net/ipv6/conf/all/forwarding"}, "1\n"},
		{l.Router, []string{"cat", "/proc/sys/net/ipv4/conf/all/rp_filter"}, "0\n"},
		{l.Router, []string{"cat", "/proc/sys/net/ipv4/conf/" + ClientBridge + "/rp_filter"}, "0\n"},
		{l.Clients[0], []string{"cat", "/proc/sys/net/ipv4/ip_forward"}, "0\n"},
		{l.Clients[0], []string{"ip", "-br", "-4", "addr", "show", "dev", HostDev}, "10.0.0.2/24"},
		{l.Clients[0], []string{"ip", "-br", "-6", "addr", "show", "dev", HostDev}, "fd00::2/64"},
		{l.Backends[1], []string{"ip", "-4", "route", "show", "default"}, "default via 10.0.1.1 dev eth0"},
		{l.Backends[1], []string{"ip", "-6", "route", "show", "default"}, "default via fd00:1::1 dev eth0"},
		{l.Router, []string{"ip", "-br", "addr", "show", "dev", BackendBridge}, "10.0.1.1/24 fd00:1::1/64"},
	}
	for _, tt := range tests {
		out, err := tt.ns.Run(ctx, tt.args[0], tt.args[1:]...)
		if err != nil {
			t.Error(err)
			continue
		}
		if !containsOrEqual(string(out), tt.want) {
			t.Errorf("%s: %v = %q, want %q", tt.ns.Name, tt.args, out, tt.want)
		}
	}
	if _, err := l.Router.Run(ctx, "false"); err == nil {
		t.Error("Run(false) succeeded")
	}
}

// containsOrEqual matches want exactly when it ends in a newline, else as
// a substring.
func containsOrEqual(got, want string) bool {
	if want != "" && want[len(want)-1] == '\n' {
		return got == want
	}
	return len(want) > 0 && strings.Contains(got, want)
}
