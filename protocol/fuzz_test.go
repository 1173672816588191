package protocol

import (
	"bytes"
	"encoding/base64"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// fuzzStream checks a stream parser on one input: no panic, the decision
// invariants (Consume within the stream, a sane Name), and the same result
// whether the stream arrives in pieces or at once.
func fuzzStream(t *testing.T, proto string, opts Options, data []byte) {
	if len(data) > MaxFirstBytes {
		data = data[:MaxFirstBytes]
	}
	step := 1 + len(data)/128
	if err := checkConsistentStep(proto, mustNew(proto, opts), data, step); err != nil {
		t.Fatalf("%s %x: %v", proto, data, err)
	}
	p := mustNew(proto, opts)()
	d := p.Feed(data)
	if err := checkDecision(proto, data, d); err != nil {
		t.Fatalf("%s %x: %v", proto, data, err)
	}
	for o := OK; o <= BadRequest; o++ {
		p.Reply(o)
	}
}

func readSeed(f *testing.F, name string) []byte {
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

func FuzzTLS(f *testing.F) {
	for _, name := range []string{"clienthello-go.bin", "clienthello-curl.bin", "clienthello-openssl.bin"} {
		b := readSeed(f, name)
		f.Add(b)
		f.Add(records(b[5:], 200))
	}
	f.Add(records(helloMsg(sniExt("a.example"), alpnExt("h2")), 7))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzStream(t, "tls", Options{}, data)
		ch, v, _ := ParseClientHello(data, nil)
		if v == Decided && ch.Length <= 0 {
			t.Fatalf("decided with length %d", ch.Length)
		}
	})
}

func FuzzHTTP(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a.example:80\r\n\r\n"))
	f.Add([]byte("GET http://[::1]:8/ HTTP/1.0\nHost: x\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzStream(t, "http", Options{}, data)
		fuzzStream(t, "http", Options{MaxHeader: 64}, data)
	})
}

func FuzzConnect(f *testing.F) {
	auth := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("u:p")) + "\r\n"
	f.Add([]byte("CONNECT a.example:443 HTTP/1.1\r\n"+auth+"\r\n"), true)
	f.Add([]byte("CONNECT [::1]:443 HTTP/1.1\r\n\r\nxyz"), false)
	f.Fuzz(func(t *testing.T, data []byte, withAuth bool) {
		opts := Options{}
		if withAuth {
			opts.Users = map[string]string{"u": "p"}
		}
		fuzzStream(t, "connect", opts, data)
	})
}

func FuzzSOCKS5(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 3, 'a', '.', 'b', 0, 80}, false)
	f.Add([]byte{5, 1, 2, 1, 1, 'u', 1, 'p', 5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80}, true)
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 80}, false)
	f.Fuzz(func(t *testing.T, data []byte, withAuth bool) {
		opts := Options{}
		if withAuth {
			opts.Users = map[string]string{"u": "p"}
		}
		fuzzStream(t, "socks5", opts, data)
	})
}

func FuzzInstruction(f *testing.F) {
	f.Add([]byte("1710.0.1.2:808048"))
	f.Add([]byte(mkInstr("[fd00::1]:80")))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzStream(t, "instruction", Options{}, data)
	})
}

func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"))
	f.Add([]byte("PROXY TCP6 ::1 ::2 1 2\r\n"))
	f.Add(AppendProxyV2(nil, netip.MustParseAddrPort("[::1]:1"), netip.MustParseAddrPort("[::2]:2")))
	f.Add(AppendProxyV2(nil, netip.MustParseAddrPort("1.2.3.4:1"), netip.MustParseAddrPort("5.6.7.8:2")))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, v, err := ParseProxyHeader(data)
		switch v {
		case Decided:
			if err != nil || n <= 0 || n > len(data) {
				t.Fatalf("decided n=%d of %d, err %v", n, len(data), err)
			}
			if h.Local != (!h.Src.IsValid() || !h.Dst.IsValid()) {
				t.Fatalf("local %t with %v %v", h.Local, h.Src, h.Dst)
			}
			if !h.Local {
				for _, b := range [][]byte{AppendProxyV1(nil, h.Src, h.Dst), AppendProxyV2(nil, h.Src, h.Dst)} {
					h2, n2, v2, _ := ParseProxyHeader(b)
					if v2 != Decided || n2 != len(b) || h2.Src.Addr().Unmap() != h.Src.Addr().Unmap() || h2.Dst.Port() != h.Dst.Port() {
						t.Fatalf("round trip of %+v: %+v", h, h2)
					}
				}
			}
		case Malformed:
			if err == nil {
				t.Fatal("malformed without error")
			}
		case NeedMore:
			if err != nil || n != 0 || len(data) > MaxFirstBytes {
				t.Fatalf("need more with n=%d err %v", n, err)
			}
		}
		if err := checkProxyPrefixes(data[:min(len(data), 300)]); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzDNS(f *testing.F) {
	f.Add(dnsQuery(f, 1, "www.example.com.", dnsmessage.TypeA))
	f.Add(dnsQuery(f, 2, "_x._tcp.A.", dnsmessage.TypeSRV))
	f.Fuzz(func(t *testing.T, data []byte) {
		buf := make([]byte, 0, 255)
		q, err := ParseDNSQuery(data, buf)
		if err == nil {
			if len(q.Name) > maxNameLen || bytes.HasSuffix(q.Name, []byte(".")) {
				t.Fatalf("name %q", q.Name)
			}
			if err := saneName("dns", string(q.Name)); err != nil {
				t.Fatal(err)
			}
		}
		out, err := AppendDNSError(nil, data, dnsmessage.RCodeFormatError)
		if len(data) >= dnsHeaderLen && data[2]&0x80 == 0 {
			var m dnsmessage.Message
			if err != nil || m.Unpack(out) != nil || m.ID != uint16(be16(data)) || !m.Response || m.RCode != dnsmessage.RCodeFormatError {
				t.Fatalf("error response %x: %v", out, err)
			}
		} else if err == nil {
			t.Fatalf("answered %x", data)
		}
		if len(data) < 0xffff {
			fuzzStream(t, "dns", Options{}, tcpFrame(data))
		}
		fuzzStream(t, "dns", Options{}, data)
	})
}
