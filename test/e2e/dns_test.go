package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"falg/test/lab"
)

// dnsConfig routes zone a.example to backend0 and zone b.example to
// backend1, over UDP and TCP, v4 and v6. %[1]s is the source mode. The mark
// is wider than the default so that the udp relay's four backends fit too.
const dnsConfig = `
workers: 2
mark: 0x0ff00000
services:
  - name: dns
    listen: ["10.0.0.1:53", "[fd00::1]:53"]
    protocol: dns
    source: %[1]s
    routes:
      - match: ["a.example."]
        backends: ["10.0.1.2:53", "[fd00:1::2]:53"]
      - match: ["b.example"]
        backends: ["10.0.1.3:53", "[fd00:1::3]:53"]
    default: reject
`

// serveDNS runs an authoritative test server for every name on ns at port,
// over UDP and TCP, v4 and v6, until the test ends. It answers each
// question with a TXT record naming the server and the peer it saw.
func serveDNS(t testing.TB, ns *lab.NS, port int) {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			m.Answer = append(m.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{"server=" + ns.Name, "peer=" + w.RemoteAddr().String()},
			})
		}
		w.WriteMsg(m)
	})
	pc, err := ns.ListenPacket("udp", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := ns.Listen("tcp", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			s.Shutdown()
			<-done
		})
	}
}

// answer is what a test server said.
type answer struct {
	Server, Peer string
	Rcode        int
	From         netip.AddrPort // where a UDP answer came from
}

func parseAnswer(m *dns.Msg) (answer, error) {
	a := answer{Rcode: m.Rcode}
	if m.Rcode != dns.RcodeSuccess {
		return a, nil
	}
	if len(m.Answer) != 1 {
		return a, fmt.Errorf("%d answers", len(m.Answer))
	}
	txt, ok := m.Answer[0].(*dns.TXT)
	if !ok || len(txt.Txt) != 2 {
		return a, fmt.Errorf("answer %v", m.Answer[0])
	}
	a.Server = strings.TrimPrefix(txt.Txt[0], "server=")
	a.Peer = strings.TrimPrefix(txt.Txt[1], "peer=")
	return a, nil
}

// udpSocket opens a UDP socket in ns for the family of to.
func udpSocket(t testing.TB, ns *lab.NS, to netip.AddrPort) net.PacketConn {
	t.Helper()
	network, addr := "udp4", "0.0.0.0:0"
	if to.Addr().Is6() {
		network, addr = "udp6", "[::]:0"
	}
	pc, err := ns.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// queryUDP sends one query for name from pc to `to` and waits for the
// answer with the same ID.
func queryUDP(pc net.PacketConn, to netip.AddrPort, name string, id uint16) (answer, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.Id = id
	b, err := m.Pack()
	if err != nil {
		return answer{}, err
	}
	return exchangeRaw(pc, to, b, id)
}

// exchangeRaw sends b and waits up to 3 s for a DNS message with ID id.
func exchangeRaw(pc net.PacketConn, to netip.AddrPort, b []byte, id uint16) (answer, error) {
	if _, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(to)); err != nil {
		return answer{}, err
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return answer{}, err
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil || r.Id != id {
			continue // a late answer to an earlier query
		}
		a, err := parseAnswer(r)
		a.From = from.(*net.UDPAddr).AddrPort()
		a.From = netip.AddrPortFrom(a.From.Addr().Unmap(), a.From.Port())
		return a, err
	}
}

// queryTCP asks name over DNS over TCP.
func queryTCP(ctx context.Context, ns *lab.NS, to netip.AddrPort, name string) (answer, error) {
	c, err := ns.Dial(ctx, "tcp", to.String())
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	dc := &dns.Conn{Conn: c}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	if err := dc.WriteMsg(m); err != nil {
		return answer{}, err
	}
	r, err := dc.ReadMsg()
	if err != nil {
		return answer{}, err
	}
	if r.Id != m.Id {
		return answer{}, fmt.Errorf("answer ID %d, want %d", r.Id, m.Id)
	}
	return parseAnswer(r)
}

func dnsLab(t *testing.T) *lab.Lab {
	l := lab.Start(t, lab.Options{Clients: 1, Backends: 2})
	for _, b := range l.Backends {
		serveDNS(t, b, 53)
	}
	return l
}

