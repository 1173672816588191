package protocol

import (
	"os"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func benchHellos(b *testing.B) map[string][]byte {
	hello, err := os.ReadFile("testdata/clienthello-go.bin")
	if err != nil {
		b.Fatal(err)
	}
	return map[string][]byte{"one-record": hello, "fragmented": records(hello[5:], 512)}
}

// BenchmarkTLS measures the ClientHello parse on the common path: 0 allocs.
func BenchmarkTLS(b *testing.B) {
	for name, s := range benchHellos(b) {
		b.Run(name, func(b *testing.B) {
			scratch := make([]byte, 0, MaxFirstBytes)
			b.ReportAllocs()
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				if _, v, _ := ParseClientHello(s, scratch); v != Decided {
					b.Fatal(v)
				}
			}
		})
	}
}

// BenchmarkTLSFlow measures a pooled tls Parser per flow: two segments,
// then the decision; the one allocation is the Name string.
func BenchmarkTLSFlow(b *testing.B) {
	s := benchHellos(b)["one-record"]
	p := mustNew("tls", Options{})()
	b.ReportAllocs()
	for b.Loop() {
		p.Reset()
		p.Feed(s[:1200])
		if d := p.Feed(s); d.Verdict != Decided {
			b.Fatal(d.Err)
		}
	}
}

// BenchmarkDNS measures ParseDNSQuery into a reused name buffer: 0 allocs.
func BenchmarkDNS(b *testing.B) {
	q := dnsQuery(b, 7, "www.example.com.", dnsmessage.TypeA)
	buf := make([]byte, 0, 255)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseDNSQuery(q, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDNSError measures a REFUSED answer into a reused buffer: 0 allocs.
func BenchmarkDNSError(b *testing.B) {
	q := dnsQuery(b, 7, "www.example.com.", dnsmessage.TypeA)
	out := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := AppendDNSError(out, q, dnsmessage.RCodeRefused); err != nil {
			b.Fatal(err)
		}
	}
}