// listenOf is the DNS listen of the family.
func listenOf(l *lab.Lab, v6 bool, port uint16) netip.AddrPort {
	if v6 {
		return netip.AddrPortFrom(l.Router.Addr6, port)
	}
	return netip.AddrPortFrom(l.Router.Addr4, port)
}

func TestDNSRoutesByZone(t *testing.T) {
	l := dnsLab(t)
	client := l.Clients[0]
	cases := []struct {
		name    string
		backend int
	}{
		{"a.example", 0},
		{"www.A.example", 0},
		{"b.example", 1},
		{"deep.x.b.example", 1},
	}
	for _, source := range []string{"client", "router"} {
		t.Run("source="+source, func(t *testing.T) {
			f := startFalg(t, l, fmt.Sprintf(dnsConfig, source))
			defer f.stop()
			for _, v6 := range []bool{false, true} {
				listen := listenOf(l, v6, 53)
				clientAddr, routerBack := client.Addr4, l.Router.BackendSide4
				if v6 {
					clientAddr, routerBack = client.Addr6, l.Router.BackendSide6
				}
				pc := udpSocket(t, client, listen)
				for i, c := range cases {
					for _, transport := range []string{"udp", "tcp"} {
						what := fmt.Sprintf("%s %s %s", listen, transport, c.name)
						var a answer
						var err error
						if transport == "udp" {
							a, err = queryUDP(pc, listen, c.name, uint16(100+i))
						} else {
							ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
							a, err = queryTCP(ctx, client, listen, c.name)
							cancel()
						}
						if err != nil {
							t.Errorf("%s: %v", what, err)
							continue
						}
						if want := l.Backends[c.backend].Name; a.Server != want || a.Rcode != dns.RcodeSuccess {
							t.Errorf("%s: answered by %q rcode %d, want %s", what, a.Server, a.Rcode, want)
						}
						if transport == "udp" && a.From != listen {
							t.Errorf("%s: answer from %v, want the listen %v", what, a.From, listen)
						}
						peer, err := netip.ParseAddrPort(a.Peer)
						if err != nil {
							t.Errorf("%s: peer %q: %v", what, a.Peer, err)
							continue
						}
						want := clientAddr
						if source == "router" {
							want = routerBack
						}
						if peer.Addr().Unmap() != want {
							t.Errorf("%s: backend saw %v, want %v", what, peer, want)
						}
					}
				}
			}
			// A TCP flow is counted spliced just after its bytes moved.
			f.waitStat("spliced", int64(2*len(cases)))
			st := f.stats()
			if st["dns_queries"] != int64(2*len(cases)) || st["spliced"] != int64(2*len(cases)) {
				t.Errorf("counters: %v; want %d UDP queries and %d spliced TCP flows", st, 2*len(cases), 2*len(cases))
			}
		})
	}
}

// TestDNSOnePortAlternatingZones sends 1000 queries from one client port,
// alternating zones, 16 in flight at a time: every answer must come from
// the server of its zone, through the listen address, and none may be
// lost. Each query is queued to falg once; answers are not queued.
func TestDNSOnePortAlternatingZones(t *testing.T) {
	l := dnsLab(t)
	client := l.Clients[0]
	f := startFalg(t, l, fmt.Sprintf(dnsConfig, "client"))
	defer f.stop()
	const n, window = 1000, 16
	for _, v6 := range []bool{false, true} {
		listen := listenOf(l, v6, 53)
		t.Run(listen.String(), func(t *testing.T) {
			pc := udpSocket(t, client, listen)
			q0 := f.stats()["queued"]
			names := []string{"q%d.a.example", "q%d.b.example"}
			type sent struct {
				backend int
				name    string
			}
			var mu sync.Mutex
			inflight := map[uint16]sent{}
			slots := make(chan struct{}, window)
			errs := make(chan error, 1)
			got := make(chan struct{})
			go func() {
				defer close(got)
				buf := make([]byte, 1500)
				for range n {
					pc.SetReadDeadline(time.Now().Add(5 * time.Second))
					m, from, err := pc.ReadFrom(buf)
					if err != nil {
						errs <- fmt.Errorf("read: %w", err)
						return
					}
					r := new(dns.Msg)
					if err := r.Unpack(buf[:m]); err != nil {
						errs <- err
						return
					}
					a, err := parseAnswer(r)
					mu.Lock()
					s, ok := inflight[r.Id]
					delete(inflight, r.Id)
					mu.Unlock()
					<-slots
					src := from.(*net.UDPAddr).AddrPort()
					switch {
					case err != nil:
						errs <- err
					case !ok:
						errs <- fmt.Errorf("answer to unknown id %d", r.Id)
					case a.Server != l.Backends[s.backend].Name:
						errs <- fmt.Errorf("%s answered by %s", s.name, a.Server)
					case netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) != listen:
						errs <- fmt.Errorf("%s: answer from %v", s.name, src)
					case len(r.Question) != 1 || r.Question[0].Name != s.name:
						errs <- fmt.Errorf("answer for %v, want %s", r.Question, s.name)
					default:
						continue
					}
					return
				}
			}()
		send:
			for i := range n {
				select {
				case slots <- struct{}{}:
				case <-got:
					break send
				}
				m := new(dns.Msg)
				name := dns.Fqdn(fmt.Sprintf(names[i%2], i))
				m.SetQuestion(name, dns.TypeTXT)
				m.Id = uint16(i + 1)
				b, _ := m.Pack()
				mu.Lock()
				inflight[m.Id] = sent{i % 2, name}
				mu.Unlock()
				if _, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(listen)); err != nil {
					t.Fatal(err)
				}
			}
			<-got
			select {
			case err := <-errs:
				t.Fatalf("%v (%d in flight)", err, len(inflight))
			default:
			}
			if q := f.stats()["queued"] - q0; q != n {
				t.Errorf("%d packets queued for %d queries, want one each", q, n)
			}
		})
	}
}

func TestDNSRefusedAndMalformed(t *testing.T) {
	l := dnsLab(t)
	client := l.Clients[0]
	f := startFalg(t, l, fmt.Sprintf(dnsConfig, "client"))
	defer f.stop()
	for _, v6 := range []bool{false, true} {
		listen := listenOf(l, v6, 53)
		pc := udpSocket(t, client, listen)
		st0 := f.stats()

		a, err := queryUDP(pc, listen, "c.example", 1)
		if err != nil || a.Rcode != dns.RcodeRefused || a.From != listen {
			t.Errorf("%v unrouted: %+v, %v; want REFUSED from the listen", listen, a, err)
		}
		// A header announcing a question that is not there.
		hdr := []byte{0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
		a, err = exchangeRaw(pc, listen, hdr, 2)
		if err != nil || a.Rcode != dns.RcodeFormatError || a.From != listen {
			t.Errorf("%v header only: %+v, %v; want FORMERR from the listen", listen, a, err)
		}
		// Shorter than a header, and a response: no answer, counted.
		for _, b := range [][]byte{{0, 3, 1}, {0, 4, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}} {
			if _, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(listen)); err != nil {
				t.Fatal(err)
			}
		}
		// falg keeps serving, and the dropped ones were not answered.
		a, err = queryUDP(pc, listen, "ok.b.example", 5)
		if err != nil || a.Server != l.Backends[1].Name {
			t.Errorf("%v after bad input: %+v, %v", listen, a, err)
		}
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _, err := pc.ReadFrom(make([]byte, 1500)); err == nil {
			t.Errorf("%v: unexpected %d-byte answer to a dropped message", listen, n)
		}
		st := f.stats()
		for k, want := range map[string]int64{"dns_queries": 5, "dns_refused": 1, "dns_formerr": 1, "dns_dropped": 2} {
			if got := st[k] - st0[k]; got != want {
				t.Errorf("%v: %s grew by %d, want %d", listen, k, got, want)
			}
		}
	}
}

// serveEcho runs a UDP echo server on ns at port that prefixes each answer
// with its namespace name and the peer it saw.
func serveEcho(t testing.TB, ns *lab.NS, port int) {
	t.Helper()
	pc, err := ns.ListenPacket("udp", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(fmt.Appendf(nil, "%s|%s|%s", ns.Name, from, buf[:n]), from)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
}

const udpRelayConfig = `
workers: 2
mark: 0x0ff00000
services:
  - name: echo
    listen: ["10.0.0.1:7", "[fd00::1]:7"]
    protocol: udp
    balance: roundrobin
    default: ["10.0.1.2:7", "10.0.1.3:7", "[fd00:1::2]:7", "[fd00:1::3]:7"]
  - name: echo-snat
    listen: ["10.0.0.1:8"]
    protocol: udp
    source: router
    balance: source-hash
    default: ["10.0.1.2:8", "10.0.1.3:8"]
`

// echo sends payload from pc to `to` and returns who answered, the peer
// they saw and where the answer came from.
func echo(pc net.PacketConn, to netip.AddrPort, payload string) (server, peer string, from netip.AddrPort, err error) {
	if _, err := pc.WriteTo([]byte(payload), net.UDPAddrFromAddrPort(to)); err != nil {
		return "", "", from, err
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	n, src, err := pc.ReadFrom(buf)
	if err != nil {
		return "", "", from, err
	}
	ap := src.(*net.UDPAddr).AddrPort()
	from = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	parts := strings.SplitN(string(buf[:n]), "|", 3)
	if len(parts) != 3 || parts[2] != payload {
		return "", "", from, fmt.Errorf("answer %q to %q", buf[:n], payload)
	}
	return parts[0], parts[1], from, nil
}

func TestUDPRelay(t *testing.T) {
	l := lab.Start(t, lab.Options{Clients: 2, Backends: 2})
	for _, b := range l.Backends {
		serveEcho(t, b, 7)
		serveEcho(t, b, 8)
	}
	f := startFalg(t, l, udpRelayConfig)
	defer f.stop()

	for _, c := range []struct {
		port     uint16
		v6, snat bool
	}{{7, false, false}, {7, true, false}, {8, false, true}} {
		listen := listenOf(l, c.v6, c.port)
		t.Run(listen.String(), func(t *testing.T) {
			flows0 := f.stats()["udp_flows"]
			q0 := f.stats()["queued"]
			servers := map[string]bool{}
			for i, client := range l.Clients {
				pc := udpSocket(t, client, listen)
				first := ""
				for j := range 10 {
					server, peer, from, err := echo(pc, listen, fmt.Sprintf("client%d packet%d", i, j))
					if err != nil {
						t.Fatalf("client%d packet %d: %v", i, j, err)
					}
					if from != listen {
						t.Errorf("client%d: answer from %v, want %v", i, from, listen)
					}
					if j == 0 {
						first = server
						servers[server] = true
					} else if server != first {
						t.Errorf("client%d packet %d went to %s, its flow's backend is %s", i, j, server, first)
					}
					p, err := netip.ParseAddrPort(peer)
					if err != nil {
						t.Fatal(err)
					}
					want := client.Addr4
					switch {
					case c.snat:
						want = l.Router.BackendSide4
					case c.v6:
						want = client.Addr6
					}
					if p.Addr().Unmap() != want {
						t.Errorf("client%d: backend saw %v, want %v", i, p, want)
					}
				}
			}
			// Round-robin gives the two flows the two backends.
			if !c.snat && len(servers) != 2 {
				t.Errorf("two clients' flows went to %v, want two backends", servers)
			}
			st := f.stats()
			if d := st["udp_flows"] - flows0; d != 2 {
				t.Errorf("%d relay flows counted, want 2", d)
			}
			if d := st["queued"] - q0; d != 2 {
				t.Errorf("%d packets queued for 2 flows of 10 packets, want 2", d)
			}
		})
	}
}

// TestDNSRefusesTooManyUDPBackends: with the default mark only three UDP
// backends per family can be numbered; falg run names the problem.
func TestDNSRefusesTooManyUDPBackends(t *testing.T) {
	l := lab.Start(t, lab.Options{Clients: 1, Backends: 1})
	// Four mark bits: inject, flow, relay, and one for the UDP field.
	cfg, _ := writeConfig(t, `
mark: 0x00f00000
services:
  - name: echo
    listen: ["10.0.0.1:7"]
    protocol: udp
    default: ["10.0.1.2:7", "10.0.1.2:8"]
`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := l.Router.Command(ctx, falgBin, "run", "-c", cfg).CombinedOutput()
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || !strings.Contains(string(out), "mark") || !strings.Contains(string(out), "at most 1 UDP backends") {
		t.Fatalf("falg run: %v: %s", err, out)
	}
}
